"""Infer a notebook's :class:`ParameterSchema` from its ``parameters`` cell, without running it.

Python cells are read with :mod:`ast` (and :mod:`tokenize` for the trailing ``# help`` comments);
other kernel languages get a small line-by-line reader (see :mod:`kiln.parameters._textparse`).
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from kiln.errors import ParameterError
from kiln.parameters._textparse import SYNTAXES, parse_text_cell
from kiln.parameters.schema import MISSING, Parameter, ParameterSchema

if TYPE_CHECKING:
    from nbformat import NotebookNode

__all__ = [
    "INJECTED_TAG",
    "PARAMETERS_TAG",
    "cell_source",
    "cell_tags",
    "find_tagged_cell",
    "infer_schema",
    "is_python",
    "notebook_language",
]

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"

# Annotation names (bare or as the head of a subscript) and the parameter type they mean.
_ANNOTATION_TYPES: dict[str, str] = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "list": "list",
    "List": "list",
    "tuple": "list",
    "Tuple": "list",
    "Sequence": "list",
    "MutableSequence": "list",
    "dict": "dict",
    "Dict": "dict",
    "Mapping": "dict",
    "MutableMapping": "dict",
    "Any": "any",
    "object": "any",
    "date": "date",
    "Secret": "str",
}


def cell_tags(cell: NotebookNode) -> list[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def find_tagged_cell(cells: Sequence[NotebookNode], tag: str) -> int | None:
    """Index of the first cell carrying ``tag``, or ``None``."""
    for index, cell in enumerate(cells):
        if tag in cell_tags(cell):
            return index
    return None


def cell_source(cell: NotebookNode) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def notebook_language(nb: Mapping[str, Any]) -> str:
    """The kernel language: ``kernelspec.language``, then ``language_info.name``, else python."""
    metadata = nb.get("metadata", {})
    for section, key in (("kernelspec", "language"), ("language_info", "name")):
        value = metadata.get(section, {}).get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return "python"


def is_python(language: str) -> bool:
    lang = language.lower()
    return lang.startswith("python") or lang == "ipython"


def infer_schema(nb: Mapping[str, Any], *, notebook: str | None = None) -> ParameterSchema:
    """Read the parameters the first ``parameters``-tagged cell declares.

    ``notebook`` (a path or name) only appears in error messages. A notebook without a
    ``parameters`` cell gets an empty schema with ``cell_index=None``.
    """
    language = notebook_language(nb)
    index = find_tagged_cell(nb.get("cells", []), PARAMETERS_TAG)
    if index is None:
        return ParameterSchema(parameters=(), cell_index=None, language=language)
    cell = nb["cells"][index]
    params: tuple[Parameter, ...] = ()
    if cell.get("cell_type") == "code":
        source = cell_source(cell)
        syntax = SYNTAXES.get(language.lower())
        if is_python(language):
            params = _parse_python(source, index=index, notebook=notebook)
        elif syntax is not None:
            params = _merge(parse_text_cell(source, syntax))
    return ParameterSchema(parameters=params, cell_index=index, language=language)


# -- Python -------------------------------------------------------------------------------------


def _parse_python(source: str, *, index: int, notebook: str | None) -> tuple[Parameter, ...]:
    text, tree = _parse_module(source, index=index, notebook=notebook)
    comments = _comments(text)
    found: list[Parameter] = []
    for stmt in tree.body:
        found.extend(_statement_parameters(stmt, text, comments))
    return _merge(found)


def _parse_module(source: str, *, index: int, notebook: str | None) -> tuple[str, ast.Module]:
    """Parse the cell; on failure retry with IPython magics (``%x``, ``!x``) blanked out."""
    try:
        return source, ast.parse(source)
    except (SyntaxError, ValueError):
        pass
    text = _strip_magics(source)
    try:
        return text, ast.parse(text)
    except SyntaxError as exc:
        where = f"cell {index}" + (f" of {notebook}" if notebook else "")
        line = exc.lineno or 0
        shown = text.splitlines()[line - 1].strip() if 0 < line <= len(text.splitlines()) else ""
        message = f"cannot read the parameters cell ({where}): {exc.msg} at line {line}"
        if shown:
            message += f": {shown}"
        raise ParameterError(message, expected="valid Python", notebook=notebook) from exc
    except ValueError as exc:  # null bytes in the source
        where = f"cell {index}" + (f" of {notebook}" if notebook else "")
        raise ParameterError(
            f"cannot read the parameters cell ({where}): {exc}", notebook=notebook
        ) from exc


def _strip_magics(source: str) -> str:
    # A magic becomes `pass` at the same indentation, so line numbers and blocks still hold.
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            line = line[: len(line) - len(stripped)] + "pass"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _comments(text: str) -> dict[int, str]:
    """Comment text by 1-based line; tokenize knows a ``#`` inside a string is not a comment."""
    comments: dict[int, str] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.COMMENT:
                comments[token.start[0]] = token.string.lstrip("#").strip()
    except (tokenize.TokenError, SyntaxError, ValueError):
        pass
    return comments


def _statement_parameters(
    stmt: ast.stmt, text: str, comments: dict[int, str]
) -> Iterable[Parameter]:
    help_text = comments.get(stmt.end_lineno or stmt.lineno, "")
    line = stmt.lineno
    if isinstance(stmt, ast.AnnAssign):
        if not isinstance(stmt.target, ast.Name):
            return []
        annotation = ast.get_source_segment(text, stmt.annotation)
        ptype, optional = _annotation_type(stmt.annotation)
        choices = _choices(stmt.annotation)
        secret = _names_secret(stmt.annotation)
        if stmt.value is None:
            return [
                Parameter(
                    name=stmt.target.id,
                    type=ptype,
                    default=MISSING,
                    default_source=None,
                    optional=optional,
                    required=True,
                    help=help_text,
                    annotation=annotation,
                    line=line,
                    choices=choices,
                    secret=secret,
                )
            ]
        base = Parameter(stmt.target.id, ptype, None, None, optional, False, help_text, None, line)
        base = replace(base, annotation=annotation, choices=choices, secret=secret)
        return [_with_value(base, stmt.value, text)]
    if isinstance(stmt, ast.Assign):
        found = []
        for target in stmt.targets:
            for name, value in _pairs(target, stmt.value):
                base = Parameter(name, "any", None, None, False, False, help_text, None, line)
                found.append(_with_value(base, value, text))
        return found
    return []


def _pairs(target: ast.expr, value: ast.expr) -> list[tuple[str, ast.expr]]:
    """(name, value expression) for each name a target binds; ``a, b = 1, 2`` pairs up."""
    if isinstance(target, ast.Name):
        return [(target.id, value)]
    if isinstance(target, (ast.Tuple, ast.List)):
        elements = target.elts
        if (
            isinstance(value, (ast.Tuple, ast.List))
            and len(value.elts) == len(elements)
            and not any(isinstance(e, ast.Starred) for e in [*elements, *value.elts])
        ):
            return [
                pair for t, v in zip(elements, value.elts, strict=True) for pair in _pairs(t, v)
            ]
        # Unpacking something we cannot see through: the names exist, their defaults are opaque.
        return [(e.id, value) for e in elements if isinstance(e, ast.Name)]
    return []


def _with_value(base: Parameter, node: ast.expr, text: str) -> Parameter:
    source = ast.get_source_segment(text, node)
    if base.type == "date":
        found = _date_call(node)
        if found is not None:  # start: date = date(2024, 1, 31): its ISO text
            return replace(base, default=found, default_source=source)
    try:
        value = _plain(ast.literal_eval(node))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        # An expression such as `date.today()`: kept as text, never evaluated.
        return replace(base, default=None, default_source=source)
    ptype = base.type if base.annotation is not None else _type_of(value)
    optional = base.optional or value is None
    return replace(base, type=ptype, default=value, default_source=source, optional=optional)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _type_of(value: Any) -> str:
    for cls, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if isinstance(value, cls):
            return name
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "any"


def _annotation_type(node: ast.expr) -> tuple[str, bool]:
    """(parameter type, whether None is accepted) for an annotation expression."""
    if _is_none(node):
        return "any", True
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:  # a string annotation: x: "int | None" = None
            return _annotation_type(ast.parse(node.value.strip(), mode="eval").body)
        except SyntaxError:
            return "any", False
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([node.left, node.right])
    if isinstance(node, ast.Subscript):
        head = _tail_name(node.value)
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if head == "Optional" and args:
            return _annotation_type(args[0])[0], True
        if head == "Union":
            return _union(args)
        if head == "Annotated" and args:
            return _annotation_type(args[0])
        if head == "Literal":
            return _literal_type(args)
        return _ANNOTATION_TYPES.get(head or "", "any"), False
    return _ANNOTATION_TYPES.get(_tail_name(node) or "", "any"), False


def _choices(node: ast.expr) -> tuple[Any, ...] | None:
    """The values of a ``Literal[...]`` annotation (also inside ``Optional``/``| None``), or
    None when the annotation is not one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return _choices(ast.parse(node.value.strip(), mode="eval").body)
        except SyntaxError:
            return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        sides = [_choices(node.left), _choices(node.right)]
        found = [side for side in sides if side is not None]
        return found[0] if len(found) == 1 else None
    if isinstance(node, ast.Subscript):
        head = _tail_name(node.value)
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if head in ("Optional", "Annotated") and args:
            return _choices(args[0])
        if head == "Union":
            found = [c for c in (_choices(a) for a in args) if c is not None]
            return found[0] if len(found) == 1 else None
        if head == "Literal":
            values = [a.value for a in args if isinstance(a, ast.Constant) and a.value is not None]
            if len(values) == len([a for a in args if not _is_none(a)]):
                return tuple(values)
    return None


def _date_call(node: ast.expr) -> str | None:
    """``date(2024, 1, 31)`` (or ``datetime.date(...)``) as ISO text; None for anything else."""
    import datetime

    if not (isinstance(node, ast.Call) and _tail_name(node.func) == "date") or node.keywords:
        return None
    try:
        parts = [ast.literal_eval(arg) for arg in node.args]
        return datetime.date(*parts).isoformat()
    except (ValueError, TypeError, SyntaxError):
        return None


def _names_secret(node: ast.expr) -> bool:
    """Whether an annotation is ``Secret`` (``kiln.Secret``, ``Secret | None``,
    ``Optional[Secret]``, ``"Secret"``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value.strip(), mode="eval").body
        except SyntaxError:
            return False
    return any(
        isinstance(part, (ast.Name, ast.Attribute)) and _tail_name(part) == "Secret"
        for part in ast.walk(node)
    )


def _union(members: list[ast.expr]) -> tuple[str, bool]:
    types: set[str] = set()
    optional = False
    for member in members:
        if _is_none(member):
            optional = True
            continue
        ptype, member_optional = _annotation_type(member)
        types.add(ptype)
        optional = optional or member_optional
    if types == {"int", "float"}:
        return "float", optional
    return (types.pop() if len(types) == 1 else "any"), optional


def _literal_type(args: list[ast.expr]) -> tuple[str, bool]:
    types = set()
    optional = False
    for arg in args:
        if _is_none(arg):
            optional = True
        elif isinstance(arg, ast.Constant):
            types.add(_type_of(arg.value))
        else:
            types.add("any")
    return (types.pop() if len(types) == 1 else "any"), optional


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _tail_name(node: ast.expr) -> str | None:
    """``List`` for ``List`` and for ``typing.List``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _merge(found: Iterable[Parameter]) -> tuple[Parameter, ...]:
    """One parameter per name: the last assignment wins (as when the cell runs), keeping the
    position of the first and an annotation given earlier (``x: int`` then ``x = 3``)."""
    merged: dict[str, Parameter] = {}
    for param in found:
        previous = merged.get(param.name)
        if previous is not None and param.required and not previous.required:
            # `x = 3` then `x: int`: the annotation does not unbind x.
            param = replace(
                previous,
                type=param.type,
                annotation=param.annotation,
                secret=param.secret,
                optional=param.optional or previous.optional,
                help=param.help or previous.help,
            )
        elif previous is not None and param.annotation is None and previous.annotation is not None:
            param = replace(
                param,
                type=previous.type,
                annotation=previous.annotation,
                secret=previous.secret,
                optional=previous.optional or param.optional,
                help=param.help or previous.help,
            )
        elif previous is not None:
            param = replace(param, help=param.help or previous.help)
        merged[param.name] = param
    return tuple(merged.values())
