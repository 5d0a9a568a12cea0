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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from kiln.errors import UsageError
from kiln.lint.rules import RULES, RULES_BY_ID, SEVERITIES, Severity, expand_codes

if TYPE_CHECKING:
    from kiln.project import Project

_EMPTY: Mapping[str, Any] = MappingProxyType({})


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
            return f"it is scheduled or in a pipeline in {self.project_file or 'kiln.yaml'}"
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
    """The lint settings for a project: the ``lint`` section of the ``kiln.yaml`` found by
    walking up from ``start_dir`` (default: the current folder), then
    ``KILN_LINT_SELECT``/``KILN_LINT_IGNORE``."""
    from kiln.project import load_project

    env = os.environ if environ is None else environ
    config = LintConfig()
    project = load_project(Path(start_dir) if start_dir is not None else None)
    if project.file is not None:
        config = _from_project(project)
    select, ignore = env.get("KILN_LINT_SELECT"), env.get("KILN_LINT_IGNORE")
    if select or ignore:
        config = config.with_overrides(
            select=_split(select) if select else None,
            ignore=_split(ignore) if ignore else None,
            source="KILN_LINT_SELECT/KILN_LINT_IGNORE",
        )
    return config


def _split(text: str) -> list[str]:
    return [part for part in text.replace(",", " ").split() if part]


def _from_project(project: Project) -> LintConfig:
    """The ``lint`` section, its rule ids and options checked (errors point into the file)."""
    lint = project.config.lint
    source = f"{project.origin}: lint"

    def fail(exc: UsageError, key: str) -> UsageError:
        problem = _problem(exc).removeprefix(f"{key}: ")
        return project.error(f"lint.{key}: {problem}", lint, key)

    selections: tuple[Selection, ...] = ()
    if lint.select is not None or lint.ignore is not None:
        try:
            layer = _selection(
                _strings(lint.select) if lint.select is not None else None,
                _strings(lint.ignore),
                source,
            )
        except UsageError as exc:
            raise fail(exc, "select" if lint.select is not None else "ignore") from None
        selections = (layer,)
    try:
        severity = _severities(lint.severity, source)
    except UsageError as exc:
        raise fail(exc, "severity") from None
    try:
        options = _rule_options(lint.rules, f"{source}.rules")
    except UsageError as exc:
        raise fail(exc, "rules") from None
    return LintConfig(
        selections=selections,
        severity=MappingProxyType(severity),
        options=MappingProxyType(options),
        require_parameters=lint.require_parameters,
        scheduled=_pipeline_notebooks(project),
        exclude=tuple(lint.exclude),
        root=str(project.root),
        project_file=project.origin,
    )


def _pipeline_notebooks(project: Project) -> frozenset[str]:
    """The notebooks that pipeline tasks run (KL206: they must take parameters)."""
    return frozenset(
        _resolve(project.root / task.notebook)
        for pipeline in project.config.pipelines.values()
        for task in pipeline.tasks.values()
    )


def _problem(exc: UsageError) -> str:
    """The message without the ``<file>: lint...:`` prefix the helpers add."""
    text = exc.message
    marker = ": lint"
    if marker in text:
        text = text.split(marker, 1)[1]
        text = text.split(": ", 1)[1] if ": " in text else text
    return text


def _strings(value: list[str] | str | None) -> list[str]:
    if value is None:
        return []
    return _split(value) if isinstance(value, str) else list(value)


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


def _resolve(path: str | os.PathLike[str]) -> str:
    return os.path.normcase(os.path.abspath(os.path.realpath(path)))
