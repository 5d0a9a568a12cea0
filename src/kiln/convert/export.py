"""``kiln export``: a notebook as a plain Python module with a typed command-line interface.

The module it writes has three parts:

- ``main(*, region: str = "EU", n: int = 3)``: one keyword argument per parameter of the cell
  tagged ``parameters``, typed from Kiln's parameter schema;
- ``_run_cells(parameters)``: the notebook's code cells in order. It declares ``global`` every
  name the cells bind, so the code runs in the module's namespace exactly as in Jupyter (see
  :mod:`kiln.convert.pyscope`). The parameters cell runs as written, then the values given to
  ``main`` replace its defaults -- what Kiln's injected-parameters cell does in a run;
- ``parse_args(argv)``: argparse options built from the schema (``--region EU --n 3``; bools as
  ``--flag/--no-flag``; lists and dicts as JSON, or YAML when PyYAML is installed; required
  parameters required), and ``if __name__ == "__main__": main(**parse_args())``.

Markdown and raw cells become comments; IPython syntax is translated or flagged by
:mod:`kiln.convert.magics`. A cell's last expression is evaluated but not displayed. The
script needs only the standard library plus whatever the notebook itself imports.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kiln.convert.magics import Issue, python_string, translate_cell
from kiln.convert.pyscope import ScopedCode, indent_code, scope_cell
from kiln.errors import UsageError
from kiln.parameters.schema import Parameter

__all__ = ["MARKER", "ExportResult", "export_jupytext", "export_script"]

#: the line that marks a file as written by ``kiln export`` (safe to overwrite)
MARKER: Final = "# kiln export: generated from"
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


@dataclass(frozen=True)
class ExportResult:
    """The module's text, the parameters it takes, and what could not be translated."""

    text: str
    parameters: tuple[Parameter, ...]
    issues: list[Issue] = field(default_factory=list)
    entry: str = "main"

    @property
    def warnings(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.warning]


@dataclass
class _Cell:
    index: int
    kind: str
    lines: list[str]
    scoped: ScopedCode | None = None
    imports: set[str] = field(default_factory=set)
    helpers: set[str] = field(default_factory=set)


def export_script(
    nb: Mapping[str, Any],
    *,
    source_name: str = "notebook.ipynb",
    script_name: str = "notebook.py",
) -> ExportResult:
    """The notebook as a Python module (text). ``source_name`` and ``script_name`` (the
    notebook's and the script's file names) appear in the module's docstring."""
    from kiln.parameters import infer_schema
    from kiln.parameters.infer import is_python, notebook_language

    language = notebook_language(nb)
    if not is_python(language):
        raise UsageError(
            f"{source_name} is a {language} notebook; kiln export writes Python modules "
            "(use --to with a jupytext format such as md or R:percent)"
        )
    schema = infer_schema(nb, notebook=source_name)
    cells: Sequence[Mapping[str, Any]] = nb.get("cells") or []
    # Two passes: `!cmd $name` expands notebook names, which are known after a first pass.
    first = [_code_cell(cells, i, frozenset(), []) for i in range(len(cells))]
    names = set(schema.names())
    for cell in first:
        if cell.scoped is not None:
            names |= cell.scoped.names
    issues: list[Issue] = []
    built = [_code_cell(cells, i, frozenset(names), issues) for i in range(len(cells))]
    module = _Module(nb, source_name, script_name, schema.parameters, schema.cell_index)
    return module.assemble(built, issues)


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _tags(cell: Mapping[str, Any]) -> list[str]:
    tags = (cell.get("metadata") or {}).get("tags") or []
    return [t for t in tags if isinstance(t, str)]


def _comment(text: str) -> list[str]:
    return [f"# {line}".rstrip() for line in text.splitlines()]


def _code_cell(
    cells: Sequence[Mapping[str, Any]], index: int, names: frozenset[str], issues: list[Issue]
) -> _Cell:
    cell = cells[index]
    kind = str(cell.get("cell_type", "code"))
    source = _source(cell)
    if kind != "code":
        return _Cell(index, kind, _comment(source))
    tags = _tags(cell)
    if "injected-parameters" in tags:
        note = "parameters injected by an earlier run: skipped, main()'s arguments replace them"
        return _Cell(index, "skipped", [f"# {note}"])
    if "skip-execution" in tags:
        return _Cell(index, "skipped", ["# tagged skip-execution: not run", *_comment(source)])
    if not source.strip():
        return _Cell(index, "empty", [])
    translation = translate_cell(source, index=index, names=names)
    issues.extend(translation.issues)
    if not translation.valid:
        return _Cell(index, "invalid", translation.code.splitlines())
    problem = _compile_problem(translation.code)
    scoped = scope_cell(translation.code) if problem is None else None
    if scoped is not None and scoped.problems:
        problem = "; ".join(scoped.problems)
    if problem is not None or scoped is None:
        issues.append(Issue(index, f"{problem}; left as a comment", warning=True))
        return _Cell(index, "invalid", ["# kiln export: not run:", *_comment(translation.code)])
    lines = translation.code.splitlines()
    return _Cell(index, "code", lines, scoped, translation.imports, translation.helpers)


def _compile_problem(code: str) -> str | None:
    """Why a cell would fail to compile at a notebook's top level, or None."""
    try:
        compile(code, "<cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except SyntaxError as exc:
        return f"not valid Python ({exc.msg} at line {exc.lineno})"
    except ValueError as exc:  # null bytes
        return f"not valid Python ({exc})"
    return None


# -- the module ---------------------------------------------------------------------------------


@dataclass
class _Names:
    """Names the module defines, renamed when the notebook itself binds them."""

    main: str
    parse_args: str
    parameters: str
    default: str

    @classmethod
    def avoiding(cls, taken: set[str]) -> _Names:
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
class _Module:
    """What the module's parts are built from."""

    nb: Mapping[str, Any]
    source_name: str
    script_name: str
    parameters: tuple[Parameter, ...]
    parameters_cell: int | None

    def assemble(self, cells: list[_Cell], issues: list[Issue]) -> ExportResult:
        code = [c for c in cells if c.scoped is not None]
        bound = {n for c in code if c.scoped is not None for n in c.scoped.names}
        declared = sorted(bound | {p.name for p in self.parameters})
        own = _Names.avoiding(bound)
        if own.main != "main":
            issues.append(Issue(-1, f"the notebook binds main: the entry is {own.main}", False))
        imports = {m for c in code for m in c.imports}
        helpers = {h for c in code for h in c.helpers}
        if any(c.scoped is not None and c.scoped.star_import for c in code):
            helpers.add("import_star")
        is_async = any(c.scoped is not None and c.scoped.is_async for c in code)
        if is_async:
            imports.add("asyncio")
        display = "display" not in bound and any(
            re.search(r"\bdisplay\(", "\n".join(c.lines)) for c in code
        )
        parts = [
            self._header(own),
            _imports(imports, self.parameters),
            _helpers(helpers, self.parameters, display, own),
            _main(self.parameters, own, is_async),
            _body(cells, declared, self.parameters_cell, own, is_async),
            _parse_args(self.parameters, own, self._title()),
            f'if __name__ == "__main__":\n{_INDENT}{own.main}(**{own.parse_args}())\n',
        ]
        text = "\n\n".join(part.rstrip("\n") + "\n" for part in parts[1:] if part.strip())
        text = f"{parts[0]}\n{text}"
        compile(text, self.script_name, "exec", dont_inherit=True)  # a bug must not ship
        return ExportResult(text, self.parameters, issues, own.main)

    def _title(self) -> str:
        for cell in self.nb.get("cells") or []:
            if cell.get("cell_type") == "markdown":
                match = re.search(r"^#+\s+(.+?)\s*#*$", _source(cell), re.MULTILINE)
                if match:
                    return match.group(1)
        return self.source_name

    def _header(self, own: _Names) -> str:
        title = self._title().replace('"""', "'''").replace("\\", "/")
        usage = f"python {self.script_name}"
        for p in self.parameters:
            example = _example(p)
            if len(usage) + len(example) > 90:
                usage += " ..."
                break
            usage += f" {example}"
        call = ", ".join(f"{p.name}=..." for p in self.parameters[:3])
        return (
            "#!/usr/bin/env python3\n"
            f"{MARKER} {self.source_name}; edit the notebook, then export again.\n"
            f'"""{title}\n\n'
            f"Exported by kiln export from {self.source_name}. Run it with its parameters as "
            f"options::\n\n    {usage}\n\n"
            f"or import it and call ``{own.main}({call})``.\n\nThe notebook's code cells run in "
            "order in ``_run_cells``, in this module's\nnamespace, as they do in Jupyter.\n"
            '"""\n'
        )


def _imports(imports: set[str], parameters: tuple[Parameter, ...]) -> str:
    modules = {"argparse"} | imports
    if any(p.type in ("list", "dict") for p in parameters):
        modules.add("json")
    lines = [f"import {m}" for m in sorted(modules)]
    return "\n".join(lines) + "\nfrom collections.abc import Callable\nfrom typing import Any\n"


def _helpers(
    helpers: set[str], parameters: tuple[Parameter, ...], display: bool, own: _Names
) -> str:
    from kiln.convert import _templates as t

    blocks = []
    if any(_needs_default(p) for p in parameters):
        blocks.append(t.NOTEBOOK_DEFAULT.replace("NOTEBOOK_DEFAULT", own.default))
    types = {p.type for p in parameters}
    if any(p.optional and p.type in ("int", "float") for p in parameters):
        blocks.append(t.OPTIONAL)
    if types & {"list", "dict"}:
        blocks.append(t.DATA)
    if "any" in types:
        blocks.append(t.ANY_VALUE)
    if "clock" in helpers:
        blocks.append(t.CLOCK)
    if "import_star" in helpers:
        blocks.append(t.IMPORT_STAR)
    if display:
        blocks.append(t.DISPLAY)
    return "\n\n".join(b.strip("\n") + "\n" for b in blocks)


def _annotation(p: Parameter) -> str:
    base = _TYPES.get(p.type, "Any")
    return f"{base} | None" if p.optional and base != "Any" else base


def _literal_default(p: Parameter) -> str | None:
    """The default as written, when it is a one-line literal of an immutable type."""
    source = p.default_source
    if p.required or source is None or "\n" in source or p.type in ("list", "dict"):
        return None
    try:
        value = ast.literal_eval(source)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return source if not isinstance(value, list | dict | set) else None


def _needs_default(p: Parameter) -> bool:
    return not p.required and _literal_default(p) is None


def _main(parameters: tuple[Parameter, ...], own: _Names, is_async: bool) -> str:
    args = []
    for p in parameters:
        if p.required:
            args.append(f"{p.name}: {_annotation(p)}")
        else:
            default = _literal_default(p) or own.default
            args.append(f"{p.name}: {_annotation(p)} = {default}")
    signature = f"*, {', '.join(args)}" if args else ""
    pairs = [f"{python_string(p.name)}: {p.name}" for p in parameters]
    given = ["given = {" + ", ".join(pairs) + "}"]
    if len(given[0]) > 90:
        given = ["given = {", *(f"{_INDENT}{pair}," for pair in pairs), "}"]
    argument = "given"
    if any(_needs_default(p) for p in parameters):
        argument = f"{{k: v for k, v in given.items() if v is not {own.default}}}"
    run = f"_run_cells({argument})"
    call = [*given, f"asyncio.run({run})" if is_async else run]
    doc = [
        '"""Run the notebook\'s code with these parameters (the notebook\'s defaults if left out).'
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


def _body(
    cells: list[_Cell],
    declared: list[str],
    parameters_cell: int | None,
    own: _Names,
    is_async: bool,
) -> str:
    keyword = "async def" if is_async else "def"
    lines = [
        f"{keyword} _run_cells({own.parameters}: dict[str, Any]) -> None:",
        f'{_INDENT}"""The notebook\'s code cells, in order, in this module\'s namespace."""',
    ]
    lines.extend(_globals(declared))
    if parameters_cell is None and declared:
        lines.append(f"{_INDENT}globals().update({own.parameters})")
    for cell in cells:
        if cell.kind == "empty":
            continue
        label = "parameters" if cell.index == parameters_cell else cell.kind
        lines.append("")
        lines.append(f"{_INDENT}# -- cell {cell.index} ({label}) --")
        code = "\n".join(cell.lines) + "\n" if cell.lines else ""
        if cell.scoped is not None:
            lines.append(indent_code(cell.scoped.code, _INDENT).rstrip("\n"))
        elif code:
            lines.append(indent_code(code, _INDENT).rstrip("\n"))
        if cell.index == parameters_cell:
            lines.append(
                f"{_INDENT}# the values given to main() replace the defaults above, as the cell "
                "Kiln injects in a run does"
            )
            lines.append(f"{_INDENT}globals().update({own.parameters})")
    if not any(c.scoped is not None for c in cells) and parameters_cell is None:
        lines.append(f"{_INDENT}pass")
    return "\n".join(lines) + "\n"


def _globals(names: list[str]) -> list[str]:
    """``global`` statements (they cannot wrap in parentheses), under 100 characters each."""
    lines: list[str] = []
    current: list[str] = []
    for name in names:
        if current and len(_INDENT + "global " + ", ".join([*current, name])) > 99:
            lines.append(f"{_INDENT}global {', '.join(current)}")
            current = []
        current.append(name)
    if current:
        lines.append(f"{_INDENT}global {', '.join(current)}")
    return lines


def _example(p: Parameter) -> str:
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


def _parse_args(parameters: tuple[Parameter, ...], own: _Names, description: str) -> str:
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
    if p.required:
        items.append("required=True")
    default = "required" if p.required else f"default: {p.default_source}"
    if p.optional and p.type in ("int", "float"):
        default += "; 'none' for None"
    text = f"{p.help} ({default})" if p.help else f"({default})"
    items.append(f"help={python_string(text.replace('%', '%%'))}")
    return items


def export_jupytext(nb: Any, fmt: str, *, paired: bool = False) -> str:
    """The notebook in a jupytext format: ``py:percent``, ``py:light``, ``md``, ``R:percent``...

    ``paired`` records the pairing (``formats: ipynb,py:percent``) in the text's header, so
    ``jupytext --sync`` keeps the two files together; the notebook file is not modified.
    """
    import copy

    try:
        import jupytext
        from jupytext.formats import JupytextFormatError
    except ImportError as exc:  # pragma: no cover - a dependency
        raise UsageError("--to needs jupytext: pip install jupytext") from exc
    if paired:
        nb = copy.deepcopy(nb)
        nb.metadata.setdefault("jupytext", {})["formats"] = f"ipynb,{fmt}"
    try:
        return str(jupytext.writes(nb, fmt=fmt))
    except (JupytextFormatError, ValueError) as exc:
        raise UsageError(f"--to {fmt}: {exc}") from exc
