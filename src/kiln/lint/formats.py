"""Report formats: ``text`` for people, ``json`` for scripts, ``sarif`` for code-scanning UIs.

A table, like the rules: format name -> function from a report to the text printed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from types import MappingProxyType

from kiln.lint.findings import LintReport


def format_text(report: LintReport, *, hints: bool = True) -> str:
    """``path:cell:line:column: ID severity message`` lines, a hint under each, and a summary."""
    lines = []
    for finding in report.findings:
        lines.append(f"{finding.location()}: {finding.rule} {finding.severity} {finding.message}")
        if hints:
            lines.append(f"    hint: {finding.hint}")
    lines.append(summary(report))
    return "\n".join(lines) + "\n"


def summary(report: LintReport) -> str:
    files = len(report.files)
    noun = "notebook" if files == 1 else "notebooks"
    if not report.findings:
        return f"No problems found in {files} {noun}."
    counts = report.counts()
    parts = ", ".join(
        f"{n} {severity}{'s' if n != 1 and severity != 'info' else ''}"
        for severity, n in counts.items()
    )
    affected = len({f.path for f in report.findings})
    total = len(report.findings)
    return (
        f"Found {total} problem{'s' if total != 1 else ''} ({parts}) "
        f"in {affected} of {files} {noun}."
    )


def format_json(report: LintReport) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"


def format_sarif(report: LintReport) -> str:
    from kiln.lint.sarif import to_sarif

    # compact: an indented dump takes json's slow pure-Python path, and tools read SARIF
    return json.dumps(to_sarif(report), ensure_ascii=False, separators=(",", ":")) + "\n"


FORMATS: Mapping[str, Callable[[LintReport], str]] = MappingProxyType(
    {"text": format_text, "json": format_json, "sarif": format_sarif}
)
