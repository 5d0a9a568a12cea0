"""A notebook's parameter form: one input per parameter, of the parameter's type, and the
posted form read back into parameter values as text, checked by the same rules as
``kiln run -p`` (each field on its own, so every wrong field gets its message)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kiln.errors import ParameterError

if TYPE_CHECKING:
    from kiln.parameters.schema import Parameter, ParameterSchema

_WIDGETS = {
    "int": "number",
    "float": "number",
    "date": "date",
    "list": "textarea",
    "dict": "textarea",
}


@dataclass
class Field:
    name: str
    label: str
    kind: str
    widget: str
    value: str = ""
    checked: bool = False
    options: list[str] = field(default_factory=list)
    required: bool = False
    optional: bool = False
    help: str = ""
    placeholder: str = ""
    step: str = "1"
    error: str = ""


def as_text(value: Any) -> str:
    """A value as its form field shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)  # JSON is YAML's flow style
    return str(value)


def fields(
    schema: ParameterSchema,
    *,
    given: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    errors: Mapping[str, str] | None = None,
) -> list[Field]:
    """The form's fields: values ``given`` (a posted form, a query string) over ``defaults``
    (kiln.yaml's) over the parameters cell's own."""
    given = given or {}
    defaults = defaults or {}
    errors = errors or {}
    out = []
    for p in schema:
        if p.name in given:
            value = given[p.name]
        elif p.name in defaults:
            value = as_text(defaults[p.name])
        elif p.required or (p.default is None and p.default_source not in (None, "None")):
            value = ""
        else:
            value = as_text(p.default)
        out.append(_field(p, value, errors.get(p.name, "")))
    return out


def _field(p: Parameter, value: str, error: str) -> Field:
    kind = p.type + (" or None" if p.optional and p.type != "any" else "")
    f = Field(
        name=p.name,
        label=p.name,
        kind=kind,
        widget=_WIDGETS.get(p.type, "text"),
        value=value,
        required=p.required,
        optional=p.optional,
        help=p.help,
        error=error,
    )
    if p.choices is not None:
        f.widget = "select"
        f.options = [as_text(c) for c in p.choices]
        f.kind = "one of " + ", ".join(f.options)
    elif p.type == "bool":
        f.widget = "checkbox"
        f.checked = value.strip().lower() in ("true", "yes", "on", "1")
    elif p.type == "float":
        f.step = "any"
    elif p.type in ("list", "dict"):
        f.placeholder = "[1, 2]" if p.type == "list" else "{a: 1}"
    if p.default_source and p.default is None and p.default_source != "None" and not value:
        f.placeholder = f"default: {p.default_source}"
    if p.type == "int" and f.widget == "number" and p.annotation is None:
        f.step = "any"  # an int only by its literal takes a float, as the CLI does
    return f


def read(
    schema: ParameterSchema, form: Mapping[str, str]
) -> tuple[dict[str, str | None], dict[str, str]]:
    """(parameter values as text, or None, errors by field) from a form: see :func:`split`.

    An empty field leaves the parameter to its default (None for an optional select left on
    "None"); an empty required one is an error; a ``str`` takes the text as typed."""
    from kiln.parameters import CliValue, resolve_parameters
    from kiln.parameters.schema import ParameterSchema

    values: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    for p in schema:
        text = form.get(p.name)
        if text is None:
            if p.type == "bool" and p.choices is None:
                text = "false"
            elif p.required:
                errors[p.name] = f"{p.name} is required"
                continue
            else:
                continue
        if p.type != "str" or p.choices is not None:
            text = text.strip()
        if not text and (p.type != "str" or p.choices is not None):
            if p.required:
                errors[p.name] = f"{p.name} is required"
            elif p.optional and p.choices is not None:
                values[p.name] = None
            continue
        if not text and p.required:
            errors[p.name] = f"{p.name} is required"
            continue
        one = ParameterSchema((p,), cell_index=schema.cell_index, language=schema.language)
        try:
            resolve_parameters(one, {p.name: CliValue(text)})
        except ParameterError as exc:
            errors[p.name] = exc.message
            continue
        values[p.name] = text
    return values, errors


def split(values: Mapping[str, str | None]) -> tuple[dict[str, Any], dict[str, str]]:
    """(``parameters``, ``parameters_text``) of a run submission from :func:`read`'s values."""
    return (
        {k: None for k, v in values.items() if v is None},
        {k: v for k, v in values.items() if v is not None},
    )
