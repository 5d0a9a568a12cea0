"""The entry points of a script ``kiln export`` writes, as code: ``main()`` and ``parse_args()``.

``main``'s signature keeps each parameter's annotation as the notebook wrote it
(``step: float = 0.1``, ``mode: Literal["fast", "full"] = "fast"``, ``when: datetime.date``);
without one, the type Kiln infers from the default. An annotation is evaluated when the script
is imported, before any cell has run, so:

- names from :mod:`typing` (``Literal``, ``Optional``...) are imported in the script's header;
- an annotation naming anything else that is not a builtin (``datetime.date``, ``Path``) is
  written as a string, or, when it holds strings itself, replaced by the inferred type.

``parse_args`` converts each option with the parameter's type (``type=float``), offers a
``Literal``'s values as ``choices``, and reads lists and dicts as JSON (or YAML).
"""

from __future__ import annotations

import ast
import builtins
import typing
from dataclasses import dataclass, field
from typing import Any, Final

from kiln.convert.magics import python_string
from kiln.parameters.schema import Parameter

__all__ = [
    "Annotations",
    "Names",
    "argument_parser",
    "example",
    "literal_default",
    "main_function",
    "needs_default",
]

_INDENT: Final = "    "
_TYPES: Final = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "list": "list[Any]",
    "dict": "dict[str, Any]",
    "any": "Any",
}
_BUILTINS: Final = frozenset(dir(builtins))
_TYPING: Final = frozenset(typing.__all__)


@dataclass
class Names:
    """Names the module defines, renamed when the notebook itself binds them."""

    main: str
    parse_args: str
    parameters: str
    default: str

    @classmethod
    def avoiding(cls, taken: set[str]) -> Names:
        def free(name: str, alternative: str) -> str:
            while name in taken:
                name, alternative = alternative, f"{alternative}_"
            return name

        return cls(
            free("main", "kiln_main"),
            free("parse_args", "kiln_parse_args"),
            free("_kiln_parameters", "_kiln_parameters_"),
            free("NOTEBOOK_DEFAULT", "KILN_NOTEBOOK_DEFAULT"),
        )


@dataclass
class Annotations:
    """The annotation of each parameter in ``main``'s signature, and the imports they need.

    ``lazy``: the notebook has ``from __future__ import annotations``, so nothing in an
    annotation is evaluated at import time and none needs quoting.
    """

    parameters: tuple[Parameter, ...]
    lazy: bool = False
    typing_names: set[str] = field(default_factory=set)
    typing_module: bool = False
    text: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for p in self.parameters:
            self.text[p.name] = self._written(p) or _inferred(p)

    def _written(self, p: Parameter) -> str | None:
        """The notebook's own annotation, made safe to evaluate at import time; or None."""
        node = _parse(p.annotation)
        if node is None or p.annotation is None:
            return None
        text = p.annotation if "\n" not in p.annotation else ast.unparse(node)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return text  # a string already: `x: "int" = 1`
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        from_typing = {n for n in names if n in _TYPING and n not in _BUILTINS}
        others = names - _BUILTINS - from_typing - {"typing"}
        quoted = bool(others) and not self.lazy
        if quoted and any(
            isinstance(n, ast.Constant) and isinstance(n.value, str) for n in ast.walk(node)
        ):
            return None  # a string inside a string annotation reads as a name to type checkers
        self.typing_names |= from_typing
        self.typing_module = self.typing_module or "typing" in names
        return python_string(text) if quoted else text


def _parse(annotation: str | None) -> ast.expr | None:
    if annotation is None:
        return None
    try:
        return ast.parse(annotation.strip(), mode="eval").body
    except SyntaxError:
        return None


def _inferred(p: Parameter) -> str:
    base = _TYPES.get(p.type, "Any")
    return f"{base} | None" if p.optional and base != "Any" else base


def literal_default(p: Parameter) -> str | None:
    """The default as written, when it is a one-line literal of an immutable type."""
    source = p.default_source
    if p.required or source is None or "\n" in source or p.type in ("list", "dict"):
        return None
    try:
        value = ast.literal_eval(source)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return source if not isinstance(value, list | dict | set) else None


def needs_default(p: Parameter) -> bool:
    return not p.required and literal_default(p) is None


def main_function(
    parameters: tuple[Parameter, ...], annotations: Annotations, own: Names, is_async: bool
) -> str:
    """``def main(*, region: str = "EU", ...)``: runs the cells with these parameters."""
    args = []
    for p in parameters:
        annotated = f"{p.name}: {annotations.text[p.name]}"
        if p.required:
            args.append(annotated)
        else:
            args.append(f"{annotated} = {literal_default(p) or own.default}")
    signature = f"*, {', '.join(args)}" if args else ""
    call = ["_run_cells()"]
    if parameters:
        pairs = [f"{python_string(p.name)}: {p.name}" for p in parameters]
        given = ["given = {" + ", ".join(pairs) + "}"]
        if len(given[0]) > 90:
            given = ["given = {", *(f"{_INDENT}{pair}," for pair in pairs), "}"]
        argument = "given"
        if any(needs_default(p) for p in parameters):
            argument = f"{{k: v for k, v in given.items() if v is not {own.default}}}"
        call = [*given, f"_run_cells({argument})"]
    if is_async:
        call[-1] = f"asyncio.run({call[-1]})"
    doc = ['"""Run the notebook\'s code cells.']
    if parameters:
        doc = [
            '"""Run the notebook\'s code with these parameters (the notebook\'s defaults if left '
            "out)."
        ]
    described = [p for p in parameters if p.help]
    if described:
        doc.append("")
        doc.extend(f"{p.name}: {p.help}".replace('"""', "'''") for p in described)
    doc.append('"""')
    body = "\n".join(_INDENT + line if line else "" for line in [*doc, *call])
    head = f"def {own.main}({signature}) -> None:"
    if len(head) > 100 and args:
        head = f"def {own.main}(\n{_INDENT}*,\n" + "".join(f"{_INDENT}{a},\n" for a in args)
        head += ") -> None:"
    return f"{head}\n{body}\n"


def example(p: Parameter) -> str:
    """``--region EU``: an option as a usage example, with the default where it is simple."""
    if p.type == "bool":
        return f"--no-{_option(p.name)}" if p.default is True else f"--{_option(p.name)}"
    value = p.default
    simple = isinstance(value, int | float | str) and 0 < len(str(value)) < 20
    shown = str(value) if simple and " " not in str(value) else p.name.upper()
    return f"--{_option(p.name)} {shown}"


def _option(name: str) -> str:
    option = name.replace("_", "-")
    return f"{option}-value" if option in ("help", "h") else option


def argument_parser(parameters: tuple[Parameter, ...], own: Names, description: str) -> str:
    """``def parse_args(argv)``: the command line as keyword arguments for ``main``."""
    lines = [
        f"def {own.parse_args}(argv: list[str] | None = None) -> dict[str, Any]:",
        f'{_INDENT}"""The command line as keyword arguments for {own.main}(); an option not '
        'given keeps its default."""',
        f"{_INDENT}parser = argparse.ArgumentParser(",
        f"{_INDENT * 2}description={python_string(description)},",
        f"{_INDENT * 2}argument_default=argparse.SUPPRESS,",
        f"{_INDENT})",
    ]
    for p in parameters:
        lines.append(f"{_INDENT}parser.add_argument(")
        for item in _argument(p):
            lines.append(f"{_INDENT * 2}{item},")
        lines.append(f"{_INDENT})")
    lines.append(f"{_INDENT}return vars(parser.parse_args(argv))")
    return "\n".join(lines) + "\n"


def _argument(p: Parameter) -> list[str]:
    flags = [f"--{_option(p.name)}"]
    if "_" in p.name:
        flags.append(f"--{p.name}")
    items = [", ".join(python_string(f) for f in flags), f"dest={python_string(p.name)}"]
    if p.type == "bool":
        items.append("action=argparse.BooleanOptionalAction")
    elif p.type in ("int", "float"):
        items.append(f"type=_optional({p.type})" if p.optional else f"type={p.type}")
    elif p.type in ("list", "dict"):
        items.extend([f"type=_data({p.type})", 'metavar="JSON"'])
    elif p.type == "any":
        items.append("type=_any_value")
    choices = _choices(p)
    if choices is not None:
        items.append("choices=[" + ", ".join(_literal(c) for c in choices) + "]")
    if p.required:
        items.append("required=True")
    default = "required" if p.required else f"default: {p.default_source}"
    if p.optional and p.type in ("int", "float"):
        default += "; 'none' for None"
    text = f"{p.help} ({default})" if p.help else f"({default})"
    items.append(f"help={python_string(text.replace('%', '%%'))}")
    return items


def _choices(p: Parameter) -> list[Any] | None:
    """The values of a ``Literal[...]`` annotation, when they are all of the parameter's type."""
    node = _parse(p.annotation)
    if not (isinstance(node, ast.Subscript) and _tail(node.value) == "Literal"):
        return None
    args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
    kinds = {"str": str, "int": int, "float": float}
    kind = kinds.get(p.type)
    values = [a.value for a in args if isinstance(a, ast.Constant)]
    if kind is None or len(values) != len(args) or any(type(v) is not kind for v in values):
        return None
    return values


def _tail(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def _literal(value: Any) -> str:
    return python_string(value) if isinstance(value, str) else repr(value)
