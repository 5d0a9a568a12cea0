"""``kiln verify``: the reproducibility proof. Run the notebook top to bottom in fresh state,
through Kiln's one run path (recorded like any run, with the notebook's own parameter
defaults), and compare the fresh outputs with the saved ones after normalisation.

>>> result = verify_notebook("report.ipynb", ignore=[r"took \\d+ ms"])
>>> result.status          # "reproducible" | "diverged" | "failed"
>>> print(result.report())
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.failure import (
    cell_label,
    failure_summary,
    failure_text,
    run_footer,
    section,
    source_excerpt,
)
from kiln.options import NOT_FOR, OptionError, RunOptionArgs
from kiln.store.records import Run
from kiln.testing.compare import Comparison, compare_notebooks
from kiln.testing.config import verify_settings
from kiln.testing.normalize import Normalizer, compile_ignores
from kiln.testing.session import NotebookSession

if TYPE_CHECKING:
    from typing_extensions import Unpack

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class VerifyResult:
    """A fresh run of a notebook and how its outputs compare with the saved ones."""

    notebook: str
    run: Run
    comparison: Comparison
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """The fresh run did not succeed (a cell raised, timed out, crashed)."""
        return self.run.state != "succeeded"

    @property
    def status(self) -> str:
        if self.failed:
            return "failed"
        return "reproducible" if self.comparison.ok else "diverged"

    @property
    def ok(self) -> bool:
        return self.status == "reproducible"

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def report(self) -> str:
        """What ``kiln verify`` prints: one line when reproducible, else the first diverging
        or failing cell with its source and a diff or traceback."""
        name = self.notebook
        comparison = self.comparison
        divergence = comparison.divergence
        failed_at = (self.run.error or {}).get("cell_index") if self.failed else None
        took = f", {self.run.duration:.2f}s" if self.run.duration is not None else ""
        if self.ok:
            skipped = f", {len(comparison.skipped)} not compared" if comparison.skipped else ""
            return (
                f"{name}: reproducible ({comparison.compared} code cells compared{skipped}; "
                f"run {self.run.id}{took})"
            )
        parts: list[str] = []
        if divergence is not None and (failed_at is None or divergence.cell_index < failed_at):
            label = cell_label(divergence.cell_index, divergence.execution_count)
            headline = f"{name}: DIVERGED at {label}: the fresh outputs differ from the saved ones"
            if self.failed:
                headline += f"\n(then the fresh run failed: {failure_summary(self.run)})"
            parts += [
                headline,
                section(f"cell {divergence.cell_index} source", source_excerpt(divergence.source)),
                section("outputs after normalisation, saved -> fresh", divergence.diff),
            ]
        else:
            summary, _, details = failure_text(self.run).partition("\n")
            parts.append(f"{name}: FAILED: {summary}")
            if details:
                parts.append(details)
            if divergence is not None:
                parts.append(
                    section("outputs after normalisation, saved -> fresh", divergence.diff)
                )
            elif failed_at is not None and failed_at == comparison.last_compared:
                parts.append(
                    "The saved notebook shows the same error: tag the cell raises-exception "
                    "if the error is expected."
                )
        parts.append(run_footer(self.run))
        return "\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "status": self.status,
            "run_id": self.run.id,
            "run_state": self.run.state,
            "output_path": self.run.output_path,
            "log_path": self.run.log_path,
            "failure": self.run.error if self.failed else None,
            "comparison": self.comparison.to_json(),
            "warnings": list(self.warnings),
        }


def build_normalizer(
    notebook: PathLike,
    *,
    ignore: Iterable[str | tuple[str, str]] = (),
    strict_images: bool | None = None,
) -> Normalizer:
    """The normaliser for ``notebook``: ``kiln.yaml``'s ``verify`` settings, then ``ignore``
    (command line) added, and ``strict_images`` when given overriding the file's."""
    settings = verify_settings(notebook)
    patterns = [
        *compile_ignores(settings.ignore, source=settings.source),
        *compile_ignores(ignore, source="--ignore-regex"),
    ]
    strict = settings.strict_images if strict_images is None else strict_images
    return Normalizer(tuple(patterns), strict_images=strict)


def verify_notebook(
    notebook: PathLike,
    *,
    parameters: Mapping[str, Any] | None = None,
    home: PathLike | None = None,
    ignore: Iterable[str | tuple[str, str]] = (),
    strict_images: bool | None = None,
    normalizer: Normalizer | None = None,
    session: NotebookSession | None = None,
    on_warning: Callable[[str], None] | None = None,
    **options: Unpack[RunOptionArgs],
) -> VerifyResult:
    """Re-run ``notebook`` in fresh state and compare its outputs with the saved ones.

    Refusals before anything runs raise as in :func:`kiln.run` (``NotebookError``,
    ``ParameterError``, ``UsageError``); a run that fails is a result (``status ==
    "failed"``), not an exception. ``normalizer`` replaces the one built from ``kiln.yaml``,
    ``ignore`` and ``strict_images``. ``options`` are the run options (:mod:`kiln.options`)
    but ``prepare_only``, ``report_mode`` and ``allow_unknown``.
    """
    refused = set(options) & set(NOT_FOR["verify"])
    if refused:
        name = sorted(refused)[0]
        raise OptionError(name, NOT_FOR["verify"][name])
    path = Path(notebook)
    if normalizer is None:
        normalizer = build_normalizer(path, ignore=ignore, strict_images=strict_images)
    warnings: list[str] = []

    def warn(text: str) -> None:
        warnings.append(text)
        if on_warning is not None:
            on_warning(text)

    own = session if session is not None else NotebookSession()
    try:
        run = own.run(
            path,
            parameters=parameters,
            home=home,
            nbval_markers=True,
            check=False,
            on_warning=warn,
            **options,
        )
    finally:
        if session is None:
            own.close()
    from kiln.store.artifacts import local_copy

    with local_copy(str(run.output_path)) as output:  # in the artefact store, if one is set
        comparison = compare_notebooks(
            path, str(output), normalizer=normalizer, reached=_reached(run)
        )
    for text in comparison.warnings:
        warn(text)
    return VerifyResult(os.fspath(notebook), run, comparison, warnings)


def _reached(run: Run) -> int | None:
    """The last cell index a failed run got to (None when it succeeded)."""
    if run.state.ok:
        return None
    index = (run.error or {}).get("cell_index")
    if isinstance(index, int):
        return index
    # the run failed outside any cell (a whole-run timeout between cells, a crash at start):
    # compare only the cells it finished
    finished = [i for i, d in enumerate(run.cell_durations) if d is not None]
    return finished[-1] if finished else -1
