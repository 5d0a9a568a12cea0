"""The ``verify`` and ``tests`` sections of ``kiln.yaml``, and parameter sets declared in a
notebook's own metadata.

``kiln.yaml`` is found by walking up from the notebook's folder::

    verify:
      ignore:                        # regexes; matches become <IGNORED> on both sides
        - 'Generated in \\d+ ms'
        - {regex: 'run [0-9a-f]{8}', replace: 'run <ID>'}
      strict_images: false           # true: compare image bytes, not only their type

    tests:                           # parameter sets for `pytest --kiln`
      notebooks/report.ipynb:        # a path or glob, relative to kiln.yaml's folder
        - {region: EU}               # a list: ids from the values (report.ipynb::region=EU)
        - {region: US, n: 5}
      notebooks/daily-*.ipynb:
        europe: {region: EU}         # a mapping: ids are the names (daily-1.ipynb::europe)

A notebook may declare its own sets, in the same two shapes, under ``metadata.kiln.tests``.
``kiln.yaml`` wins: when one of its keys matches the notebook (the first match, in file order),
the notebook's own sets are not used. An empty set (``{}``) runs the notebook's defaults.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import UsageError


@dataclass(frozen=True)
class ParameterSet:
    """One parameter set to test a notebook with; ``id`` names its pytest item."""

    id: str
    values: dict[str, Any]


@dataclass(frozen=True)
class VerifySettings:
    """``verify`` settings: ``ignore`` holds regexes or (regex, replacement) pairs."""

    ignore: tuple[str | tuple[str, str], ...] = ()
    strict_images: bool = False
    source: str = "kiln.yaml"


def verify_settings(notebook: str | os.PathLike[str]) -> VerifySettings:
    """The ``verify`` section of the ``kiln.yaml`` that governs ``notebook``."""
    from kiln.project import load_project
    from kiln.project.sections import IgnorePattern

    project = load_project(Path(notebook).parent)
    if project.file is None:
        return VerifySettings()
    section = project.config.verify
    raw = section.ignore
    items = [] if raw is None else raw if isinstance(raw, list) else [raw]
    ignore: list[str | tuple[str, str]] = [
        (item.regex, item.replace) if isinstance(item, IgnorePattern) else item for item in items
    ]
    return VerifySettings(tuple(ignore), section.strict_images, f"{project.origin}: verify")


def parameter_sets(
    notebook: str | os.PathLike[str], raw: Mapping[str, Any] | None = None
) -> list[ParameterSet] | None:
    """The parameter sets declared for ``notebook`` (``kiln.yaml``'s ``tests`` first, else
    the notebook's ``metadata.kiln.tests``); None when none are declared. ``raw`` is the
    notebook's JSON when the caller has it."""
    from kiln.project import load_project

    path = Path(notebook).resolve()
    project = load_project(path.parent)
    if project.file is not None and project.config.tests:
        found = _match(project.config.tests, path, project.root)
        if found is not None:
            key, value = found
            return _sets(value, f"{project.origin}: tests.{key}")
    if raw is None:
        raw = _read_json(path)
    meta = raw.get("metadata", {}).get("kiln", {}) if isinstance(raw, Mapping) else {}
    if isinstance(meta, Mapping) and meta.get("tests") is not None:
        return _sets(meta["tests"], f"{path.name}: metadata.kiln.tests")
    return None


def _read_json(path: Path) -> Mapping[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}  # the run reports an unreadable notebook properly
    return data if isinstance(data, Mapping) else {}


def _match(tests: Mapping[Any, Any], path: Path, root: Path) -> tuple[str, Any] | None:
    try:
        relative = path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return None
    for key, value in tests.items():
        pattern = str(key).replace("\\", "/").removeprefix("./")
        if relative == pattern or fnmatch.fnmatchcase(relative, pattern):
            return str(key), value
    return None


def _sets(value: Any, where: str) -> list[ParameterSet]:
    named: list[tuple[str | None, Any, str]]
    if isinstance(value, Mapping):
        named = [(str(name), values, f"{where}.{name}") for name, values in value.items()]
    elif isinstance(value, list):
        named = [(None, values, f"{where}[{i}]") for i, values in enumerate(value)]
    else:
        raise UsageError(
            f"{where} must be a list of parameter sets ({{name: value}}) or a mapping of "
            "set names to parameter sets"
        )
    sets: list[ParameterSet] = []
    seen: dict[str, int] = {}
    for name, values, at in named:
        if values is None:
            values = {}
        if not isinstance(values, Mapping) or not all(isinstance(k, str) for k in values):
            raise UsageError(f"{at} must be a mapping of parameter names to values")
        ident = name or set_id(values)
        seen[ident] = seen.get(ident, 0) + 1
        if seen[ident] > 1:
            ident = f"{ident}#{seen[ident]}"
        sets.append(ParameterSet(ident, dict(values)))
    return sets


def set_id(values: Mapping[str, Any], width: int = 60) -> str:
    """A readable id for a parameter set: ``region=EU,n=3`` (``defaults`` when empty)."""
    if not values:
        return "defaults"
    parts = []
    for name, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        parts.append(f"{name}={text}")
    ident = ",".join(parts).replace("\n", " ").replace("::", ":")
    return ident if len(ident) <= width else ident[: width - 1] + "…"
