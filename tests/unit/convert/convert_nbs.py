"""Notebooks for the convert tests: as a run leaves them (outputs, counts, timings, widgets)."""

from __future__ import annotations

import base64
from typing import Any

from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

PNG_A = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"a" * 40).decode()
PNG_B = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"b" * 60).decode()


def executed_notebook(*, n: int = 3, png: str = PNG_A) -> Any:
    """A small report notebook as Jupyter saves it after running every cell."""
    timing = {"iopub.execute_input": "2024-01-01T00:00:00.000Z"}
    cells = [
        new_markdown_cell("# Report é"),
        new_code_cell(
            f"region = 'EU'\nn = {n}",
            execution_count=1,
            metadata={"tags": ["parameters"], "execution": timing, "collapsed": False},
        ),
        new_code_cell(
            "print(n)\nn * 2",
            execution_count=2,
            metadata={"scrolled": True, "papermill": {"duration": 0.1}},
            outputs=[
                new_output("stream", name="stdout", text=f"{n}\n"),
                new_output("execute_result", data={"text/plain": str(n * 2)}, execution_count=2),
            ],
        ),
        new_code_cell(
            "plot()",
            execution_count=3,
            metadata={"tags": ["keep-output"]},
            outputs=[
                new_output(
                    "display_data", data={"image/png": png, "text/plain": "<Figure size 1x1>"}
                )
            ],
        ),
    ]
    return new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python", "version": "3.11.7", "file_extension": ".py"},
            "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}},
            "papermill": {"parameters": {"n": n}},
        },
    )
