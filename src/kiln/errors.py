"""Every exception Kiln raises, in one tree.

::

    KilnError                      exit 1 unless a branch says otherwise
    ├── UsageError                 exit 2: a bad command line or option value
    ├── NotebookError              exit 2: the input notebook cannot be used
    │   ├── NotebookNotFound
    │   └── NotebookReadError      empty, not JSON (line, column), invalid, unknown nbformat
    ├── ParameterError             exit 2: refused before any kernel starts
    │   ├── UnknownParameter
    │   ├── ParameterTypeError
    │   ├── MissingParameter
    │   ├── InvalidParameterName
    │   └── NoTranslator           no parameter translator for the kernel's language
    ├── EngineError                exit 2: the engine cannot start (no such kernel, ...)
    │   └── NoSuchKernel
    ├── LintGateFailed             exit 1: ``kiln run --lint`` found lint errors (nothing ran)
    ├── AccountError               exit 2: users, roles and tokens of the server
    │   ├── AccountNotFound        no such user or token
    │   └── AccountExists          the user name is taken
    ├── ServerError                exit 1: a remote Kiln server failed or could not be reached
    │   └── ServerRefused          exit 2: it refused the request (4xx: bad input, no access)
    ├── StoreError                 the runs database or artefact folders
    │   ├── RunNotFound            exit 2
    │   ├── HomeNotFound           exit 2: a read-only command found no Kiln history
    │   ├── HomeNotWritable        exit 2: no run can be recorded there (refused before it runs)
    │   └── StoreOutdated          exit 2: the database's schema is behind (kiln store migrate)
    ├── RunFailed                  exit 1: the run started and ended in a non-success state
    │   ├── CellExecutionError     a cell raised; carries the cell, ename, evalue, traceback
    │   ├── RunTimedOut            a cell timeout or the whole-run timeout expired
    │   ├── KernelDied             the kernel process died (os._exit, segfault, OOM kill)
    │   └── RunCancelled           SIGINT/SIGTERM or an API cancel
    └── BuildFailed                exit 1: a pipeline build ended with failed tasks (``check()``)

User-facing errors know their exit code and how to show themselves (``show()``); the CLI is the
one place that turns them into output and an exit status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from kiln.store.records import Run

__all__ = [
    "AccountError",
    "AccountExists",
    "AccountNotFound",
    "BuildFailed",
    "CellExecutionError",
    "CellFailure",
    "EngineError",
    "HomeNotFound",
    "HomeNotWritable",
    "InvalidParameterName",
    "KernelDied",
    "KilnError",
    "LintGateFailed",
    "MissingParameter",
    "NoSuchKernel",
    "NoTranslator",
    "NotebookError",
    "NotebookNotFound",
    "NotebookReadError",
    "ParameterError",
    "ParameterTypeError",
    "RunCancelled",
    "RunFailed",
    "RunNotFound",
    "RunTimedOut",
    "ServerError",
    "ServerRefused",
    "StoreError",
    "StoreOutdated",
    "UnknownParameter",
    "UsageError",
]


class KilnError(Exception):
    """Root of every error Kiln raises on purpose."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def show(self) -> str:
        """The paragraph a user sees (no traceback)."""
        return f"Error: {self.message}"


class UsageError(KilnError):
    exit_code = 2


class NotebookError(KilnError):
    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class NotebookNotFound(NotebookError):
    pass


class NotebookReadError(NotebookError):
    pass


class ParameterError(KilnError):
    """A parameter was refused; carries the name and what was expected."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        expected: str | None = None,
        notebook: str | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.expected = expected
        self.notebook = notebook


class UnknownParameter(ParameterError):
    pass


class ParameterTypeError(ParameterError):
    pass


class MissingParameter(ParameterError):
    pass


class InvalidParameterName(ParameterError):
    pass


class NoTranslator(ParameterError):
    pass


class EngineError(KilnError):
    exit_code = 2


class NoSuchKernel(EngineError):
    pass


class LintGateFailed(KilnError):
    """The notebook has lint errors and the run was asked to refuse them."""

    exit_code = 1

    def __init__(self, message: str, *, findings: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.findings = list(findings)


class AccountError(KilnError):
    """A user, role or token cannot be used as asked (``kiln users``, ``kiln tokens``, the
    server's account routes)."""

    exit_code = 2


class AccountNotFound(AccountError):
    pass


class AccountExists(AccountError):
    pass


class ServerError(KilnError):
    """A Kiln server (``kiln --server URL``) answered with an error, or could not be reached;
    ``status`` is the HTTP status (None when no answer came)."""

    def __init__(
        self, message: str, *, status: int | None = None, detail: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        #: the server's own words (its answer's ``detail``)
        self.detail = detail


class ServerRefused(ServerError):
    exit_code = 2


class StoreError(KilnError):
    pass


class RunNotFound(StoreError):
    exit_code = 2


class HomeNotWritable(StoreError):
    """The home cannot take a run (read-only, missing, full): refused before anything runs."""

    exit_code = 2

    def __init__(self, message: str, *, home: Any = None) -> None:
        super().__init__(message)
        self.home = home


class HomeNotFound(StoreError):
    """A command that only reads the history found none (and created nothing)."""

    exit_code = 2

    def __init__(self, message: str, *, home: Any = None) -> None:
        super().__init__(message)
        self.home = home


class StoreOutdated(StoreError):
    """A shared database's schema is older than this Kiln: it is upgraded only on purpose
    (``kiln store migrate``), never as a side effect of opening it."""

    exit_code = 2


class RunFailed(KilnError):
    """The run was recorded and ended in a non-success terminal state."""

    exit_code = 1

    def __init__(self, message: str, *, run: Run | None = None) -> None:
        super().__init__(message)
        self.run = run

    def show(self) -> str:
        text = f"Error: {self.message}"
        if self.run is not None:
            where = self.run.output_path or "-"
            text += f"\nRun {self.run.id}: output notebook {where}, log {self.run.log_path}"
        return text


@dataclass(frozen=True)
class CellFailure:
    """Where and how a cell failed (stored with the run as its error summary)."""

    cell_index: int
    execution_count: int | None
    ename: str
    evalue: str
    traceback: Sequence[str]
    source: str

    def to_json(self) -> dict[str, Any]:
        return {
            "cell_index": self.cell_index,
            "execution_count": self.execution_count,
            "ename": self.ename,
            "evalue": self.evalue,
            "traceback": list(self.traceback),
            "source": self.source,
        }


class CellExecutionError(RunFailed):
    """A cell raised an exception; the message shows the failing cell."""

    def __init__(self, failure: CellFailure, *, notebook: str, run: Run | None = None) -> None:
        self.failure = failure
        self.notebook = notebook
        self.cell_index = failure.cell_index
        self.ename = failure.ename
        self.evalue = failure.evalue
        self.traceback = list(failure.traceback)
        source = failure.source.strip()
        if len(source) > 600:
            source = source[:600] + "\n..."
        label = f"cell {failure.cell_index}"
        if failure.execution_count is not None:
            label += f" (In [{failure.execution_count}])"
        message = (
            f"{notebook}: {label} raised {failure.ename}: {failure.evalue}\n"
            f"---- cell source ----\n{source}\n---------------------"
        )
        super().__init__(message, run=run)


class RunTimedOut(RunFailed):
    pass


class KernelDied(RunFailed):
    pass


class RunCancelled(RunFailed):
    exit_code = 130


class BuildFailed(KilnError):
    """A pipeline build did not succeed: a task failed, or the build was cancelled."""

    exit_code = 1
