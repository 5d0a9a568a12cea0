"""Run the checks over notebooks: :func:`lint_notebook`, :func:`lint_paths`, the run gate.

:data:`CHECKS` is the table of which code produces which rules. A check runs only when one of
its rules is enabled; the engine then drops findings of disabled rules and of cells that opt
out, applies severity overrides and sorts. A cell opts out with the tag ``kiln-noqa`` (every
rule) or ``kiln-noqa:KL301`` (a rule id or prefix). nbformat forbids commas in tags, so several
codes take several tags, or spaces: ``kiln-noqa:KL301 KL2``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import NotebookError, NotebookNotFound
from kiln.lint import order, production, randomness
from kiln.lint.cells import NotebookView, cell_tags, view_notebook
from kiln.lint.config import LintConfig, load_lint_config
from kiln.lint.findings import Finding, Hit, LintReport
from kiln.lint.names import undefined_names
from kiln.lint.rules import RULES_BY_ID
from kiln.lint.security import SECURITY_RULES, SecurityOptions, security_hits

NOQA_TAG = "kiln-noqa"
SKIP_TAG = "skip-execution"
#: folders never searched for notebooks (nor hidden ones, nor virtual environments)
SKIPPED_DIRS = frozenset(
    {".ipynb_checkpoints", ".kiln", ".git", "__pycache__", "node_modules", "site-packages"}
)

CheckRun = Callable[[NotebookView, LintConfig, frozenset[str]], Iterable[Hit]]


@dataclass(frozen=True)
class Check:
    rules: tuple[str, ...]
    run: CheckRun
    python_only: bool = False


def _names(view: NotebookView, config: LintConfig, enabled: frozenset[str]) -> Iterator[Hit]:
    # Kiln never runs a cell tagged skip-execution: it neither needs nor defines names.
    cells = [c for c in view.code if c.is_python and SKIP_TAG not in c.tags]
    for problem in undefined_names(cells):
        yield Hit(problem.rule, problem.cell, problem.line, problem.column, problem.message)


def _syntax(view: NotebookView, config: LintConfig, enabled: frozenset[str]) -> Iterator[Hit]:
    for cell in view.code:
        error = cell.syntax_error
        if error is not None and cell.tree is None:
            yield Hit("KL108", cell.index, error.lineno, error.offset, f"syntax error: {error.msg}")


def _security(view: NotebookView, config: LintConfig, enabled: frozenset[str]) -> Iterable[Hit]:
    options = SecurityOptions(
        enabled=enabled,
        min_length=int(config.option("KL304", "min_length")),
        allow_domains=tuple(config.option("KL305", "allow_domains")),
    )
    return security_hits(view, options)


def _parameters(view: NotebookView, config: LintConfig, enabled: frozenset[str]) -> Iterable[Hit]:
    reason = config.parameters_required_by(view.path)
    return production.missing_parameters(view, required_by=reason) if reason else ()


CHECKS: tuple[Check, ...] = (
    Check(("KL101", "KL102"), lambda v, c, e: order.execution_counts(v.code)),
    Check(("KL103",), lambda v, c, e: order.unexecuted_cells(v.code)),
    Check(("KL104", "KL105"), _names, python_only=True),
    Check(("KL106",), lambda v, c, e: (h for cell in v.code for h in order.stale_outputs(cell))),
    Check(("KL107",), lambda v, c, e: randomness.unseeded_randomness(v.code), python_only=True),
    Check(("KL108",), _syntax, python_only=True),
    Check(
        ("KL201",),
        lambda v, c, e: production.large_outputs(
            v.code, max_output_kb=int(c.option("KL201", "max_output_kb"))
        ),
    ),
    Check(("KL202",), lambda v, c, e: production.local_paths(v.code), python_only=True),
    Check(("KL203",), lambda v, c, e: production.interactive_input(v.code), python_only=True),
    Check(("KL204",), lambda v, c, e: production.run_local_files(v.code), python_only=True),
    Check(("KL205",), lambda v, c, e: production.pip_installs(v.code)),
    Check(("KL206",), _parameters),
    Check(
        ("KL207",),
        lambda v, c, e: production.embedded_data(
            v, max_source_kb=int(c.option("KL207", "max_source_kb"))
        ),
    ),
    Check(SECURITY_RULES, _security),
)


def lint_notebook(
    nb: Mapping[str, Any], path: str | os.PathLike[str], *, config: LintConfig | None = None
) -> list[Finding]:
    """Lint one notebook (a NotebookNode or its JSON as a dict); ``path`` names it in findings
    and decides whether KL206 applies. Without ``config``, ``kiln.yaml`` is looked up from the
    notebook's folder."""
    if config is None:
        config = load_lint_config(Path(path).parent)
    enabled = config.enabled_rules()
    view = view_notebook(nb, os.fspath(path))
    hits: list[Hit] = []
    for check in CHECKS:
        if enabled.intersection(check.rules) and (view.python or not check.python_only):
            hits.extend(check.run(view, config, enabled))
    findings = [
        _finding(hit, view.path, config)
        for hit in hits
        if hit.rule in enabled and not _opted_out(view, hit)
    ]
    findings.sort(key=Finding.sort_key)
    return findings


def errors_for_run_gate(
    nb: Mapping[str, Any], path: str | os.PathLike[str], config: LintConfig | None = None
) -> list[Finding]:
    """The findings that must stop ``kiln run --lint``: error severity after config (a rule
    ignored or downgraded in ``kiln.yaml`` does not block). Empty means the run may go ahead."""
    return [f for f in lint_notebook(nb, path, config=config) if f.severity == "error"]


def lint_paths(
    paths: Sequence[str | os.PathLike[str]],
    *,
    config: LintConfig | None = None,
    jobs: int = 1,
) -> LintReport:
    """Lint notebook files and folders (searched recursively for ``*.ipynb``).

    A path that does not exist raises :class:`~kiln.errors.NotebookNotFound`; a file that is
    not a readable notebook becomes a KL001 finding, so one bad file does not hide the rest.
    ``jobs`` > 1 (0: one per CPU) lints in forked worker processes when there are enough files;
    only where fork is safe (Linux, no other thread running), else in this process.
    """
    if config is None:
        config = load_lint_config()
    files = discover_notebooks(paths, config=config)
    workers = (os.cpu_count() or 1) if jobs == 0 else jobs
    if workers > 1 and len(files) >= PARALLEL_MIN_FILES and _can_fork():
        findings = _lint_in_workers(files, config, workers)
    else:
        findings = [finding for file in files for finding in _lint_file(file, config)]
    return LintReport(findings=findings, files=tuple(str(f) for f in files))


#: below this many files, starting worker processes costs more than it saves
PARALLEL_MIN_FILES = 64
_worker_config: LintConfig | None = None


def _can_fork() -> bool:
    import threading

    return sys.platform.startswith("linux") and threading.active_count() == 1


def _lint_in_workers(files: Sequence[Path], config: LintConfig, workers: int) -> list[Finding]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from kiln.lint.secret_scan import warm_up

    warm_up()  # import detect-secrets once, here: the forked workers inherit it
    context = multiprocessing.get_context("fork")  # the config reaches workers unpickled
    chunk = max(1, min(32, len(files) // (workers * 4)))
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_set_worker_config, initargs=(config,)
    ) as pool:
        results = pool.map(_lint_file_in_worker, files, chunksize=chunk)
        return [finding for found in results for finding in found]


def _set_worker_config(config: LintConfig) -> None:
    global _worker_config
    _worker_config = config


def _lint_file_in_worker(file: Path) -> list[Finding]:
    assert _worker_config is not None
    return _lint_file(file, _worker_config)


def discover_notebooks(
    paths: Sequence[str | os.PathLike[str]], *, config: LintConfig | None = None
) -> list[Path]:
    """The notebooks under ``paths`` (files and folders, recursively), sorted, skipping
    checkpoints, Kiln homes and the ``exclude`` globs of the lint settings."""
    found: list[Path] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            candidates = _walk(path)
        elif path.exists():
            candidates = [path]
        else:
            raise NotebookNotFound(f"no such file or folder: {path}", path=str(path))
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen and not (config is not None and config.excluded(candidate)):
                seen.add(key)
                found.append(candidate)
    return found


def _walk(folder: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        if "pyvenv.cfg" in files:  # a virtual environment: installed packages' notebooks
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        found.extend(Path(root, f) for f in sorted(files) if f.endswith(".ipynb"))
    return found


def _lint_file(file: Path, config: LintConfig) -> list[Finding]:
    from kiln.notebook.io import load_json, read_bytes, to_v4

    name = str(file)
    try:
        raw: Mapping[str, Any] = load_json(read_bytes(file), path=name)
        if raw.get("nbformat") == 3:
            raw = to_v4(dict(raw), path=name)
    except NotebookError as exc:
        if "KL001" not in config.enabled_rules():
            return []
        hit = Hit("KL001", None, message=exc.message)
        return [_finding(hit, name, config)]
    return lint_notebook(raw, name, config=config)


def _finding(hit: Hit, path: str, config: LintConfig) -> Finding:
    rule = RULES_BY_ID[hit.rule]
    return Finding(
        path=path,
        cell=hit.cell,
        line=hit.line,
        column=hit.column,
        rule=hit.rule,
        severity=config.severity_of(hit.rule),
        message=hit.message or rule.summary,
        hint=hit.hint or rule.hint,
    )


def _opted_out(view: NotebookView, hit: Hit) -> bool:
    if hit.cell is None or not 0 <= hit.cell < len(view.cells):
        return False
    for tag in cell_tags(view.cells[hit.cell]):
        tag = tag.strip()
        if tag == NOQA_TAG:
            return True
        if tag.startswith(NOQA_TAG + ":"):
            codes = tag[len(NOQA_TAG) + 1 :].replace(",", " ").upper().split()
            if any(code and hit.rule.startswith(code) for code in codes):
                return True
    return False
