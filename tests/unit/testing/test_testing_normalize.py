"""The output normaliser: what is volatile is replaced, what is data is kept."""

from __future__ import annotations

import base64

import pytest

from kiln.errors import UsageError
from kiln.testing import Normalizer, normalize_outputs
from kiln.testing.normalize import render_outputs

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"pixels").decode()
OTHER_PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"other pixels").decode()


def stdout(text: str) -> dict[str, str]:
    return {"output_type": "stream", "name": "stdout", "text": text}


def result(data: dict[str, object]) -> dict[str, object]:
    return {"output_type": "execute_result", "execution_count": 3, "data": data, "metadata": {}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<object object at 0x7f3a2b1c9e40>", "<object object at <ADDR>>"),
        ("140234567891232", "<ADDR>"),  # id(): 16-byte aligned, in a 64-bit address range
        ("2026-11-22 03:01:02.123456", "<TIMESTAMP>"),
        ("2026-11-22T03:01:02+00:00 done", "<TIMESTAMP> done"),
        ("datetime.datetime(2026, 11, 22, 3, 1, 2, 123456)", "<TIMESTAMP>"),
        (
            "datetime.datetime(2026, 11, 22, 3, 1, tzinfo=datetime.timezone(datetime.timedelta("
            "seconds=7200)))",
            "<TIMESTAMP>",
        ),
        ("datetime.date(2026, 11, 22) and 2026-11-22", "<DATE> and <DATE>"),
        ("at 03:01:02", "at <TIME>"),
        ("UUID('9f1c2e4a-7b3d-4c5e-8f60-1a2b3c4d5e6f')", "UUID('<UUID>')"),
        ("9f1c2e4a7b3d4c5e8f601a2b3c4d5e6f", "<UUID>"),  # uuid4().hex
        ("saved to /tmp/tmpab12cd/out.csv", "saved to <TMP>"),
        ("'/var/folders/x1/T/tmpq/f'", "'<TMP>'"),
        (
            "CPU times: user 3 ms, sys: 0 ns, total: 3 ms\nWall time: 2.9 ms\n",
            "<TIMING>\n<TIMING>\n",
        ),
        (
            "1.23 µs ± 4.5 ns per loop (mean ± std. dev. of 7 runs, 1,000,000 loops each)",
            "<TIMING>",
        ),
        ("\x1b[0;31mred\x1b[0m", "red"),
    ],
    ids=[
        "hex-address",
        "id-value",
        "timestamp",
        "iso-timestamp-tz",
        "datetime-repr",
        "datetime-repr-tz",
        "dates",
        "time-of-day",
        "uuid",
        "uuid-hex",
        "tmp-path",
        "macos-tmp-path",
        "percent-time",
        "percent-timeit",
        "ansi",
    ],
)
def test_volatile_parts_are_replaced(text: str, expected: str) -> None:
    assert Normalizer().text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "population 8045311447",  # a big number, not 16-byte aligned
        "140234567891233",  # odd: never an address
        "d41d8cd98f00b204e9800998ecf8427e",  # an md5 digest, not a uuid4
        "/home/me/tmp/data.csv",  # a folder called tmp is not a temporary path
        "version 1.2.3",
    ],
)
def test_data_is_kept(text: str) -> None:
    assert Normalizer().text(text) == text


def test_streams_are_joined_and_stderr_follows_stdout() -> None:
    outputs = [
        stdout("a"),
        {"output_type": "stream", "name": "stderr", "text": "warn\n"},
        stdout("b\n"),
        result({"text/plain": "1"}),
        stdout(""),
    ]
    assert normalize_outputs(outputs) == [
        {"output_type": "stream", "name": "stdout", "text": "ab\n"},
        {"output_type": "stream", "name": "stderr", "text": "warn\n"},
        {"output_type": "execute_result", "data": {"text/plain": "1"}},
    ]


def test_carriage_returns_rewrite_the_line_like_a_terminal() -> None:
    bar = [stdout("10%\r50%\r100%\ndone\r\n")]
    assert normalize_outputs(bar) == normalize_outputs([stdout("100%\ndone\n")])


def test_images_compare_by_type_unless_strict() -> None:
    a = [result({"image/png": PNG, "text/plain": "<Figure>"})]
    b = [result({"image/png": OTHER_PNG, "text/plain": "<Figure>"})]
    assert normalize_outputs(a) == normalize_outputs(b)
    assert normalize_outputs(a, strict_images=True) != normalize_outputs(b, strict_images=True)
    # an image that is gone, or is no image at all, still counts
    assert normalize_outputs(a) != normalize_outputs([result({"text/plain": "<Figure>"})])
    junk = base64.b64encode(b"not a png").decode()
    assert normalize_outputs([result({"image/png": junk})])[0]["data"]["image/png"] == (
        "<image/png: not an image>"
    )


def test_inline_data_uri_images_and_widget_ids() -> None:
    html = f'<img src="data:image/png;base64,{PNG}"/>'
    other = f'<img src="data:image/png;base64,{OTHER_PNG}"/>'
    assert normalize_outputs([result({"text/html": html})]) == normalize_outputs(
        [result({"text/html": other})]
    )
    widget = "application/vnd.jupyter.widget-view+json"
    one = [result({widget: {"model_id": "abc", "version_major": 2}})]
    two = [result({widget: {"model_id": "def", "version_major": 2}})]
    assert normalize_outputs(one) == normalize_outputs(two)


def test_errors_compare_name_and_message_not_traceback() -> None:
    def error(tb: str) -> dict[str, object]:
        return {"output_type": "error", "ename": "KeyError", "evalue": "'x'", "traceback": [tb]}

    assert normalize_outputs([error("Cell In[3]")]) == normalize_outputs([error("Cell In[9]")])
    assert render_outputs(normalize_outputs([error("")])) == ["[error]", "KeyError: 'x'"]


def test_execution_counts_and_metadata_are_not_compared() -> None:
    a = {**result({"text/plain": "1"}), "execution_count": 1, "metadata": {"x": 1}}
    b = {**result({"text/plain": "1"}), "execution_count": 7}
    assert normalize_outputs([a]) == normalize_outputs([b])


def test_user_regexes_apply_first_with_optional_replacement() -> None:
    outputs = [stdout("run 42 took 17 ms\n")]
    assert normalize_outputs(outputs, ignore=[r"took \d+ ms"])[0]["text"] == ("run 42 <IGNORED>\n")
    replaced = normalize_outputs(outputs, ignore=[(r"run \d+", "run N")])
    assert replaced[0]["text"] == "run N took 17 ms\n"


def test_bad_user_regex_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"--ignore-regex: invalid regex '\('"):
        Normalizer.build(["("], source="--ignore-regex")
