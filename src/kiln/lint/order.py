"""KL101-KL103 (execution counts) and KL106 (outputs that do not come from the source).

A notebook saved after a clean "restart and run all" has counts 1, 2, 3... down the page and no
unexecuted code cell above an executed one. Anything else means the saved state came from some
other order of execution. Stale outputs are reported only on evidence found in the outputs
themselves (an execution count or a traceback that names other code), never on a guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from kiln.lint.cells import CodeCell, text_of
from kiln.lint.findings import Hit

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# IPython 8+: "Cell In[5], line 3"; IPython 7: "Input In [5]" / "<ipython-input-5-...>"
_CELL_FRAME = re.compile(r"Cell In\s?\[(\d+)\]|Input In \[(\d+)\]|<ipython-input-(\d+)-")
_ARROW_LINE = re.compile(r"^\s*-*>\s*(\d+)\s(.*)$")
_NAME_ERROR = re.compile(r"name '([A-Za-z_]\w*)' is not defined")


def execution_counts(cells: Sequence[CodeCell]) -> Iterator[Hit]:
    """KL101 where a count is not above every count before it; otherwise KL102 for counts
    missing from the notebook (a hole in 1..max), which out-of-order runs already explain."""
    executed = [c for c in cells if c.execution_count is not None]
    highest: CodeCell | None = None
    out_of_order = False
    for cell in executed:
        count = cell.execution_count or 0
        if highest is not None and count <= (highest.execution_count or 0):
            out_of_order = True
            yield Hit(
                "KL101",
                cell.index,
                message=f"executed as In [{count}], after cell {highest.index} above it "
                f"(In [{highest.execution_count}])",
            )
        else:
            highest = cell
    if out_of_order or not executed:
        return
    previous = 0
    for cell in executed:
        count = cell.execution_count or 0
        if previous == 0 and count != 1:
            message = (
                f"the first executed cell is In [{count}], not In [1]: the saved run did not "
                "start from a fresh kernel"
            )
            yield Hit("KL102", cell.index, message=message)
        elif count != previous + 1:
            message = (
                f"In [{count}] follows In [{previous}]: {count - previous - 1} execution(s) in "
                "between are not in the notebook"
            )
            yield Hit("KL102", cell.index, message=message)
        previous = count


def unexecuted_cells(cells: Sequence[CodeCell]) -> Iterator[Hit]:
    last_executed = max((c.index for c in cells if c.execution_count is not None), default=None)
    if last_executed is None:
        return
    for cell in cells:
        if cell.index >= last_executed:
            break
        if (
            cell.execution_count is None
            and cell.source.strip()
            and "skip-execution" not in cell.tags
        ):
            yield Hit(
                "KL103",
                cell.index,
                message=f"never executed, but cell {last_executed} below it was",
            )


def stale_outputs(cell: CodeCell) -> Iterator[Hit]:
    """The first piece of evidence that the cell's outputs come from other code, if any."""
    reason = _stale_reason(cell)
    if reason is not None:
        yield Hit("KL106", cell.index, message=reason)


def _stale_reason(cell: CodeCell) -> str | None:
    count = cell.execution_count
    shown = [o for o in cell.outputs if o.get("output_type") != "stream" or text_of(o.get("text"))]
    if not shown:
        return None
    if count is None:
        return "has saved outputs but no execution count: they do not come from running this code"
    for output in shown:
        result_count = output.get("execution_count")
        if (
            output.get("output_type") == "execute_result"
            and isinstance(result_count, int)
            and result_count != count
        ):
            return f"its result is Out[{result_count}] but the cell ran as In [{count}]"
        if output.get("output_type") == "error":
            reason = _stale_traceback(cell, output.get("traceback"), str(output.get("evalue", "")))
            if reason is not None:
                return reason
    return None


def _stale_traceback(cell: CodeCell, traceback: object, evalue: str) -> str | None:
    name_error = _NAME_ERROR.search(evalue)
    if name_error and not re.search(rf"\b{re.escape(name_error.group(1))}\b", cell.source):
        name = name_error.group(1)
        return f"its traceback is a NameError for '{name}', which this code no longer uses"
    if not isinstance(traceback, list) or not traceback:
        return None
    for entry in traceback:
        text = _ANSI.sub("", entry) if isinstance(entry, str) else ""
        frame = _CELL_FRAME.search(text)
        if frame is None:
            continue
        ran_as = int(next(g for g in frame.groups() if g is not None))
        if cell.execution_count is not None and ran_as != cell.execution_count:
            count = cell.execution_count
            return f"its traceback comes from In [{ran_as}] but the cell ran as In [{count}]"
        for line in text.splitlines():
            arrow = _ARROW_LINE.match(line)
            if arrow is not None:
                code = arrow.group(2).strip()
                if code and " ".join(code.split()) not in " ".join(cell.source.split()):
                    shown = f"line {arrow.group(1)} as `{code[:60]}`"
                    return f"its traceback shows {shown}, which is not in the source"
        return None  # only the cell's own (first) frame is evidence about its source
    return None
