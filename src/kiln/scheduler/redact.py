"""What a scheduled run's reports and notifications must not show: the values of its
secrets (read from where the schedule says) and known secret formats."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.scheduler.model import Schedule
    from kiln.store.records import Run


def masker_for(schedule: Schedule, run: Run | None) -> Callable[[str], str]:
    """A function masking ``schedule``'s secret values (and scanner hits) in text."""
    from kiln.redact import Redactor, secret_values

    values = secret_values(schedule.section.secrets, missing_ok=True)
    return Redactor(values.values()).mask
