"""kiln.record: what a value becomes, and how records are read back."""

from __future__ import annotations

import json
import math

import pytest

from kiln import recording
from kiln.recording import RECORD_MIME, encode_value, extract_records, record_from_output


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1234.5, 1234.5),
        ("EU", "EU"),
        (None, None),
        ([1, "a", None], [1, "a", None]),
        ({"a": {"b": [True]}}, {"a": {"b": [True]}}),
        ((1, 2), [1, 2]),
        (math.inf, "inf"),
    ],
    ids=["float", "str", "none", "list", "nested-dict", "tuple", "inf"],
)
def test_json_values(value, expected):
    kind, payload, _ = encode_value(value)
    assert kind == "json" and payload == expected
    json.dumps(payload, allow_nan=False)


def test_unsupported_value_has_a_clear_message():
    with pytest.raises(TypeError, match="cannot record a value of type object"):
        encode_value(object())


def test_dataframe_and_series_become_tables():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}, index=["r1", "r2"])
    kind, payload, shown = encode_value(df)
    assert kind == "dataframe"
    assert payload == {"columns": ["a", "b"], "index": ["r1", "r2"], "data": [[1, "x"], [2, "y"]]}
    assert "<table" in shown["text/html"]
    assert encode_value(df["a"])[0] == "dataframe"


def test_figure_becomes_png():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2])
    kind, payload, _ = encode_value(fig)
    plt.close(fig)
    import base64

    assert kind == "image" and base64.b64decode(payload["data"]).startswith(b"\x89PNG")


def test_outside_a_kernel_records_stay_local_and_go_to_the_records_file(tmp_path, monkeypatch):
    out = tmp_path / "records.jsonl"
    monkeypatch.setenv("KILN_RECORDS_FILE", str(out))
    monkeypatch.setattr(recording, "_local", {})
    recording.record("total", 3)
    assert recording.local_records() == {"total": 3}
    assert json.loads(out.read_text()) == {"name": "total", "kind": "json", "value": 3}


def test_bad_name():
    with pytest.raises(ValueError, match="non-empty string"):
        recording.record("", 1)


def test_extract_in_order_with_cell_index():
    def rec(name, value):
        return {
            "output_type": "display_data",
            "metadata": {},
            "data": {RECORD_MIME: {"name": name, "kind": "json", "value": value}},
        }

    cells = [
        {"cell_type": "markdown", "source": ""},
        {"cell_type": "code", "outputs": [{"output_type": "stream", "text": "x"}, rec("a", 1)]},
        {"cell_type": "code", "outputs": [rec("b", 2), rec("a", 3)]},
    ]
    found = extract_records(cells)
    assert [(r["name"], r["value"], r["cell_index"]) for r in found] == [
        ("a", 1, 1),
        ("b", 2, 2),
        ("a", 3, 2),
    ]
    assert record_from_output({"output_type": "stream", "text": "x"}) is None
