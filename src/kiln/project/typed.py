"""Typed reading of YAML: dataclasses and type hints in, checked values and JSON Schema out.

The project file's sections are plain frozen dataclasses whose type hints say what each key
holds. :func:`convert` checks a located YAML value (:mod:`kiln.yamlio`) against such a type and
builds it, with an error that names the key path, its line and column, what was expected and,
for an unknown key, the nearest valid one. :func:`json_schema` turns the same types into JSON
Schema for editors. One description, two uses, so the schema can never drift from the checks.

Supported: ``str``, ``int``, ``float``, ``bool``, ``Any``, ``Literal[...]``, ``list[T]``,
``dict[str, T]``, ``T | None``, unions told apart by YAML kind (text, number, list, mapping),
nested dataclasses, and units (:data:`Duration`, :data:`Size`) that accept ``90``, ``"10m"``
or ``"512M"``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from kiln.units import DURATION_HELP, SIZE_HELP, parse_duration, parse_size
from kiln.yamlio import Mark, YamlError, YamlMap


@dataclass(frozen=True)
class Unit:
    """Marks a number that may be written with a unit (``Annotated[float, Unit("duration")]``)."""

    kind: Literal["duration", "size"]


Duration = Annotated[float, Unit("duration")]
Size = Annotated[int, Unit("size")]

#: where each field of a built dataclass was written (set on the instance by :func:`convert`)
_MARKS = "__kiln_marks__"


class Invalid(YamlError):
    """A value of the project file that does not fit its declared type."""

    def __init__(self, origin: str, path: str, problem: str, mark: Mark | None) -> None:
        self.path = path
        super().__init__(origin, f"{path}: {problem}" if path else problem, mark)


def key_of(f: dataclasses.Field[Any]) -> str:
    """The YAML key of a dataclass field (``metadata={"key": "from"}`` when it is a keyword)."""
    return str(f.metadata.get("key", f.name))


def help_of(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("help", ""))


def described(text: str, **extra: Any) -> dict[str, Any]:
    """A section field's metadata: its ``help`` (shown by ``kiln config schema`` and in
    errors) and any ``extra`` (``key="from"`` for a field named after a keyword)."""
    return {"help": text, **extra}


def marks(obj: Any) -> Mapping[str, Mark]:
    """Field name -> where it was written, for a dataclass built by :func:`convert`."""
    found: Mapping[str, Mark] = getattr(obj, _MARKS, {})
    return found


class Reader:
    """Checks values of one file (``origin``) against types."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self._hints: dict[type, dict[str, Any]] = {}

    def fail(self, path: str, problem: str, mark: Mark | None) -> Invalid:
        return Invalid(self.origin, path, problem, mark)

    def convert(self, value: Any, tp: Any, path: str, mark: Mark | None) -> Any:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            base, *extra = typing.get_args(tp)
            unit = next((e for e in extra if isinstance(e, Unit)), None)
            if unit is not None:
                return self._unit(value, unit, path, mark)
            return self.convert(value, base, path, mark)
        if tp is Any:
            return value
        if origin in (Union, types.UnionType):
            return self._union(value, typing.get_args(tp), path, mark)
        if origin is Literal:
            choices = typing.get_args(tp)
            if value not in choices or isinstance(value, bool) != any(
                isinstance(c, bool) for c in choices
            ):
                shown = ", ".join(str(c) for c in choices)
                raise self.fail(path, f"expected one of {shown}; got {value!r}", mark)
            return value
        if origin is list:
            return self._list(value, typing.get_args(tp)[0], path, mark)
        if origin in (dict, Mapping, typing.get_origin(Mapping[str, Any])):
            return self._dict(value, typing.get_args(tp)[1], path, mark)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self.dataclass(value, tp, path, mark)
        return self._plain(value, tp, path, mark)

    def _plain(self, value: Any, tp: Any, path: str, mark: Mark | None) -> Any:
        if tp is bool:
            if isinstance(value, bool):
                return value
            raise self.fail(path, f"expected true or false; got {_shown(value)}", mark)
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise self.fail(path, f"expected a whole number; got {_shown(value)}", mark)
        if tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            raise self.fail(path, f"expected a number; got {_shown(value)}", mark)
        if tp is str:
            if isinstance(value, str):
                return value
            raise self.fail(path, f"expected text; got {_shown(value)}", mark)
        raise TypeError(f"the project file schema uses an unsupported type {tp!r}")

    def _unit(self, value: Any, unit: Unit, path: str, mark: Mark | None) -> Any:
        parse: Callable[[Any], Any] = parse_duration if unit.kind == "duration" else parse_size
        try:
            return parse(value)
        except ValueError as exc:
            raise self.fail(path, str(exc), mark) from None

    def _union(self, value: Any, options: tuple[Any, ...], path: str, mark: Mark | None) -> Any:
        if value is None and type(None) in options:
            return None
        candidates = [o for o in options if o is not type(None) and _accepts_kind(o, value)]
        if not candidates:
            wanted = " or ".join(_describe(o) for o in options if o is not type(None))
            raise self.fail(path, f"expected {wanted}; got {_shown(value)}", mark)
        errors: list[Invalid] = []
        for option in candidates:
            try:
                return self.convert(value, option, path, mark)
            except Invalid as exc:
                errors.append(exc)
        raise errors[0]

    def _list(self, value: Any, item: Any, path: str, mark: Mark | None) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list; got {_shown(value)}", mark)
        item_marks = getattr(value, "marks", [])
        return [
            self.convert(v, item, f"{path}[{i}]", item_marks[i] if i < len(item_marks) else mark)
            for i, v in enumerate(value)
        ]

    def _dict(self, value: Any, item: Any, path: str, mark: Mark | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping; got {_shown(value)}", mark)
        key_marks = getattr(value, "marks", {})
        out = YamlMap()
        out.mark = getattr(value, "mark", None) or mark
        for key, v in value.items():
            at = key_marks.get(key, mark)
            if not isinstance(key, str):
                raise self.fail(path, f"keys must be text; got {_shown(key)}", at)
            out[key] = self.convert(v, item, _join(path, key), at)
            if at is not None:
                out.marks[key] = at
        return out

    def dataclass(self, value: Any, cls: type, path: str, mark: Mark | None) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping; got {_shown(value)}", mark)
        fields = {key_of(f): f for f in dataclasses.fields(cls) if f.init}
        hints = self._hints.get(cls)
        if hints is None:
            hints = self._hints[cls] = typing.get_type_hints(cls, include_extras=True)
        key_marks = getattr(value, "marks", {})
        kwargs: dict[str, Any] = {}
        where: dict[str, Mark] = {}
        for key, item in value.items():
            at = key_marks.get(key, mark)
            f = fields.get(key) if isinstance(key, str) else None
            if f is None:
                raise self.fail(_join(path, str(key)), _unknown(str(key), list(fields)), at)
            kwargs[f.name] = self.convert(item, hints[f.name], _join(path, key), at)
            if at is not None:
                where[f.name] = at
        missing = [
            key
            for key, f in fields.items()
            if f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise self.fail(
                path, f"missing required key {missing[0]!r}", getattr(value, "mark", mark)
            )
        try:
            obj = cls(**kwargs)
        except (ValueError, TypeError) as exc:
            raise self.fail(path, str(exc), getattr(value, "mark", mark)) from None
        object.__setattr__(obj, _MARKS, where)
        return obj


def _join(path: str, key: Any) -> str:
    text = str(key)
    if not text.isidentifier():
        return f'{path}["{text}"]' if path else f'["{text}"]'
    return f"{path}.{text}" if path else text


def _unknown(key: str, known: list[str]) -> str:
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"unknown key {key!r}{hint} (expected one of: {', '.join(known)})"


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(tp: Any) -> set[str]:
    """The YAML kinds a type accepts: text, number, bool, list, mapping, null, any."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *extra = typing.get_args(tp)
        if any(isinstance(e, Unit) for e in extra):
            return {"text", "number"}
        return _kind(base)
    if tp is Any:
        return {"any"}
    if origin in (Union, types.UnionType):
        return set().union(*(_kind(o) for o in typing.get_args(tp)))
    if origin is Literal:
        return {_value_kind(v) for v in typing.get_args(tp)}
    if origin is list:
        return {"list"}
    if origin in (dict, Mapping) or (dataclasses.is_dataclass(tp) and isinstance(tp, type)):
        return {"mapping"}
    if tp is type(None):
        return {"null"}
    return {{bool: "bool", int: "number", float: "number", str: "text"}.get(tp, "any")}


def _value_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return "null" if value is None else "any"


def _accepts_kind(tp: Any, value: Any) -> bool:
    kinds = _kind(tp)
    return "any" in kinds or _value_kind(value) in kinds


def _describe(tp: Any) -> str:
    kinds = _kind(tp)
    names = {
        "text": "text",
        "number": "a number",
        "bool": "true or false",
        "list": "a list",
        "mapping": "a mapping",
        "null": "nothing",
        "any": "a value",
    }
    return " or ".join(names[k] for k in sorted(kinds))


# -- JSON Schema -------------------------------------------------------------------------------


class SchemaBuilder:
    """JSON Schema (draft 2020-12) for the same types :class:`Reader` checks."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def of(self, tp: Any) -> dict[str, Any]:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            base, *extra = typing.get_args(tp)
            unit = next((e for e in extra if isinstance(e, Unit)), None)
            if unit is None:
                return self.of(base)
            if unit.kind == "duration":
                return {
                    "anyOf": [
                        {"type": "number", "exclusiveMinimum": 0},
                        {"type": "string", "pattern": r"^\s*(\d+(\.\d*)?|\.\d+)\s*([a-zA-Z]+.*)?$"},
                    ],
                    "description": DURATION_HELP,
                }
            return {
                "anyOf": [
                    {"type": "integer", "minimum": 0},
                    {"type": "string", "pattern": r"^\s*\d+(\.\d*)?\s*[kKmMgGtT]?(i?[bB])?\s*$"},
                ],
                "description": SIZE_HELP,
            }
        if tp is Any:
            return {}
        if origin in (Union, types.UnionType):
            return {"anyOf": [self.of(o) for o in typing.get_args(tp)]}
        if origin is Literal:
            return {"enum": list(typing.get_args(tp))}
        if origin is list:
            return {"type": "array", "items": self.of(typing.get_args(tp)[0])}
        if origin in (dict, Mapping):
            return {"type": "object", "additionalProperties": self.of(typing.get_args(tp)[1])}
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self.dataclass(tp)
        simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
        if tp is type(None):
            return {"type": "null"}
        return {"type": simple[tp]}

    def dataclass(self, cls: type, *, inline: bool = False) -> dict[str, Any]:
        name = cls.__name__
        if not inline and name in self.defs:
            return {"$ref": f"#/$defs/{name}"}
        if not inline:
            self.defs[name] = {}  # a placeholder while building: a type may refer to itself
        hints = typing.get_type_hints(cls, include_extras=True)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            prop = dict(self.of(hints[f.name]))
            if help_of(f):
                prop["description"] = help_of(f)
            if f.default is not dataclasses.MISSING and f.default is not None:
                prop["default"] = f.default
            properties[key_of(f)] = prop
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(key_of(f))
        schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        if doc:
            schema["description"] = " ".join(doc.split())
        if required:
            schema["required"] = required
        if inline:
            return schema
        self.defs[name] = schema
        return {"$ref": f"#/$defs/{name}"}
