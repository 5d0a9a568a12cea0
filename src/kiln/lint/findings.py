"""What linting produces: :class:`Finding` (one problem at one place) and :class:`LintReport`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kiln.lint.rules import RULES_BY_ID, SEVERITIES, Severity


@dataclass(frozen=True)
class Finding:
    """One problem found in one notebook.

    ``cell`` is the 0-based cell index (as in every Kiln message), ``line`` and ``column`` are
    1-based positions in that cell's source; they are ``None`` where they do not apply (a
    notebook-wide finding, or a finding in an output). The message never holds a secret in the
    clear: secrets and personal data appear masked (``AKIA************MPLE``).
    """

    path: str
    cell: int | None
    line: int | None
    column: int | None
    rule: str
    severity: Severity
    message: str
    hint: str

    @property
    def rule_name(self) -> str:
        rule = RULES_BY_ID.get(self.rule)
        return rule.name if rule is not None else self.rule

    def sort_key(self) -> tuple[str, int, int, int, str]:
        return (self.path, _pos(self.cell), _pos(self.line), _pos(self.column), self.rule)

    def location(self) -> str:
        """``path:cell:line:column`` as far as known (``nb.ipynb:3:2:5``, ``nb.ipynb``)."""
        parts = [self.path]
        for value in (self.cell, self.line, self.column):
            if value is None:
                break
            parts.append(str(value))
        return ":".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "cell": self.cell,
            "line": self.line,
            "column": self.column,
            "rule": self.rule,
            "name": self.rule_name,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class Hit:
    """What a check reports; the engine adds the path, severity, hint and filters."""

    rule: str
    cell: int | None
    line: int | None = None
    column: int | None = None
    message: str = ""
    hint: str | None = None


def _pos(value: int | None) -> int:
    return -1 if value is None else value


@dataclass(frozen=True)
class LintReport:
    """The findings for a set of notebooks, in path, cell and line order."""

    findings: Sequence[Finding]
    files: Sequence[str] = field(default_factory=tuple)

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    @property
    def exit_code(self) -> int:
        """1 when any finding has error severity, else 0 (what ``kiln lint`` exits with)."""
        return 1 if self.has_errors else 0

    def counts(self) -> dict[str, int]:
        """Findings per severity, every severity present (``{"error": 1, "warning": 0, ...}``)."""
        counted = Counter(f.severity for f in self.findings)
        return {severity: counted.get(severity, 0) for severity in SEVERITIES}

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "files": len(self.files),
            "summary": self.counts(),
            "findings": [f.to_json() for f in self.findings],
        }
