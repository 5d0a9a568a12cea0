"""SARIF 2.1.0 output, for code-scanning UIs (GitHub code scanning, VS Code SARIF viewer).

A result points at the line of the ``.ipynb`` file that holds the finding: for a finding in a
cell's source, the JSON line of that source line; otherwise the line where the cell starts.
The JSON positions are found only here, by walking the file's text once more with the standard
library decoder (only for files with findings, only when SARIF is asked for).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kiln.lint.findings import Finding, LintReport
from kiln.lint.rules import RULES, Rule

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
_LEVELS = {"error": "error", "warning": "warning", "info": "note"}
_SECURITY_SEVERITY = {"error": "8.0", "warning": "5.0", "info": "2.0"}
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def to_sarif(report: LintReport, *, base: Path | None = None) -> dict[str, Any]:
    """The report as a SARIF log (a dict ready for ``json.dumps``); paths are made relative to
    ``base`` (default: the current folder) and resolved through ``%SRCROOT%``."""
    from kiln import __version__

    root = (base or Path.cwd()).resolve()
    index = {rule.id: number for number, rule in enumerate(RULES)}
    files: dict[str, tuple[_Positions, dict[str, Any]]] = {}
    results = []
    for finding in report.findings:
        if finding.path not in files:
            path = Path(finding.path)
            files[finding.path] = (_Positions.of(path), _artifact(path, root))
        positions, artifact = files[finding.path]
        results.append(_result(finding, index, positions, artifact))
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "kiln",
                        "fullName": "Kiln notebook linter",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "rules": [_rule(rule) for rule in RULES],
                    }
                },
                "originalUriBaseIds": {"%SRCROOT%": {"uri": root.as_uri() + "/"}},
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }


def _rule(rule: Rule) -> dict[str, Any]:
    properties: dict[str, Any] = {"tags": [rule.category]}
    if rule.category == "security":
        # GitHub code scanning ranks security alerts by this score
        properties["security-severity"] = _SECURITY_SEVERITY[rule.severity]
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": f"{rule.summary}."},
        "help": {"text": rule.hint},
        "defaultConfiguration": {"level": _LEVELS[rule.severity]},
        "properties": properties,
    }


def _result(
    finding: Finding, index: dict[str, int], positions: _Positions, artifact: dict[str, Any]
) -> dict[str, Any]:
    location: dict[str, Any] = {
        "physicalLocation": {
            "artifactLocation": dict(artifact),
            "region": {"startLine": positions.line_of(finding)},
        }
    }
    if finding.cell is not None:
        location["logicalLocations"] = [{"name": f"cell {finding.cell}", "kind": "module"}]
    identity = f"{finding.path}|{finding.rule}|{finding.cell}|{finding.message}"
    result: dict[str, Any] = {
        "ruleId": finding.rule,
        "level": _LEVELS[finding.severity],
        "message": {"text": f"{finding.message}. Fix: {finding.hint}"},
        "locations": [location],
        "partialFingerprints": {
            "kilnFinding/v1": hashlib.sha256(identity.encode()).hexdigest()[:32]
        },
        "properties": {"cell": finding.cell, "cellLine": finding.line},
    }
    if finding.rule in index:
        result["ruleIndex"] = index[finding.rule]
    return result


def _artifact(path: Path, root: Path) -> dict[str, Any]:
    absolute = path.resolve()
    try:
        relative = absolute.relative_to(root)
    except ValueError:
        return {"uri": absolute.as_uri()}
    return {"uri": quote(relative.as_posix()), "uriBaseId": "%SRCROOT%"}


@dataclass
class _CellPosition:
    line: int
    source_lines: list[int]


class _Positions:
    """1-based JSON line numbers of each cell and of each of its source lines."""

    def __init__(self, cells: Sequence[_CellPosition]) -> None:
        self.cells = cells

    @classmethod
    def of(cls, path: Path) -> _Positions:
        try:
            text = path.read_text(encoding="utf-8-sig")
            return cls(list(_cell_positions(text)))
        except (OSError, UnicodeDecodeError, ValueError, IndexError):
            return cls([])

    def line_of(self, finding: Finding) -> int:
        if finding.cell is None or finding.cell >= len(self.cells):
            return 1
        cell = self.cells[finding.cell]
        if finding.line is not None and cell.source_lines:
            return cell.source_lines[min(finding.line, len(cell.source_lines)) - 1]
        return cell.line


def _cell_positions(text: str) -> Iterator[_CellPosition]:
    """Decodes each cell once (the file was parsed already; this pass only finds offsets)."""
    line = _LineCounter(text)

    offset = _skip(text, 0)
    if text[offset] != "{":
        raise ValueError("not an object")
    offset = _skip(text, offset + 1)
    while text[offset] != "}":
        key, offset = _DECODER.raw_decode(text, offset)
        offset = _skip(text, _skip(text, offset) + 1)  # past the colon
        if key == "cells":
            for start, end, cell in _elements(text, offset):
                source = _source_offset(text, start, end, cell)
                if source is None:
                    yield _CellPosition(line(start), [])
                elif text[source] == "[":
                    yield _CellPosition(
                        line(start), [line(s) for s, _, _ in _elements(text, source)]
                    )
                else:
                    yield _CellPosition(line(start), [line(source)])
            return
        _, offset = _DECODER.raw_decode(text, offset)
        offset = _skip(text, offset)
        if text[offset] == ",":
            offset = _skip(text, offset + 1)


class _LineCounter:
    """1-based line of an offset; offsets come mostly in increasing order, so count onwards
    from the last one instead of indexing every newline of a file that may be megabytes."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.offset = 0
        self.line = 1

    def __call__(self, offset: int) -> int:
        if offset < self.offset:
            self.offset, self.line = 0, 1
        self.line += self.text.count("\n", self.offset, offset)
        self.offset = offset
        return self.line


_SOURCE_KEY = re.compile(r'"source"\s*:\s*')


def _source_offset(text: str, start: int, end: int, cell: Any) -> int | None:
    """Where the cell's own ``source`` value starts: the ``"source":`` key inside the cell's
    span whose value decodes to the cell's source (a nested key of that name cannot)."""
    if not isinstance(cell, dict) or "source" not in cell:
        return None
    for match in reversed(list(_SOURCE_KEY.finditer(text, start, end))):
        try:
            value, _ = _DECODER.raw_decode(text, match.end())
        except ValueError:
            continue
        if value == cell["source"]:
            return match.end()
    return None


def _skip(text: str, offset: int) -> int:
    match = _WS.match(text, offset)
    return match.end() if match else offset


def _elements(text: str, offset: int) -> Iterator[tuple[int, int, Any]]:
    """(start, end, value) of each element of the JSON array starting at ``offset``."""
    if text[offset] != "[":
        raise ValueError("not an array")
    offset = _skip(text, offset + 1)
    while text[offset] != "]":
        start = offset
        value, offset = _DECODER.raw_decode(text, offset)
        yield start, offset, value
        offset = _skip(text, offset)
        if text[offset] == ",":
            offset = _skip(text, offset + 1)
