"""Static reports: inert HTML (no scripts, handlers or fetched URLs), hidden cells, the
header, records, masking; and the PDF printed from it (checked as text and as a picture)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from kiln.recording import RECORD_MIME
from kiln.redact import Redactor
from kiln.report.render import render_report
from kiln.report.sanitize import strip_active


def _red_png() -> str:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (120, 60), (220, 20, 20)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PNG = _red_png()


def _cell(source: str, outputs: list[object], tags: list[str] | None = None) -> object:
    return new_code_cell(source, outputs=outputs, metadata={"tags": tags or []})


def _notebook() -> object:
    stream = lambda text: new_output("stream", name="stdout", text=text)  # noqa: E731
    return new_notebook(
        cells=[
            new_markdown_cell("# Sales <script>alert('md')</script>"),
            _cell("day = '2026-11-29'", [], ["parameters"]),
            _cell("print('VISIBLE-OUT')", [stream("VISIBLE-OUT\n")]),
            _cell("print('HIDDEN-CELL')", [stream("HIDDEN-CELL\n")], ["hide"]),
            _cell("SECRET_INPUT_CODE = 1", [stream("SHOWN-OUTPUT\n")], ["hide-input"]),
            _cell("print('KEPT-INPUT')", [stream("HIDDEN-OUTPUT\n")], ["hide-output"]),
            _cell(
                "display(html)",
                [
                    new_output(
                        "display_data",
                        data={
                            "text/html": '<b onclick="steal()">bold</b><script>evil()</script>'
                            '<img src="https://tracker.example/p.gif"><a href="javascript:x()">'
                            "l</a><iframe src='https://x.example'></iframe>",
                            "application/javascript": "evil2()",
                            "text/plain": "<html>",
                        },
                    ),
                    new_output("display_data", data={"image/png": PNG, "text/plain": "<img>"}),
                ],
            ),
            _cell(
                "kiln.record('table', df)",
                [
                    new_output(
                        "display_data",
                        data={
                            RECORD_MIME: {
                                "name": "totals",
                                "kind": "dataframe",
                                "value": {
                                    "columns": ["region", "sum"],
                                    "index": [0],
                                    "data": [["EU", 42]],
                                },
                            },
                            "text/plain": "totals",
                        },
                    )
                ],
            ),
            _cell("print(key)", [stream("token sup3r-s3cret-value here\n")]),
        ]
    )


def test_the_report_is_inert() -> None:
    page = render_report(_notebook(), hide_code=False)
    lowered = page.lower()
    for active in ("<script", "onclick", "javascript:", "<iframe", "tracker.example",
                   "evil()", "evil2()", "https://cdnjs"):  # fmt: skip
        assert active not in lowered, active
    assert f"data:image/png;base64,{PNG[:20]}" in page  # images embedded
    assert "Content-Security-Policy" in page and "default-src &#x27;none&#x27;" not in page
    assert "default-src 'none'" in page
    assert "<b>bold</b>" in page


def test_hidden_cells_and_code() -> None:
    page = render_report(_notebook(), hide_code=False)
    assert "VISIBLE-OUT" in page and "HIDDEN-CELL" not in page
    assert "SHOWN-OUTPUT" in page and "SECRET_INPUT_CODE" not in page
    assert "KEPT-INPUT" in page and "HIDDEN-OUTPUT" not in page
    assert "<td>EU</td>" in page and "<td>42</td>" in page  # the record as a table
    outputs_only = render_report(_notebook(), hide_code=True)
    assert "VISIBLE-OUT" in outputs_only and "print(" not in outputs_only


def test_masking_reaches_every_text() -> None:
    mask = Redactor(["sup3r-s3cret-value"], scan=False)
    page = render_report(_notebook(), mask=mask)
    assert "sup3r-s3cret-value" not in page and "token *** here" in page


def test_the_header_tells_the_run(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from kiln.store.records import Run, RunState

    run = Run(
        id="20261130-060000-abcdef12",
        notebook_path="/p/sales.ipynb",
        notebook_sha256="0" * 64,
        state=RunState.FAILED,
        parameters={"day": "2026-11-29", "api_key": "sup3r-s3cret-value"},
        started_at=datetime(2026, 11, 30, 5, 0, 1, tzinfo=timezone.utc),
        ended_at=datetime(2026, 11, 30, 5, 0, 3, tzinfo=timezone.utc),
        reason="ZeroDivisionError in cell 3",
        tags={"schedule": "daily-sales", "slot": "2026-11-30T06:00:00+01:00"},
    )
    page = render_report(_notebook(), run=run, mask=Redactor(["sup3r-s3cret-value"]))
    header = page[page.index("kiln-report-header") : page.index("</header>")]
    for text in ("sales.ipynb", "failed", "2026-11-30 05:00:01 UTC", "2.00 s",
                 "ZeroDivisionError in cell 3", "daily-sales", "&quot;2026-11-29&quot;",
                 "api_key ="):  # fmt: skip
        assert text in header, text
    assert "sup3r-s3cret-value" not in page


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        ("<p onmouseover='x()'>a</p>", "<p>a</p>"),
        ("<a href='JavaScript:x()'>a</a>", "<a>a</a>"),
        ("<img src='file:///etc/passwd'>", "<img>"),
        (
            "<style>@import url(http://x/y.css); p {color: red; background: url(x.png)}</style>",
            "<style> p {color: red; background: }</style>",
        ),
        ("<meta http-equiv='refresh' content='0;url=http://x'>", ""),
        ("<svg><script>x()</script><circle r='1'/></svg>", '<svg><circle r="1" /></svg>'),
        ("<p>&lt;script&gt; &amp; &#60;</p>", "<p>&lt;script&gt; &amp; &#60;</p>"),
        ("<!--[if IE]><script>x()</script><![endif]--><p>k</p>", "<p>k</p>"),
    ],
)
def test_strip_active(dirty: str, clean: str) -> None:
    assert strip_active(dirty) == clean


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="needs poppler-utils")
def test_the_pdf_shows_the_report(tmp_path: Path) -> None:
    from kiln.report.pdf import html_to_pdf

    pdf = html_to_pdf(render_report(_notebook(), hide_code=True))
    assert pdf.startswith(b"%PDF")
    (tmp_path / "r.pdf").write_bytes(pdf)
    text = subprocess.run(["pdftotext", str(tmp_path / "r.pdf"), "-"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    assert "VISIBLE-OUT" in text and "HIDDEN-CELL" not in text and "EU" in text
    subprocess.run(["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1",
                    str(tmp_path / "r.pdf"), str(tmp_path / "page")], check=True)  # fmt: skip
    (picture,) = tmp_path.glob("page*.png")
    from PIL import Image

    with Image.open(picture) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16) or []
    assert len(colours) > 10  # text and the header's bar were drawn, not a blank page
    assert any(r > 200 and g < 60 and b < 60 for _n, (r, g, b) in colours)  # the red PNG


def test_an_unreadable_output_is_not_rendered_as_is() -> None:
    nb = nbformat.from_dict(_notebook())
    nb.cells[6].outputs[0]["data"]["text/html"] = "<div><object data='x.swf'></object>ok</div>"
    page = render_report(nb)
    assert "<object" not in page and "ok" in page
