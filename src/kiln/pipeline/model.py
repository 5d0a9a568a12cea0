"""A pipeline as Kiln runs it: the ``pipelines`` section of ``kiln.yaml`` expanded and checked.

:func:`load_pipeline` turns one typed :class:`~kiln.project.sections.PipelineSection` into a
:class:`Pipeline` of :class:`Task` s:

- a task with a ``grid`` becomes one task per parameter set, ``clean[region=EU]``;
- ``{{params.NAME}}`` in products and inputs is filled from each task's parameters;
- relative paths become absolute (from the project root); fsspec URLs stay URLs;
- upstream tasks are the ones named in ``upstream`` plus the makers of the task's inputs;
- tasks come in dependency order.

Whatever cannot work is refused here, before anything runs, with the place in the file: an
unknown task, a cycle (with its path), a bad template, a product claimed by two tasks, a task
that reads its own product, a missing notebook.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import UsageError
from kiln.remote import is_url

if TYPE_CHECKING:
    from kiln.project import Project
    from kiln.project.sections import PipelineSection, TaskSection

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}")
_PARAM_REF = re.compile(r"\s*params\.([A-Za-z_]\w*)\s*")


@dataclass(frozen=True)
class Task:
    """One task: a notebook, its parameters, what it reads and what it writes.

    ``upstream`` maps the name the notebook sees in its ``upstream`` parameter to the tasks
    behind it: a plain task to itself, a grid task's name to all its members."""

    name: str
    #: the name in kiln.yaml (``clean`` for ``clean[region=EU]``)
    base: str
    notebook: Path
    #: the values from kiln.yaml, the grid's included (plain data)
    parameters: Mapping[str, Any]
    #: this member's values of its task's grid (empty for a task without a grid)
    grid_values: Mapping[str, Any]
    #: product name -> where: an absolute path, or a URL
    products: Mapping[str, str]
    #: declared inputs that no task makes: absolute paths or URLs
    inputs: tuple[str, ...]
    upstream: Mapping[str, tuple[str, ...]]
    retries: int = 0
    retry_delay: float = 1.0
    timeout: float | None = None
    engine: str | None = None
    kernel: str | None = None

    @property
    def upstream_tasks(self) -> tuple[str, ...]:
        """Every task this one waits for, each once."""
        return tuple(dict.fromkeys(name for names in self.upstream.values() for name in names))


@dataclass(frozen=True)
class Pipeline:
    """A checked pipeline: its tasks in dependency order (upstream first)."""

    name: str
    project: Project
    tasks: Mapping[str, Task]
    #: the name in kiln.yaml -> the tasks it became (one, or a grid's members)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.project.root

    @property
    def key(self) -> str:
        """The project this pipeline belongs to, as the history names it."""
        return str(self.project.root)

    def downstream(self) -> dict[str, list[str]]:
        """Task -> the tasks that wait for it."""
        out: dict[str, list[str]] = {name: [] for name in self.tasks}
        for task in self.tasks.values():
            for up in task.upstream_tasks:
                out[up].append(task.name)
        return out

    def resolve(self, target: str) -> tuple[str, ...]:
        """The tasks a ``--target`` names: a task, a grid member, or a whole grid task."""
        if target in self.groups:
            return self.groups[target]
        if target in self.tasks:
            return (target,)
        known = list(self.groups) + [t for t in self.tasks if t not in self.groups]
        near = difflib.get_close_matches(target, known, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise UsageError(
            f"pipeline {self.name} has no task {target!r}{hint} (tasks: {', '.join(known)})"
        )

    def select(self, targets: Iterable[str] = ()) -> list[str]:
        """The targets and every task they depend on, in dependency order (all when none)."""
        wanted = [name for target in targets for name in self.resolve(target)]
        if not wanted:
            return list(self.tasks)
        keep: set[str] = set()
        stack = list(wanted)
        while stack:
            name = stack.pop()
            if name not in keep:
                keep.add(name)
                stack.extend(self.tasks[name].upstream_tasks)
        return [name for name in self.tasks if name in keep]


def pipeline_names(project: Project) -> list[str]:
    return list(project.config.pipelines)


def choose_pipeline(project: Project, name: str | None) -> str:
    """``name``, or the project's only pipeline when none is given."""
    names = pipeline_names(project)
    if name is not None:
        if name not in project.config.pipelines:
            where = project.origin if project.file is not None else "no kiln.yaml"
            near = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            known = ", ".join(names) if names else "none"
            raise UsageError(f"no pipeline {name!r} in {where}{hint} (pipelines: {known})")
        return name
    if project.file is None:
        raise UsageError(
            "no kiln.yaml here or above: pipelines are declared in kiln.yaml "
            "(pipelines: {NAME: {tasks: ...}})"
        )
    if not names:
        raise UsageError(f"{project.origin} declares no pipelines (pipelines: {{NAME: ...}})")
    if len(names) > 1:
        raise UsageError(
            f"{project.origin} declares {len(names)} pipelines ({', '.join(names)}): name one"
        )
    return names[0]


def load_pipeline(name: str | None = None, *, project: Project | None = None) -> Pipeline:
    """The pipeline ``name`` (or the only one) of ``project`` (default: the project of the
    working directory), expanded and checked; located errors (exit 2) for what cannot work."""
    if project is None:
        from kiln.project import load_project

        project = load_project()
    chosen = choose_pipeline(project, name)
    return _Builder(project, chosen, project.config.pipelines[chosen]).build()


def member_name(base: str, values: Mapping[str, Any]) -> str:
    """``clean[region=EU]``: a grid member's name from its values."""
    if not values:
        return base
    return f"{base}[{','.join(f'{k}={text_value(v)}' for k, v in values.items())}]"


def text_value(value: Any) -> str:
    """A parameter value as it appears in a name or a path: text as is, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


def location_key(location: str) -> str:
    """What makes two written locations the same file (a ``file://`` URL is its path)."""
    if location.startswith("file://"):
        return os.path.normpath(location[len("file://") :])
    return location


class _Builder:
    def __init__(self, project: Project, name: str, section: PipelineSection) -> None:
        self.project = project
        self.name = name
        self.section = section
        self.prefix = f"pipelines.{name}"

    def fail(self, problem: str, obj: Any = None, key: Any = None) -> UsageError:
        if obj is None:
            obj, key = self.section, "tasks"
        return self.project.error(f"{self.prefix}.{problem}", obj, key)

    def build(self) -> Pipeline:
        from kiln.project.sections import TASK_NAME

        if not TASK_NAME.fullmatch(self.name):
            raise self.project.error(
                f"pipelines: {self.name!r} is not a valid pipeline name (letters, digits, _ . -)",
                self.project.config.pipelines,
                self.name,
            )
        tasks: dict[str, Task] = {}
        groups: dict[str, tuple[str, ...]] = {}
        where: dict[str, str] = {}  # task -> its name in kiln.yaml
        for base, section in self.section.tasks.items():
            if not TASK_NAME.fullmatch(base):
                raise self.fail(
                    f"tasks: {base!r} is not a valid task name (letters, digits, _ . -; "
                    "brackets name grid members)",
                    self.section.tasks,
                    base,
                )
            members = self._expand(base, section)
            groups[base] = tuple(t.name for t in members)
            for task in members:
                tasks[task.name] = task
                where[task.name] = base
        tasks = self._link(tasks, groups, where)
        order = self._order(tasks, where)
        return Pipeline(
            self.name, self.project, {name: tasks[name] for name in order}, dict(groups)
        )

    # -- one task ---------------------------------------------------------------------------

    def _expand(self, base: str, section: TaskSection) -> list[Task]:
        path = f"tasks.{base}"
        notebook = self.project.resolve(section.notebook)
        if not notebook.is_file():
            problem = "is a folder" if notebook.is_dir() else "does not exist"
            raise self.fail(
                f"{path}.notebook: {section.notebook} {problem} (paths are relative to the "
                f"project root {self.project.root})",
                section,
                "notebook",
            )
        sets: list[dict[str, Any]] = [{}]
        if section.grid is not None:
            from kiln.sweeps import parameter_sets

            try:
                sets = parameter_sets(section.grid, origin=f"{self.prefix}.{path}.grid")
            except UsageError as exc:
                raise self.project.error(exc.message, section, "grid") from None
        members = []
        for values in sets:
            parameters = {**section.parameters, **values}
            name = member_name(base, values)
            products = {
                key: self._render(
                    value, parameters, f"{path}.products.{key}", section.products, key
                )
                for key, value in section.products.items()
            }
            inputs = tuple(
                self._render(value, parameters, f"{path}.inputs[{i}]", section, "inputs")
                for i, value in enumerate(section.inputs)
            )
            members.append(
                Task(
                    name=name,
                    base=base,
                    notebook=notebook,
                    parameters=parameters,
                    grid_values=values,
                    products=products,
                    inputs=inputs,
                    upstream={},
                    retries=section.retries,
                    retry_delay=section.retry_delay,
                    timeout=section.timeout,
                    engine=section.engine,
                    kernel=section.kernel,
                )
            )
        return members

    def _render(
        self, text: str, parameters: Mapping[str, Any], path: str, obj: Any, key: str
    ) -> str:
        """A product or input with its ``{{params.NAME}}`` filled, as a location."""

        def fill(match: re.Match[str]) -> str:
            ref = _PARAM_REF.fullmatch(match.group(1))
            if ref is None:
                raise self.fail(
                    f"{path}: bad template {match.group(0)!r} in {text!r}: write "
                    "{{params.NAME}} with NAME one of the task's parameters",
                    obj,
                    key,
                )
            name = ref.group(1)
            if name not in parameters:
                known = ", ".join(parameters) or "none"
                near = difflib.get_close_matches(name, list(parameters), n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise self.fail(
                    f"{path}: bad template {match.group(0)!r} in {text!r}: the task has no "
                    f"parameter {name!r}{hint}; its parameters: {known}",
                    obj,
                    key,
                )
            return text_value(parameters[name])

        rendered = _TEMPLATE.sub(fill, text)
        if "{{" in rendered or "}}" in rendered:
            raise self.fail(
                f"{path}: bad template {text!r}: an unclosed '{{{{' or a stray '}}}}'", obj, key
            )
        if not rendered.strip():
            raise self.fail(f"{path}: the path is empty", obj, key)
        if is_url(rendered):
            return rendered
        return str(self.project.resolve(rendered))

    def _shown(self, location: str) -> str:
        from kiln.pipeline.fingerprint import shown

        return shown(location, self.project.root)

    # -- upstream -----------------------------------------------------------------------------

    def _link(
        self, tasks: dict[str, Task], groups: dict[str, tuple[str, ...]], where: dict[str, str]
    ) -> dict[str, Task]:
        makers: dict[str, tuple[str, str]] = {}  # location key -> (task, product name)
        for task in tasks.values():
            section = self.section.tasks[task.base]
            for product, location in task.products.items():
                key = location_key(location)
                other = makers.get(key)
                if other is not None:
                    raise self.fail(
                        f"tasks.{task.base}.products.{product}: {self._shown(location)} is "
                        f"also product {other[1]!r} of task {other[0]}: a file has one maker",
                        section.products,
                        product,
                    )
                makers[key] = (task.name, product)
        linked: dict[str, Task] = {}
        for task in tasks.values():
            section = self.section.tasks[task.base]
            upstream: dict[str, tuple[str, ...]] = {}
            for written in section.upstream or []:
                if written in groups:
                    upstream[written] = groups[written]
                elif written in tasks:
                    upstream[written] = (written,)
                else:
                    known = list(groups)
                    near = difflib.get_close_matches(written, known, n=1)
                    hint = f"; did you mean {near[0]!r}?" if near else ""
                    raise self.fail(
                        f"tasks.{task.base}.upstream: unknown task {written!r}{hint} (tasks: "
                        f"{', '.join(known)})",
                        section,
                        "upstream",
                    )
                if task.name in upstream[written] or written == task.base:
                    raise self.fail(
                        f"tasks.{task.base}.upstream: a task cannot wait for itself",
                        section,
                        "upstream",
                    )
            inputs = []
            for location in task.inputs:
                maker = makers.get(location_key(location))
                if maker is None:
                    inputs.append(location)
                    continue
                if maker[0] == task.name:
                    raise self.fail(
                        f"tasks.{task.base}.inputs: {self._shown(location)} is this task's "
                        f"own product {maker[1]!r}",
                        section,
                        "inputs",
                    )
                if not any(maker[0] in names for names in upstream.values()):
                    upstream[_shown_as(maker[0], groups, where)] = (maker[0],)
            linked[task.name] = replace(
                task, upstream=upstream, inputs=tuple(dict.fromkeys(inputs))
            )
        return linked

    def _order(self, tasks: Mapping[str, Task], where: Mapping[str, str]) -> list[str]:
        """Dependency order (kiln.yaml's order among independent tasks); a cycle is an error
        that shows its path."""
        order: list[str] = []
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for start in tasks:
            if state.get(start) == 2:
                continue
            path: list[str] = []
            stack: list[tuple[str, Iterable[str]]] = [(start, iter(tasks[start].upstream_tasks))]
            state[start] = 1
            path.append(start)
            while stack:
                name, ups = stack[-1]
                nxt = next(iter(ups), None)
                if nxt is None:
                    stack.pop()
                    path.pop()
                    state[name] = 2
                    order.append(name)
                    continue
                if state.get(nxt) == 2:
                    continue
                if state.get(nxt) == 1:
                    cycle = [*path[path.index(nxt) :], nxt]
                    # the path runs downstream -> upstream; show it in run order
                    shown = " -> ".join(reversed(cycle))
                    base = where[cycle[0]]
                    section = self.section.tasks[base]
                    key = "upstream" if section.upstream is not None else "inputs"
                    raise self.fail(f"tasks.{base}.{key}: a cycle: {shown}", section, key)
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(tasks[nxt].upstream_tasks)))
        return order


def _shown_as(name: str, groups: Mapping[str, tuple[str, ...]], where: Mapping[str, str]) -> str:
    """The key an inferred upstream task gets: its kiln.yaml name unless it is a grid member."""
    base = where[name]
    return base if groups[base] == (base,) else name
