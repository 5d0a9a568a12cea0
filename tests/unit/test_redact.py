"""Secret values and formats masked; secrets read from the environment before a run starts,
the request keeping only where they come from."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from kiln.errors import ParameterError
from kiln.redact import Redactor, mask_outputs, secret_values
from kiln.request import RunRequest, prepare

from kilntest import build_notebook


def test_values_are_masked_in_every_spelling() -> None:
    redactor = Redactor(['pa"ss\\word', "ab", 12345678], scan=False)
    assert redactor.mask('x pa"ss\\word y') == "x *** y"
    assert redactor.mask('{"k": "pa\\"ss\\\\word"}') == '{"k": "***"}'  # inside JSON
    assert redactor.mask("k = 'pa\"ss\\\\word'") == "k = '***'"  # inside a Python literal
    assert redactor.mask("ab cab 12345678") == "ab cab ***"  # too short to mask as text


def test_known_formats_are_masked_by_the_scanner() -> None:
    text = "key AKIAZ7QXRTGBNMKLOP42 at postgres://u:s3cretPassw0rd@db/x"
    assert Redactor().mask(text) == "key *** at postgres://u:***@db/x"
    assert Redactor(scan=False).mask(text) == text


def test_outputs_are_masked_but_images_kept() -> None:
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "x",
                outputs=[
                    nbformat.v4.new_output("stream", name="stdout", text="tok s3cr3t-v4lue\n"),
                    nbformat.v4.new_output(
                        "display_data",
                        data={"text/plain": "s3cr3t-v4lue", "image/png": "QUtJQVo3UVhSVEdC"},
                    ),
                    nbformat.v4.new_output(
                        "error", ename="E", evalue="s3cr3t-v4lue", traceback=["s3cr3t-v4lue"]
                    ),
                ],
            )
        ]
    )
    mask_outputs(nb, Redactor(["s3cr3t-v4lue"]))
    outputs = nb.cells[0].outputs
    assert outputs[0].text == "tok ***\n" and outputs[1].data["text/plain"] == "***"
    assert outputs[1].data["image/png"] == "QUtJQVo3UVhSVEdC"
    assert outputs[2].evalue == "***" and outputs[2].traceback == ["***"]


def test_secret_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALES_API_KEY", "s3cr3t-v4lue")
    assert secret_values({"api_key": "env:SALES_API_KEY"}) == {"api_key": "s3cr3t-v4lue"}
    monkeypatch.delenv("SALES_API_KEY")
    with pytest.raises(ParameterError, match="SALES_API_KEY is not set") as caught:
        secret_values({"api_key": "env:SALES_API_KEY"})
    assert caught.value.name == "api_key"
    assert secret_values({"api_key": "env:SALES_API_KEY"}, missing_ok=True) == {}
    with pytest.raises(ParameterError, match="unknown source 'vault:x'"):
        secret_values({"api_key": "vault:x"})


def test_a_request_with_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "nb.ipynb"
    nbformat.write(build_notebook([("api_key = ''\nday = ''", ["parameters"])]), path)
    request = RunRequest(
        notebook=path, parameters={"day": "d", "api_key": "***"}, secrets={"api_key": "env:K"}
    )
    with pytest.raises(ParameterError, match="K is not set"):  # before anything starts
        prepare(request, engine_name="kernel")
    monkeypatch.setenv("K", "s3cr3t-v4lue")
    prepared = prepare(request, engine_name="kernel")
    assert prepared.values == {"day": "d", "api_key": "s3cr3t-v4lue"}  # what the run gets
    assert prepared.public_values == {"day": "d", "api_key": "***"}  # what is recorded
    assert prepared.redactor is not None and "s3cr3t-v4lue" not in prepared.redactor.mask(
        "s3cr3t-v4lue"
    )
    stored = request.to_json()
    assert stored["secrets"] == {"api_key": "env:K"} and "s3cr3t" not in str(stored)
    again = RunRequest.from_json(stored, parameters={"day": "d", "api_key": "***"}, source=None)
    assert again.secrets == {"api_key": "env:K"}
