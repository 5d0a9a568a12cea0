"""``kiln export``: a notebook as a plain Python module with a typed command-line interface.

The module it writes has three parts:

- ``main(*, region: str = "EU", n: int = 3)``: one keyword argument per parameter of the cell
  tagged ``parameters``, with the notebook's own annotation or the type Kiln infers (see
  :mod:`kiln.convert._cli_code`);
- ``_run_cells(parameters)``: the notebook's code cells in order. It declares ``global`` every
  name the cells bind, so the code runs in the module's namespace exactly as in Jupyter (see
  :mod:`kiln.convert.pyscope`). The parameters cell runs as written, then the values given to
  ``main`` replace its defaults -- what Kiln's injected-parameters cell does in a run;
- ``parse_args(argv)``: argparse options built from the schema (``--region EU --n 3``; bools as
  ``--flag/--no-flag``; lists and dicts as JSON, or YAML when PyYAML is installed; a
  ``Literal``'s values as choices; required parameters required), and
  ``if __name__ == "__main__": main(**parse_args())``.

Markdown and raw cells become comments; IPython syntax is translated or flagged by
:mod:`kiln.convert.magics`. A cell's last expression is shown as Jupyter shows it (its repr,
unless it is None or the line ends with ``;``). ``from __future__`` imports move to the top.
The script needs only the standard library plus whatever the notebook itself imports.

What Kiln adds around the notebook's code passes ``ruff check`` with ruff's default rules; the
cells' own lines are copied as they are, so a finding of ruff in a cell of the notebook (an
unused import, say) is in the script too, and no other. Two changes Kiln must make would make
ruff see more than in the notebook, so the script is exempt from those rules in its header
(``# ruff: noqa: ...``): after ``from m import *`` ruff cannot tell which names exist (F821;
in the notebook it reports none), and an async runner puts the cells' blocking calls in an
async function (the ASYNC2xx rules), where the notebook made them at top level.

The script starts with ``#!/usr/bin/env python3`` and a ``kiln-export: sha256=...`` line
(:mod:`kiln.convert.stamp`) by which ``kiln export`` knows it may overwrite the file.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kiln.convert._cli_code import (
    Annotations,
    Names,
    argument_parser,
    example,
    main_function,
    needs_default,
)
from kiln.convert.magics import Issue, module_name, translate_cell
from kiln.convert.pyscope import ScopedCode, indent_code, scope_cell
from kiln.convert.stamp import KEY, PLACEHOLDER, UNSEALED_VALUE, seal
from kiln.errors import UsageError
from kiln.parameters.schema import Parameter

__all__ = ["ExportResult", "export_jupytext", "export_script"]

_INDENT: Final = "    "


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
    from kiln.parameters.infer import is_python

    language = _language(nb)
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
    return module.assemble(built, issues, frozenset(names))


def _language(nb: Mapping[str, Any]) -> str:
    """The kernel's language; for a notebook with no kernel named, the language jupytext
    recorded when it made the notebook from a script (``main_language: R``)."""
    from kiln.parameters.infer import notebook_language

    metadata = nb.get("metadata") or {}
    if not (metadata.get("kernelspec") or metadata.get("language_info")):
        main = (metadata.get("jupytext") or {}).get("main_language")
        if isinstance(main, str) and main.strip():
            return main.strip()
    return notebook_language(nb)


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
    scoped = None
    if problem is None:
        scoped = scope_cell(translation.code, show_last=translation.shows_last)
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
class _Module:
    """What the module's parts are built from."""

    nb: Mapping[str, Any]
    source_name: str
    script_name: str
    parameters: tuple[Parameter, ...]
    parameters_cell: int | None

    def assemble(
        self, cells: list[_Cell], issues: list[Issue], names: frozenset[str]
    ) -> ExportResult:
        code = [c.scoped for c in cells if c.scoped is not None]
        bound = {n for c in code for n in c.names}
        declared = sorted(bound | {p.name for p in self.parameters})
        own = Names.avoiding(bound)
        if own.main != "main":
            issues.append(Issue(-1, f"the notebook binds main: the entry is {own.main}", False))
        future = list(dict.fromkeys(name for c in code for name in c.future))
        annotations = Annotations(self.parameters, lazy="annotations" in future)
        used = {n for c in code for n in c.used} - bound
        helpers = {h for c in cells for h in c.helpers}
        helpers |= {name for name in ("display", "get_ipython") if name in used}
        if any(c.star_import for c in code):
            helpers.add("import_star")
        if any(c.shows_last for c in code):
            helpers.add("show")
        is_async = any(c.is_async for c in code)
        modules = {m for c in cells for m in c.imports}
        blocks = _helpers(helpers, self.parameters, own)
        parts = [
            # the helpers that take converters (_optional, _data) name Callable
            _imports(modules, names, annotations, is_async, "Callable[" in blocks),
            blocks,
            main_function(self.parameters, annotations, own, is_async),
            _body(cells, declared, self.parameters_cell, own, is_async, bool(self.parameters)),
            argument_parser(self.parameters, own, self._title()),
            f'if __name__ == "__main__":\n{_INDENT}{own.main}(**{own.parse_args}())\n',
        ]
        text = "\n\n".join(part.rstrip("\n") + "\n" for part in parts if part.strip())
        header = self._header(own, future=future, exempt=_exemptions(helpers, is_async))
        text = seal(f"{header}\n{text}")
        compile(text, self.script_name, "exec", dont_inherit=True)  # a bug must not ship
        return ExportResult(text, self.parameters, issues, own.main)

    def _title(self) -> str:
        for cell in self.nb.get("cells") or []:
            if cell.get("cell_type") == "markdown":
                match = re.search(r"^#+\s+(.+?)\s*#*$", _source(cell), re.MULTILINE)
                if match:
                    return match.group(1)
        return self.source_name

    def _header(self, own: Names, *, future: list[str], exempt: list[str]) -> str:
        title = self._title().replace('"""', "'''").replace("\\", "/")
        usage = f"python {self.script_name}"
        for p in self.parameters:
            shown = example(p)
            if len(usage) + len(shown) > 90:
                usage += " ..."
                break
            usage += f" {shown}"
        call = ", ".join(f"{p.name}=..." for p in self.parameters[:3])
        lines = [
            "#!/usr/bin/env python3",
            f"# Generated by kiln export from {self.source_name}: edit the notebook, then "
            "export again.",
            f"# {PLACEHOLDER}",
        ]
        if exempt:
            lines.append(f"# ruff: noqa: {', '.join(exempt)}")
        header = "\n".join(lines) + (
            f'\n"""{title}\n\n'
            f"Exported by kiln export from {self.source_name}. Run it with its parameters as "
            f"options::\n\n    {usage}\n\n"
            f"or import it and call ``{own.main}({call})``.\n\nThe notebook's code cells run in "
            "order in ``_run_cells``, in this module's\nnamespace, as they do in Jupyter.\n"
            '"""\n'
        )
        if future:
            header += f"\nfrom __future__ import {', '.join(future)}\n"
        return header


#: ruff's rules against blocking calls in async functions: an async runner (for a cell's
#: top-level await) puts the cells' calls in one, though the notebook made them at top level
_ASYNC_RULES: Final = ("ASYNC210", "ASYNC220", "ASYNC221", "ASYNC222", "ASYNC230", "ASYNC251")


def _exemptions(helpers: set[str], is_async: bool) -> list[str]:
    """ruff rules the script is exempt from, because of what Kiln had to change in the cells.

    After ``from m import *`` (``_import_star``), ruff cannot tell which names are defined, and
    reports none as undefined in the notebook: the script says so with F821. RUF100 comes with
    them: a given notebook may not break every rule listed.
    """
    rules = ["F821"] if "import_star" in helpers else []
    rules += list(_ASYNC_RULES) if is_async else []
    return ["RUF100", *rules] if rules else []


def _imports(
    modules: set[str],
    names: frozenset[str],
    annotations: Annotations,
    is_async: bool,
    callable_: bool,
) -> str:
    """The header's imports, sorted as isort sorts them: what translated magics use (named as
    in the cells, see :func:`kiln.convert.magics.module_name`), and what the wrapper uses (under
    their own names: the wrapper's functions run before any cell could rebind them)."""
    aliases = {module: module_name(module, names) for module in modules}
    aliases.update({module: module for module in _wrapper_modules(annotations, is_async)})
    lines = []
    for module, alias in sorted(aliases.items()):
        lines.append(f"import {module}" if alias == module else f"import {module} as {alias}")
    if callable_:
        lines.append("from collections.abc import Callable")
    typing_names = sorted({"Any"} | annotations.typing_names, key=_isort_key)
    lines.append(f"from typing import {', '.join(typing_names)}")
    return "\n".join(lines) + "\n"


def _wrapper_modules(annotations: Annotations, is_async: bool) -> set[str]:
    modules = {"argparse"}
    if any(p.type in ("list", "dict") for p in annotations.parameters):
        modules.add("json")
    if annotations.typing_module:
        modules.add("typing")
    if is_async:
        modules.add("asyncio")
    return modules


def _isort_key(name: str) -> tuple[int, str]:
    """isort's order of imported names: CONSTANTS, then Classes, then functions."""
    kind = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    return kind, name.lower()


def _helpers(helpers: set[str], parameters: tuple[Parameter, ...], own: Names) -> str:
    from kiln.convert import _templates as t

    blocks = []
    if any(needs_default(p) for p in parameters):
        blocks.append(t.NOTEBOOK_DEFAULT.replace("NOTEBOOK_DEFAULT", own.default))
    types = {p.type for p in parameters}
    if any(p.optional and p.type in ("int", "float") for p in parameters):
        blocks.append(t.OPTIONAL)
    if types & {"list", "dict"}:
        blocks.append(t.DATA)
    if "any" in types:
        blocks.append(t.ANY_VALUE)
    table = (
        ("clock", t.CLOCK),
        ("import_star", t.IMPORT_STAR),
        ("display", t.DISPLAY),
        ("get_ipython", t.GET_IPYTHON),
        ("show", t.SHOW),
    )
    blocks.extend(block for name, block in table if name in helpers)
    return "\n\n".join(b.strip("\n") + "\n" for b in blocks)


def _body(
    cells: list[_Cell],
    declared: list[str],
    parameters_cell: int | None,
    own: Names,
    is_async: bool,
    takes_parameters: bool,
) -> str:
    keyword = "async def" if is_async else "def"
    argument = f"{own.parameters}: dict[str, Any]" if takes_parameters else ""
    lines = [
        f"{keyword} _run_cells({argument}) -> None:",
        f'{_INDENT}"""The notebook\'s code cells, in order, in this module\'s namespace."""',
    ]
    lines.extend(_globals(declared))
    after_import = False  # isort would read two cells' imports as one block to sort
    for cell in cells:
        if cell.kind == "empty":
            continue
        label = "parameters" if cell.index == parameters_cell else cell.kind
        lines.append("")
        lines.append(f"{_INDENT}# -- cell {cell.index} ({label}) --")
        code = "\n".join(cell.lines) + "\n" if cell.lines else ""
        if cell.scoped is not None:
            if after_import and cell.scoped.starts_with_import:
                lines.append(f"{_INDENT}# isort: split")
            lines.append(indent_code(cell.scoped.code, _INDENT).rstrip("\n"))
            after_import = cell.scoped.ends_with_import
        elif code:
            lines.append(indent_code(code, _INDENT).rstrip("\n"))
        if cell.index == parameters_cell and takes_parameters:
            lines.append(
                f"{_INDENT}# the values given to main() replace the defaults above, as the cell "
                "Kiln injects in a run does"
            )
            lines.append(f"{_INDENT}globals().update({own.parameters})")
            after_import = False
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


def export_jupytext(nb: Any, fmt: str, *, paired: bool = False) -> str:
    """The notebook in a jupytext format: ``py:percent``, ``py:light``, ``md``, ``R:percent``...

    ``paired`` records the pairing (``formats: ipynb,py:percent``) in the text's header, so
    ``jupytext --sync`` keeps the two files together; the notebook file is not modified. The
    header's ``jupytext`` metadata also carries the ``kiln-export`` checksum of the text.
    """
    import copy

    try:
        import jupytext
        from jupytext.formats import JupytextFormatError
    except ImportError as exc:  # pragma: no cover - a dependency
        raise UsageError("--to needs jupytext: pip install jupytext") from exc
    nb = copy.deepcopy(nb)
    settings = nb.metadata.setdefault("jupytext", {})
    settings[KEY] = UNSEALED_VALUE
    if paired:
        settings["formats"] = f"ipynb,{fmt}"
    try:
        return seal(str(jupytext.writes(nb, fmt=fmt)))
    except (JupytextFormatError, ValueError) as exc:
        raise UsageError(f"--to {fmt}: {exc}") from exc
