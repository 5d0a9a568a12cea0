"""Values people type: durations (``90``, ``10s``, ``5m``, ``2h``), sizes (``512M``) and counts.

One parser per kind, shared by every command-line flag, the pytest plugin, ``kiln.yaml`` and
the Python API, so ``10m`` means the same thing everywhere. Each raises ``ValueError`` with a
message that says what was expected; callers add where the value came from.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

DURATION_HELP = "a duration: seconds (90), or with a unit: 500ms, 10s, 5m, 2h, 1d, 1h30m"
SIZE_HELP = "a size in bytes, or with a unit: 512K, 512M, 2G"


def parse_duration(value: object, *, allow_zero: bool = False) -> float:
    """Seconds from ``90``, ``1.5``, ``"90"``, ``"10s"``, ``"5m"``, ``"2h"``, ``"1h30m"``.

    >>> parse_duration("1h30m")
    5400.0
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HELP}; got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _duration_text(value)
    else:
        raise ValueError(f"expected {DURATION_HELP}; got {type(value).__name__} {value!r}")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        lowest = "zero or more" if allow_zero else "more than zero"
        raise ValueError(f"expected a duration of {lowest} seconds; got {value!r}")
    return seconds


def _duration_text(text: str) -> float:
    stripped = text.strip()
    try:
        return float(stripped)
    except ValueError:
        pass
    pos, total, matched = 0, 0.0, False
    compact = stripped.replace(" ", "")
    while pos < len(compact):
        match = _DURATION_PART.match(compact, pos)
        if match is None:
            raise ValueError(f"expected {DURATION_HELP}; got {text!r}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
        pos, matched = match.end(), True
    if not matched:
        raise ValueError(f"expected {DURATION_HELP}; got {text!r}")
    return total


def parse_size(value: object, *, minimum: int = 0) -> int:
    """Bytes from ``1048576``, ``"512K"``, ``"512M"``, ``"2G"``, ``"2GiB"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HELP}; got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and math.isfinite(value):
        size = int(value)
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"expected {SIZE_HELP}; got {value!r}")
        size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    else:
        raise ValueError(f"expected {SIZE_HELP}; got {type(value).__name__} {value!r}")
    if size < minimum:
        raise ValueError(f"expected at least {format_size(minimum)}; got {value!r}")
    return size


def parse_count(value: object, *, minimum: int = 1) -> int:
    """A whole number of at least ``minimum`` (``"4"`` or ``4``)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number; got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"expected a whole number; got {value!r}") from None
    if not isinstance(value, int):
        raise ValueError(f"expected a whole number; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"expected a whole number of at least {minimum}; got {value}")
    return value


def parse_file_mode(text: str | int) -> int:
    """``"0640"``, ``"640"`` or ``0o640`` -> ``0o640``; the owner must read and write."""
    try:
        mode = text if isinstance(text, int) else int(str(text), 8)
    except ValueError:
        raise ValueError(
            f"expected an octal file mode such as 0600 or 0640; got {text!r}"
        ) from None
    if not 0 <= mode <= 0o777 or mode & 0o600 != 0o600:
        raise ValueError(
            f"expected a file mode the owner can read and write (0600 to 0666); got {text!r}"
        )
    return mode


def format_duration(seconds: float) -> str:
    """``90`` -> ``1m30s``; short values keep their decimals (``0.25s``)."""
    if seconds < 60:
        return f"{seconds:g}s"
    whole = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts)


def format_size(size: float) -> str:
    """``536870912`` -> ``512M``."""
    for unit in ("", "K", "M", "G"):
        if abs(size) < 1024:
            return f"{size:.3g}{unit}" if unit else f"{size:g}B"
        size /= 1024
    return f"{size:.3g}T"


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """A point in time from ``"2d"`` / ``"12h"`` (that long ago) or an ISO-8601 date or time
    (``2026-11-30``, ``2026-11-30T08:00:00+01:00``; a time without an offset is local time)."""
    from datetime import timedelta, timezone

    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected a duration ago (2d, 12h) or an ISO-8601 date/time; got nothing")
    try:
        ago = parse_duration(text)
    except ValueError:
        pass
    else:
        try:
            return (now or datetime.now(timezone.utc)) - timedelta(seconds=ago)
        except OverflowError:
            raise ValueError(f"{text.strip()!r} ago is before the year 1") from None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"expected a duration ago (2d, 12h) or an ISO-8601 date/time (2026-11-30); got {text!r}"
        ) from None
    return when if when.tzinfo else when.astimezone()
