"""The scheduling sections of ``kiln.yaml``: ``schedules``, ``smtp`` and ``alerts``.

Declared as typed dataclasses like every other section (see :mod:`kiln.project.sections`, which
puts them on :class:`~kiln.project.sections.ProjectConfig`); kept apart because schedules,
their reports and their notifications make a family of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from kiln.project.typed import Duration
from kiln.project.typed import described as _help

#: a schedule's name: it keys its slots in the history and is a path segment of the API
SCHEDULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
#: when a notification is sent
NotifyOn = Literal["success", "failure", "always"]
ReportFormat = Literal["html", "pdf"]


@dataclass(frozen=True)
class SmtpSection:
    """The mail server that scheduled reports and alerts go through. Credentials come from
    the environment (KILN_SMTP_USER and KILN_SMTP_PASSWORD, or the variables named here),
    never from this file."""

    host: str = field(default="127.0.0.1", metadata=_help("the SMTP server"))
    port: int = field(
        default=25, metadata=_help("its port (25 or 2525 plain/STARTTLS, 465 SSL, 587 STARTTLS)")
    )
    sender: str = field(default="kiln@localhost", metadata=_help("the From address", key="from"))
    security: Literal["none", "starttls", "ssl"] = field(
        default="none", metadata=_help("none, starttls (upgrade the plain connection) or ssl")
    )
    user_env: str = field(
        default="KILN_SMTP_USER", metadata=_help("environment variable holding the user name")
    )
    password_env: str = field(
        default="KILN_SMTP_PASSWORD",
        metadata=_help("environment variable holding the password"),
    )
    timeout: Duration = field(default=30.0, metadata=_help("time limit of one delivery attempt"))

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port: expected 1 to 65535; got {self.port}")


@dataclass(frozen=True)
class ReportSection:
    """The report made after each scheduled run."""

    format: list[ReportFormat] | ReportFormat = field(
        default="html", metadata=_help("html, pdf, or both as a list")
    )
    hide_code: bool = field(
        default=True, metadata=_help("show outputs only (false: the code cells too)")
    )

    @property
    def formats(self) -> list[str]:
        return [self.format] if isinstance(self.format, str) else list(dict.fromkeys(self.format))


@dataclass(frozen=True)
class EmailNotify:
    """E-mail the report (the HTML as the body, the files attached)."""

    to: list[str] | str = field(metadata=_help("recipients"))
    cc: list[str] = field(default_factory=list, metadata=_help("copy recipients"))
    on: NotifyOn = field(default="always", metadata=_help("success, failure or always"))
    subject: str | None = field(
        default=None,
        metadata=_help("subject template (default: '[kiln] SCHEDULE STATE: NOTEBOOK')"),
    )
    attach: bool = field(default=True, metadata=_help("attach the report's files"))

    def __post_init__(self) -> None:
        for address in self.recipients + self.cc:
            if "@" not in address or any(c in address for c in " \r\n,<>"):
                raise ValueError(f"{address!r} is not an e-mail address")
        if not self.recipients:
            raise ValueError("to: expected at least one address")

    @property
    def recipients(self) -> list[str]:
        return [self.to] if isinstance(self.to, str) else list(self.to)


@dataclass(frozen=True)
class WebhookNotify:
    """POST a JSON summary of the run (for chat tools and alerting)."""

    url: str = field(metadata=_help("http(s) URL to POST to"))
    on: NotifyOn = field(default="failure", metadata=_help("success, failure or always"))
    timeout: Duration = field(default=10.0, metadata=_help("time limit of one attempt"))

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url: expected an http:// or https:// URL; got {self.url!r}")


@dataclass(frozen=True)
class NotifySection:
    """Where a scheduled run's report and outcome go."""

    email: EmailNotify | None = field(default=None, metadata=_help("e-mail the report"))
    webhook: WebhookNotify | None = field(default=None, metadata=_help("POST a JSON summary"))
    retries: int = field(
        default=3, metadata=_help("attempts after a failed delivery (each wait doubles)")
    )
    retry_delay: Duration = field(
        default=2.0, metadata=_help("the wait before the first delivery retry")
    )


@dataclass(frozen=True)
class AlertsSection:
    """Notifications about the scheduling itself and about pipelines: slots missed while no
    scheduler ran, a scheduler gone silent (`kiln health --alert`, `kiln scheduler`, `kiln
    serve`), a pipeline build that failed."""

    email: EmailNotify | None = field(default=None, metadata=_help("e-mail the alert"))
    webhook: WebhookNotify | None = field(default=None, metadata=_help("POST the alert"))
    missed: bool = field(default=True, metadata=_help("alert when slots are missed"))
    builds: bool = field(
        default=True,
        metadata=_help("alert when a pipeline build fails (kiln build and scheduled builds)"),
    )
    heartbeat: Duration = field(
        default=300.0,
        metadata=_help("kiln health --alert alerts when no scheduler beat for this long"),
    )


@dataclass(frozen=True)
class ScheduleSection:
    """A notebook or a pipeline run on a cron schedule: parameters templated at fire time,
    retries, a report and where it goes."""

    cron: str = field(
        metadata=_help(
            "five-field cron expression (minute hour day month weekday) or a shortcut: "
            "@hourly, @daily, @weekly, @monthly, @yearly"
        )
    )
    notebook: str | None = field(
        default=None,
        metadata=_help("the notebook to run, relative to the project root (or pipeline)"),
    )
    pipeline: str | None = field(
        default=None,
        metadata=_help("a pipeline of the pipelines section to build (or notebook)"),
    )
    timezone: str = field(
        default="UTC", metadata=_help("IANA time zone the cron times are in, e.g. Europe/Berlin")
    )
    parameters: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help(
            "parameter values; text may hold templates filled at fire time: {{ slot }}, "
            "{{ today }}, {{ yesterday }}, {{ now | date('%Y-%m') }}"
        ),
    )
    secrets: dict[str, str] = field(
        default_factory=dict,
        metadata=_help(
            "parameters whose values are secrets, read when the run starts: env:VARIABLE; "
            "masked in outputs, logs, reports and notifications"
        ),
    )
    retries: int = field(default=0, metadata=_help("runs a failed slot again, this many times"))
    retry_delay: Duration = field(
        default=60.0, metadata=_help("the wait before the first retry; each next wait doubles")
    )
    timeout: Duration | None = field(default=None, metadata=_help("time limit of each run"))
    engine: Literal["auto", "fork", "kernel"] | None = field(
        default=None, metadata=_help("fork, kernel or auto (default: the run section's)")
    )
    concurrency: Literal["skip", "queue"] = field(
        default="skip",
        metadata=_help(
            "when the previous slot's run is still going: skip the new slot, or queue it "
            "to run after"
        ),
    )
    catchup: Literal["skip", "latest"] = field(
        default="latest",
        metadata=_help(
            "slots missed while no scheduler ran: skip them all, or run the latest once"
        ),
    )
    grace: Duration = field(
        default=300.0,
        metadata=_help("a slot fired later than this after its time counts as missed"),
    )
    paused: bool = field(
        default=False, metadata=_help("start paused (kiln schedules resume starts it)")
    )
    force: bool = field(
        default=False,
        metadata=_help("a pipeline: run every task at each slot, even those up to date"),
    )
    report: ReportSection = field(
        default_factory=ReportSection, metadata=_help("the report made after each run")
    )
    notify: NotifySection | None = field(
        default=None, metadata=_help("e-mail and webhook notifications")
    )

    def __post_init__(self) -> None:
        if (self.notebook is None) == (self.pipeline is None):
            raise ValueError(
                "expected exactly one of notebook: (a notebook to run) and pipeline: (a "
                "pipeline to build); "
                + ("both are given" if self.notebook is not None else "neither is given")
            )
        if self.force and self.pipeline is None:
            raise ValueError("force: is for pipeline schedules (a notebook always runs)")
        if self.pipeline is not None:
            for key, given in (
                ("parameters", bool(self.parameters)),
                ("secrets", bool(self.secrets)),
                ("engine", self.engine is not None),
                ("timeout", self.timeout is not None),
            ):
                if given:
                    raise ValueError(
                        f"{key}: a pipeline schedule takes no {key} (each task of "
                        f"pipelines.{self.pipeline} sets its own)"
                    )
        if self.retries < 0:
            raise ValueError(f"retries: expected 0 or more; got {self.retries}")
        from kiln.project.cronspec import check_cron, check_timezone

        check_cron(self.cron)
        check_timezone(self.timezone)
        for name, source in self.secrets.items():
            if not name.isidentifier():
                raise ValueError(f"secrets: {name!r} is not a parameter name")
            if not source.startswith("env:") or not source[4:]:
                raise ValueError(
                    f"secrets.{name}: expected env:VARIABLE (where the value is read from); "
                    f"got {source!r}"
                )
            if name in self.parameters:
                raise ValueError(f"{name!r} is both in parameters and in secrets")
