"""Lint settings: defaults < ``kiln.yaml`` < ``KILN_LINT_*`` environment < command line.

``kiln.yaml`` is found by walking up from the starting folder. Its ``lint`` section::

    lint:
      select: [KL1, KL3]          # ids or prefixes; default: every rule
      ignore: [KL102]
      severity: {KL202: error}    # error | warning | info
      rules: {KL201: {max_output_kb: 2000}, KL305: {allow_domains: [acme.com]}}
      require_parameters: false   # KL206 for every notebook, not only scheduled ones
      exclude: ["scratch/*"]      # globs, relative to the project root

Selections are layered like ruff's: each layer's ``select`` (when given) replaces the rules
enabled so far, then its ``ignore`` removes some. So ``--select KL101`` on the command line
enables KL101 even if ``kiln.yaml`` ignores ``KL1``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kiln.errors import UsageError
from kiln.lint.rules import RULES, RULES_BY_ID, SEVERITIES, Severity, expand_codes

PROJECT_FILE = "kiln.yaml"
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_LINT_KEYS = {"select", "ignore", "severity", "rules", "require_parameters", "exclude"}


@dataclass(frozen=True)
class Selection:
    """One layer of ``select``/``ignore`` (rule ids, already expanded from prefixes)."""

    select: frozenset[str] | None
    ignore: frozenset[str]
    source: str


@dataclass(frozen=True)
class LintConfig:
    """Which rules run, how severe they are, their options, and which notebooks need a
    ``parameters`` cell. Build it with :func:`load_lint_config`, then :meth:`with_overrides`."""

    selections: tuple[Selection, ...] = ()
    severity: Mapping[str, Severity] = field(default_factory=lambda: _EMPTY)
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _EMPTY)
    require_parameters: bool = False
    scheduled: frozenset[str] = frozenset()
    exclude: tuple[str, ...] = ()
    root: str | None = None
    project_file: str | None = None

    def enabled_rules(self) -> frozenset[str]:
        enabled = {rule.id for rule in RULES}
        for layer in self.selections:
            if layer.select is not None:
                enabled = set(layer.select)
            enabled -= layer.ignore
        return frozenset(enabled)

    def severity_of(self, rule: str) -> Severity:
        return self.severity.get(rule) or RULES_BY_ID[rule].severity

    def option(self, rule: str, name: str) -> Any:
        return self.options.get(rule, {}).get(name, RULES_BY_ID[rule].options[name])

    def parameters_required_by(self, path: str | os.PathLike[str]) -> str | None:
        """Why a notebook must have a parameters cell (KL206), or None when it need not."""
        if self.require_parameters:
            return "parameters are required for every notebook"
        if self.scheduled and _resolve(path) in self.scheduled:
            return f"it is scheduled or in a pipeline in {self.project_file or PROJECT_FILE}"
        return None

    def excluded(self, path: Path) -> bool:
        if not self.exclude:
            return False
        try:
            relative = path.resolve().relative_to(Path(self.root or ".").resolve()).as_posix()
        except ValueError:
            relative = path.as_posix()
        return any(fnmatch.fnmatch(relative, pattern) for pattern in self.exclude)

    def with_overrides(
        self,
        *,
        select: Iterable[str] | None = None,
        ignore: Iterable[str] | None = None,
        severity: Mapping[str, str] | None = None,
        require_parameters: bool | None = None,
        source: str = "command line",
    ) -> LintConfig:
        """A copy with a higher-precedence layer (the command line, by default)."""
        config = self
        if select is not None or ignore is not None:
            layer = _selection(select, ignore, source)
            config = replace(config, selections=(*config.selections, layer))
        if severity:
            merged = dict(config.severity)
            merged.update(_severities(severity, source))
            config = replace(config, severity=MappingProxyType(merged))
        if require_parameters:
            config = replace(config, require_parameters=True)
        return config


def load_lint_config(
    start_dir: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> LintConfig:
    """The lint settings for a project: ``kiln.yaml`` found by walking up from ``start_dir``
    (default: the current folder), then ``KILN_LINT_SELECT``/``KILN_LINT_IGNORE``."""
    env = os.environ if environ is None else environ
    config = LintConfig()
    project = find_project_file(Path(start_dir) if start_dir is not None else Path.cwd())
    if project is not None:
        config = _from_project_file(project)
    select, ignore = env.get("KILN_LINT_SELECT"), env.get("KILN_LINT_IGNORE")
    if select or ignore:
        config = config.with_overrides(
            select=_split(select) if select else None,
            ignore=_split(ignore) if ignore else None,
            source="KILN_LINT_SELECT/KILN_LINT_IGNORE",
        )
    return config


def find_project_file(start: Path) -> Path | None:
    folder = start.resolve()
    if folder.is_file():
        folder = folder.parent
    for candidate in (folder, *folder.parents):
        path = candidate / PROJECT_FILE
        if path.is_file():
            return path
    return None


def _split(text: str) -> list[str]:
    return [part for part in text.replace(",", " ").split() if part]


def _from_project_file(path: Path) -> LintConfig:
    import yaml

    where = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read {where}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise UsageError(f"{where}: expected a mapping at the top level")
    lint = data.get("lint") or {}
    if not isinstance(lint, Mapping):
        raise UsageError(f"{where}: 'lint' must be a mapping")
    unknown = set(lint) - _LINT_KEYS
    if unknown:
        raise UsageError(
            f"{where}: unknown lint setting(s) {', '.join(sorted(map(str, unknown)))}; "
            f"known: {', '.join(sorted(_LINT_KEYS))}"
        )
    source = f"{where}: lint"
    selections: tuple[Selection, ...] = ()
    if lint.get("select") is not None or lint.get("ignore") is not None:
        select = _string_list(lint.get("select"), f"{source}.select")
        ignore = _string_list(lint.get("ignore"), f"{source}.ignore")
        layer = _selection(select if lint.get("select") is not None else None, ignore, source)
        selections = (layer,)
    severity = lint.get("severity") or {}
    if not isinstance(severity, Mapping):
        raise UsageError(f"{source}.severity must map rule ids to error, warning or info")
    exclude = _string_list(lint.get("exclude"), f"{source}.exclude")
    require = lint.get("require_parameters", False)
    if not isinstance(require, bool):
        raise UsageError(f"{source}.require_parameters must be true or false")
    return LintConfig(
        selections=selections,
        severity=MappingProxyType(_severities(severity, source)),
        options=MappingProxyType(_rule_options(lint.get("rules") or {}, f"{source}.rules")),
        require_parameters=require,
        scheduled=frozenset(_scheduled_notebooks(data, path.parent)),
        exclude=tuple(exclude),
        root=str(path.parent),
        project_file=where,
    )


def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return _split(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UsageError(f"{where} must be a list of strings")


def _selection(
    select: Iterable[str] | None, ignore: Iterable[str] | None, source: str
) -> Selection:
    def expand(codes: Iterable[str], what: str) -> frozenset[str]:
        try:
            return frozenset(expand_codes(codes))
        except ValueError as exc:
            known = ", ".join(rule.id for rule in RULES)
            raise UsageError(
                f"{source}: {what}: unknown rule or prefix '{exc.args[0]}' (rules: {known})"
            ) from None

    return Selection(
        select=expand(select, "select") if select is not None else None,
        ignore=expand(ignore or (), "ignore"),
        source=source,
    )


def _severities(values: Mapping[Any, Any], source: str) -> dict[str, Severity]:
    result: dict[str, Severity] = {}
    for code, level in values.items():
        if not isinstance(level, str) or level not in SEVERITIES:
            raise UsageError(
                f"{source}: severity of {code!r} must be one of {', '.join(SEVERITIES)}, "
                f"not {level!r}"
            )
        try:
            ids = expand_codes([str(code)])
        except ValueError:
            raise UsageError(f"{source}: severity: unknown rule '{code}'") from None
        for rule in ids:
            result[rule] = level
    return result


def _rule_options(values: Any, where: str) -> dict[str, Mapping[str, Any]]:
    if not isinstance(values, Mapping):
        raise UsageError(f"{where} must map rule ids to their options")
    result: dict[str, Mapping[str, Any]] = {}
    for code, options in values.items():
        rule = RULES_BY_ID.get(str(code).upper())
        if rule is None:
            raise UsageError(f"{where}: unknown rule '{code}'")
        if not isinstance(options, Mapping):
            raise UsageError(f"{where}.{rule.id} must be a mapping of options")
        checked: dict[str, Any] = {}
        for name, value in options.items():
            if name not in rule.options:
                known = ", ".join(rule.options) or "none"
                raise UsageError(f"{where}.{rule.id}: unknown option '{name}' (options: {known})")
            checked[name] = _option_value(value, rule.options[name], f"{where}.{rule.id}.{name}")
        result[rule.id] = MappingProxyType(checked)
    return result


def _option_value(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool) or not isinstance(default, (int, tuple)):
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError(f"{where} must be a whole number >= 0, not {value!r}")
        return value
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise UsageError(f"{where} must be a list of strings")


def _scheduled_notebooks(data: Mapping[str, Any], root: Path) -> Iterator[str]:
    """Notebooks named under ``schedules`` or ``pipelines`` (any ``notebook:`` value or any
    string ending in ``.ipynb``), and ``notebooks`` entries that carry a schedule."""
    for section in ("schedules", "pipelines"):
        for value in _strings(data.get(section)):
            yield _resolve(root / value)
    notebooks = data.get("notebooks")
    if isinstance(notebooks, Mapping):
        for name, entry in notebooks.items():
            if isinstance(entry, Mapping) and ({"schedule", "schedules", "cron"} & set(entry)):
                path = entry.get("path") or entry.get("notebook") or name
                if isinstance(path, str):
                    yield _resolve(root / path)


def _strings(value: Any, key: str = "") -> Iterator[str]:
    if isinstance(value, str):
        if value.endswith(".ipynb") or key == "notebook":
            yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(k, "") if isinstance(k, str) and k.endswith(".ipynb") else ()
            yield from _strings(v, str(k))
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, key)


def _resolve(path: str | os.PathLike[str]) -> str:
    return os.path.normcase(os.path.abspath(os.path.realpath(path)))
