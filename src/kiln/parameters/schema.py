"""The parameter schema of a notebook: what its ``parameters`` cell declares.

A :class:`ParameterSchema` is plain, frozen data. It is built by
:func:`kiln.parameters.infer_schema` from the source of the cell tagged ``parameters`` and used
to coerce and check values before any kernel starts.
"""

from __future__ import annotations

import enum
import keyword
import math
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

from kiln.errors import InvalidParameterName

__all__ = [
    "MISSING",
    "PARAMETER_TYPES",
    "Parameter",
    "ParameterSchema",
    "ParameterType",
    "validate_name",
]

ParameterType = Literal["int", "float", "bool", "str", "date", "list", "dict", "any"]
PARAMETER_TYPES: Final[tuple[str, ...]] = (
    "int",
    "float",
    "bool",
    "str",
    "date",
    "list",
    "dict",
    "any",
)


class _MissingType(enum.Enum):
    """Type of :data:`MISSING`; an enum so the sentinel survives copy and pickle as itself."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _MissingType.MISSING
"""The default of a required parameter (``region: str`` with no value)."""

_DUNDER = re.compile(r"__\w+__")


def validate_name(name: str, *, notebook: str | None = None) -> None:
    """Refuse a parameter name that is not a plain identifier.

    A name must be a Python identifier in Unicode NFKC normal form (Python folds ``ｃlass`` into
    ``class`` when it parses), must not be a keyword and must not be a dunder such as
    ``__import__``. Soft keywords (``match``, ``case``, ``type``, ``_``) are fine.
    """
    if type(name) is str and name in _VALID_NAMES:  # checked before (a sweep: every run)
        return
    where = f" for {notebook}" if notebook else ""
    reason: str | None = None
    if not isinstance(name, str):
        reason = f"it is a {type(name).__name__}, not a string"
        shown = repr(name)
    else:
        shown = _short(name)
        if not name:
            reason = "it is empty"
        elif not name.isidentifier():
            reason = "it is not an identifier (letters, digits and _, not starting with a digit)"
        elif unicodedata.normalize("NFKC", name) != name:
            normal = unicodedata.normalize("NFKC", name)
            reason = f"it is not in normal form; Python would read it as {normal!r}"
            if keyword.iskeyword(normal) or _DUNDER.fullmatch(normal):
                reason += ", which is reserved"
        elif keyword.iskeyword(name):
            reason = "it is a Python keyword"
        elif _DUNDER.fullmatch(name):
            reason = "names like __x__ are reserved"
    if reason is not None:
        raise InvalidParameterName(
            f"invalid parameter name {shown}{where}: {reason}",
            name=name if isinstance(name, str) else None,
            expected="an identifier that is not a keyword or a __dunder__",
            notebook=notebook,
        )
    if type(name) is str and len(_VALID_NAMES) < 4096:
        _VALID_NAMES.add(name)


#: names found valid (a name's validity never changes): checked once per process
_VALID_NAMES: set[str] = set()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _json_safe(value: Any) -> bool:
    """Whether ``value`` is strict JSON data (finite floats, string keys, no tuples of sets)."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_json_safe(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_safe(v) for k, v in value.items())
    return False


@dataclass(frozen=True)
class Parameter:
    """One parameter declared in the ``parameters`` cell.

    ``default`` is the Python value of the default literal; :data:`MISSING` for a required
    parameter (``region: str``); ``None`` when the default is ``None`` or is an expression that is
    not a literal (then ``default_source`` holds the expression as written).

    ``choices`` holds the values a ``Literal[...]`` annotation allows (None: any value of the
    type). A ``date`` parameter (annotated ``date`` or ``datetime.date``) takes an ISO date,
    ``YYYY-MM-DD``, and the notebook receives it as that text (as papermill passes dates).
    """

    name: str
    type: str
    default: Any
    default_source: str | None
    optional: bool
    required: bool
    help: str
    annotation: str | None
    line: int
    choices: tuple[Any, ...] | None = None
    #: annotated ``Secret`` (``from kiln import Secret``): its value is masked everywhere
    secret: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form; ``default`` is None when it cannot be JSON (see ``default_source``)."""
        default = self.default
        if default is MISSING or not _json_safe(default):
            default = None
        return {
            "name": self.name,
            "type": self.type,
            "default": default,
            "default_source": self.default_source,
            "optional": self.optional,
            "required": self.required,
            "help": self.help,
            "annotation": self.annotation,
            "choices": list(self.choices) if self.choices is not None else None,
            "secret": self.secret,
        }


@dataclass(frozen=True)
class ParameterSchema:
    """Every parameter of a notebook, in the order the ``parameters`` cell declares them.

    >>> schema = infer_schema(nb)            # doctest: +SKIP
    >>> "region" in schema, schema.names()   # doctest: +SKIP
    (True, ['date', 'region', 'n'])
    """

    parameters: tuple[Parameter, ...]
    cell_index: int | None
    language: str

    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def defaults(self) -> dict[str, Any]:
        """The literal defaults of the ``parameters`` cell (what a run gets for a name it
        is not given); expressions such as ``today()`` are left out."""
        return {
            p.name: p.default
            for p in self.parameters
            if p.default is not MISSING
            and (p.default is not None or p.default_source in (None, "None"))
        }

    def get(self, name: str) -> Parameter | None:
        for param in self.parameters:
            if param.name == name:
                return param
        return None

    def __contains__(self, name: object) -> bool:
        return any(p.name == name for p in self.parameters)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self.parameters)

    def to_json(self) -> dict[str, Any]:
        return {
            "cell_index": self.cell_index,
            "language": self.language,
            "parameters": [p.to_json() for p in self.parameters],
        }
