"""``kiln schedules add|remove``: a schedule written into ``kiln.yaml`` (or taken out),
checked exactly as ``kiln scheduler`` will load it before the file changes.

The text is edited by :mod:`kiln.project.edit` (comments and order kept, atomic write); the
check here is the scheduler's own: the section's types, cron and time zone (the loader), the
notebook or pipeline and the templates (:func:`~kiln.scheduler.model.load_schedules`), and the
parameters against the notebook's parameters cell as a fire would check them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import ParameterError, UsageError

if TYPE_CHECKING:
    from kiln.project import Project


def schedule_body(
    *,
    notebook: str | None,
    pipeline: str | None,
    cron: str,
    timezone: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    retries: int | None = None,
    email: list[str] | None = None,
    on: str | None = None,
) -> dict[str, Any]:
    """The schedule's section as kiln.yaml will hold it (only what was given)."""
    if on is not None and not email:
        raise UsageError("--on says when to e-mail: add --email ADDRESS")
    body: dict[str, Any] = {}
    if notebook is not None:
        body["notebook"] = notebook
    if pipeline is not None:
        body["pipeline"] = pipeline
    body["cron"] = cron
    if timezone is not None:
        body["timezone"] = timezone
    if parameters:
        body["parameters"] = dict(parameters)
    if retries is not None:
        body["retries"] = retries
    if email:
        body["notify"] = {"email": {"to": list(email), "on": on or "always"}}
    return body


def add_schedule(start: Path, name: str, body: Mapping[str, Any]) -> Project:
    """Write schedule ``name`` into the kiln.yaml of the project at ``start`` (created when
    there is none); the project as it loads after the write. Refuses a name in use, and
    anything that would not load. Two commands adding at once both land (the edit lock)."""
    from kiln.project.edit import editing
    from kiln.project.schedule_sections import SCHEDULE_NAME

    if not SCHEDULE_NAME.fullmatch(name):
        raise UsageError(f"{name!r} is not a schedule name (letters, digits, _ . -)")
    with editing(Path(start)):
        return _add(Path(start), name, body)


def _add(start: Path, name: str, body: Mapping[str, Any]) -> Project:
    from kiln.project import PROJECT_FILE, load_project
    from kiln.project.edit import add_entry

    project = load_project(start)
    path = project.file
    if path is None:
        path = start / PROJECT_FILE
        path.write_text("", encoding="utf-8")
    elif name in project.config.schedules:
        where = project.where(project.config.schedules, name)
        line = f":{where[0]}" if where else ""
        raise UsageError(
            f"{project.origin}{line}: schedule {name!r} exists already; remove it first "
            f"(kiln schedules remove {name}) or change it in the file"
        )
    body = dict(body)
    if "parameters" in body and body.get("notebook"):
        try:
            body["parameters"] = _typed(project, str(body["notebook"]), body["parameters"])
        except ParameterError as exc:
            raise UsageError(f"schedule {name} not added: -p {exc.message}") from None
    from kiln.yamlio import YamlError

    try:
        return add_entry(path, "schedules", name, body, check=lambda p: check_schedule(p, name))
    except YamlError as exc:  # its line is in the file as it would have been: not shown
        raise UsageError(
            f"{project.origin if project.file else path.name}: schedule {name} not added "
            f"(the file is unchanged): {exc.problem}"
        ) from None
    finally:
        if project.file is None and not path.read_text(encoding="utf-8"):
            path.unlink(missing_ok=True)  # the empty file this call made


def remove_schedule(start: Path, name: str) -> Path:
    """Take schedule ``name`` out of the project's kiln.yaml; the file written."""
    from kiln.project import load_project
    from kiln.project.edit import editing, remove_entry

    with editing(Path(start)):
        project = load_project(start)
        if project.file is None or name not in project.config.schedules:
            known = ", ".join(project.config.schedules) or "none"
            raise UsageError(f"{project.origin} has no schedule {name!r} (schedules: {known})")
        remove_entry(project.file, "schedules", name)
        return project.file


def check_schedule(project: Project, name: str) -> None:
    """Raise what ``kiln scheduler`` would refuse about schedule ``name`` of ``project``."""
    from kiln.scheduler.model import load_schedules

    schedule = load_schedules(project)[name]
    if schedule.notebook is None:
        return
    from kiln.notebook import load_notebook
    from kiln.parameters import infer_schema, resolve_parameters

    now = datetime.now(schedule.cron.zone)
    given = schedule.parameters_for(now, now)
    given.update(dict.fromkeys(schedule.section.secrets, "secret"))  # read when it fires
    path = str(schedule.notebook)
    try:
        resolve_parameters(infer_schema(load_notebook(path), notebook=path), given, notebook=path)
    except ParameterError as exc:
        raise project.error(
            f"schedules.{name}.parameters: {exc.message}",
            project.config.schedules[name],
            "parameters",
        ) from None


def _typed(project: Project, notebook: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``-p`` text typed by the notebook's parameters cell, as ``kiln run -p`` types it;
    templated text stays text (it is filled when the slot fires)."""
    from kiln.notebook import load_notebook
    from kiln.parameters import CliValue, infer_schema, resolve_parameters
    from kiln.scheduler.templates import has_template

    path = project.resolve(notebook)
    if not path.is_file():
        return dict(values)  # the check after says the notebook is missing, located
    schema = infer_schema(load_notebook(str(path)), notebook=str(path))
    plain = {k: CliValue(str(v)) for k, v in values.items() if not has_template(str(v))}
    typed = resolve_parameters(schema, plain, notebook=str(path), allow_unknown=True)
    return {k: typed.get(k, v) for k, v in values.items()}
