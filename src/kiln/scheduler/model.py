"""The schedules of a project, read from ``kiln.yaml``'s ``schedules`` section and checked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.project.cronspec import Cron
from kiln.scheduler import templates

if TYPE_CHECKING:
    from kiln.pipeline.model import Pipeline
    from kiln.project import Project
    from kiln.project.schedule_sections import ScheduleSection, SmtpSection

#: the tags a fired run carries
SCHEDULE_TAG, SLOT_TAG = "schedule", "slot"


@dataclass(frozen=True)
class Schedule:
    """One schedule: its section, its cron in its zone, its notebook's path or its
    pipeline (checked at load)."""

    name: str
    section: ScheduleSection
    cron: Cron
    notebook: Path | None
    project: Project
    pipeline: Pipeline | None = None

    @property
    def target(self) -> str:
        """What the schedule runs, as kiln.yaml names it (notebook path or pipeline name)."""
        return self.section.notebook or f"pipeline {self.section.pipeline}"

    @property
    def smtp(self) -> SmtpSection | None:
        return self.project.config.smtp

    def next_fires(self, after: datetime, count: int = 1) -> list[datetime]:
        """The next ``count`` slots after ``after`` (aware UTC)."""
        found: list[datetime] = []
        for slot in self.cron.after(after):
            found.append(slot)
            if len(found) >= count:
                break
        return found

    def parameters_for(self, slot: datetime, fired: datetime) -> dict[str, Any]:
        """The parameters of the run of ``slot``, templates filled."""
        names = templates.context(self.name, self.cron.local(slot), self.cron.local(fired))
        filled: dict[str, Any] = templates.fill(
            dict(self.section.parameters), names, where=f"schedules.{self.name}.parameters"
        )
        return filled


def load_schedules(project: Project) -> dict[str, Schedule]:
    """Every schedule of ``project``, checked: its notebook exists (or its pipeline loads),
    its templates fill."""
    found: dict[str, Schedule] = {}
    sections = project.config.schedules
    for name, section in sections.items():
        if (
            section.notify is not None
            and section.notify.email is not None
            and (project.config.smtp is None)
        ):
            # found now, not at the first delivery at 6 a.m.
            raise project.error(
                f"schedules.{name}.notify.email: e-mail needs an smtp section in kiln.yaml "
                "(smtp: {host: ..., port: ..., from: ...}; credentials from KILN_SMTP_USER "
                "and KILN_SMTP_PASSWORD)",
                section.notify,
                "email",
            )
        notebook: Path | None = None
        pipeline = None
        if section.pipeline is not None:
            pipeline = _pipeline(project, name, section)
        else:
            assert section.notebook is not None  # the section checks: one of the two
            notebook = project.resolve(section.notebook)
            if not notebook.is_file():
                raise project.error(
                    f"schedules.{name}.notebook: {section.notebook} does not exist "
                    f"(looked for {notebook})",
                    section,
                    "notebook",
                )
        schedule = Schedule(
            name=name,
            section=section,
            cron=Cron(section.cron, section.timezone),
            notebook=notebook,
            project=project,
            pipeline=pipeline,
        )
        if any(_templated(v) for v in section.parameters.values()):
            now = datetime.now(schedule.cron.zone)
            try:
                schedule.parameters_for(now, now)
            except ValueError as exc:
                raise project.error(str(exc), section, "parameters") from None
        found[name] = schedule
    return found


def _pipeline(project: Project, name: str, section: ScheduleSection) -> Pipeline:
    from kiln.errors import UsageError
    from kiln.pipeline.model import load_pipeline

    wanted = section.pipeline
    known = list(project.config.pipelines)
    if wanted not in project.config.pipelines:
        raise project.error(
            f"schedules.{name}.pipeline: no pipeline {wanted!r} in the pipelines section "
            f"(pipelines: {', '.join(known) if known else 'none'})",
            section,
            "pipeline",
        )
    try:
        return load_pipeline(wanted, project=project)
    except UsageError as exc:
        raise UsageError(f"schedules.{name}.pipeline: {exc.message}") from None


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return templates.has_template(value)
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    return False
