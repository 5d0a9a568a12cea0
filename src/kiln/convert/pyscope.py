"""Moving notebook code into a function body without changing what it means.

A notebook runs its cells in one module namespace. The exported script runs them in the body of
one function that declares ``global`` every name the cells bind at their top level, so each
assignment, import, ``def`` and ``class`` lands in the module namespace exactly as in the
notebook: a function defined in one cell sees names assigned in later cells, ``pickle`` and
``multiprocessing`` find classes and functions by their plain ``__qualname__``, and ``del``,
``for`` targets, ``except ... as`` and ``with ... as`` behave as at module level.

Some statements and calls cannot stay as written inside such a function, so they are
rewritten:

- ``x: int = 1`` becomes ``x = 1`` (an annotated name cannot be declared global), and an
  annotation alone (``x: int``), which binds nothing, is left out;
- a cell's own ``global x`` is left out (the function already declares it);
- ``from m import *`` becomes ``_import_star("m")`` (star imports are only legal in modules);
- ``from __future__ import ...`` moves to the top of the module, the only place Python allows
  it; IPython too applies a future import to every later cell;
- ``locals()``, ``vars()``, ``dir()``, ``exec(code)`` and ``eval(code)`` in the cell's own
  scope (not in a function it defines) use ``globals()``, which a cell's top level sees.

A statement left out leaves a comment saying so, or ``pass`` where its block needs a statement.
Cells with top-level ``await`` (IPython's autoawait) make the function ``async``. With
``show_last``, a cell's last expression is shown as Jupyter shows it: ``_kiln_show(expr)``
prints its repr unless it is None, and a trailing ``;`` keeps it quiet, as in IPython.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field
from typing import Final

from kiln.convert.magics import python_string

__all__ = ["ScopedCode", "bound_names", "indent_code", "scope_cell"]

_NESTED_SCOPES: Final = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPREHENSIONS: Final = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


@dataclass
class ScopedCode:
    """A cell's code, rewritten to run in a function body, and what it needs from there."""

    code: str
    names: set[str] = field(default_factory=set)
    is_async: bool = False
    star_import: bool = False
    problems: list[str] = field(default_factory=list)
    #: ``annotations`` for ``from __future__ import annotations``, in the order written
    future: list[str] = field(default_factory=list)
    #: every name the cell reads, in any scope (to know which shims the script needs)
    used: set[str] = field(default_factory=set)
    #: the last expression is wrapped in ``_kiln_show(...)``
    shows_last: bool = False
    #: the first and the last top-level statements are imports (to keep isort's blocks apart)
    starts_with_import: bool = False
    ends_with_import: bool = False


def bound_names(tree: ast.Module) -> set[str]:
    """Names a module binds in its own namespace (not in nested functions, classes, lambdas or
    comprehensions, except the walrus targets comprehensions leak)."""
    names: set[str] = set()

    def visit(node: ast.AST, in_comprehension: bool) -> None:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            if not in_comprehension:
                names.add(node.id)
            return
        if isinstance(node, ast.AnnAssign) and node.value is None:
            return  # `x: int` alone binds nothing
        if isinstance(node, ast.NamedExpr):
            names.add(node.target.id)
            visit(node.value, in_comprehension)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            for part in _outer_parts(node):
                visit(part, in_comprehension)
            return
        if isinstance(node, ast.Lambda):
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                if default is not None:
                    visit(default, in_comprehension)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name != "*":
                    names.add(alias.asname or alias.name.split(".")[0])
            return
        if isinstance(node, ast.Global):
            names.update(node.names)
            return
        if isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        if isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
            names.add(node.name)
        if isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
        inner = in_comprehension or isinstance(node, _COMPREHENSIONS)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return names


def _outer_parts(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> list[ast.AST]:
    """The parts of a def/class evaluated in the enclosing scope: decorators, defaults, bases."""
    parts: list[ast.AST] = list(node.decorator_list)
    if isinstance(node, ast.ClassDef):
        return [*parts, *node.bases, *node.keywords]
    args = node.args
    return [*parts, *args.defaults, *(d for d in args.kw_defaults if d is not None)]


_Edit = tuple[tuple[int, int], tuple[int, int], str]


def scope_cell(code: str, *, show_last: bool = False) -> ScopedCode:
    """Rewrite plain-Python cell code (magics already translated) for a function body."""
    tree = ast.parse(code)
    result = ScopedCode(code, names=bound_names(tree))
    result.used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    lines = code.splitlines(keepends=True)
    edits: list[_Edit] = []
    for node, alone in _module_statements(tree.body, top=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.value is None:
                edits.append(
                    _left_out(node, code, lines, alone, "an annotation alone binds nothing")
                )
                continue
            # `x: int = v` -> `x = v`: only the annotation goes, so `v` may hold edits of its own
            edits.append((_end(node.target, lines), _start(node.value, lines), " = "))
        elif isinstance(node, ast.Global):
            edits.append(
                _left_out(node, code, lines, alone, "every name of the notebook is global")
            )
        elif isinstance(node, ast.ImportFrom) and node.module == "__future__":
            result.future.extend(a.name for a in node.names if a.name not in result.future)
            result.names -= {a.asname or a.name for a in node.names}  # bound at the top
            edits.append(_left_out(node, code, lines, alone, "moved to the top of the script"))
        elif isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            if node.level:
                result.problems.append(f"line {node.lineno}: a relative star import")
                continue
            replacement = f"_import_star({python_string(node.module or '')})"
            edits.append((_start(node, lines), _end(node, lines), replacement))
            result.star_import = True
    edits.extend(_namespace_calls(tree, lines, result.names))
    body = tree.body
    last = body[-1].value if body and isinstance(body[-1], ast.Expr) else None
    if show_last and last is not None and _shows(last) and not _ends_quietly(code):
        start, end = _start(last, lines), _end(last, lines)
        edits.extend([(start, start, "_kiln_show("), (end, end, ")")])
        result.shows_last = True
    imports = (ast.Import, ast.ImportFrom)
    result.starts_with_import = bool(body) and isinstance(body[0], imports)
    result.ends_with_import = bool(body) and isinstance(body[-1], imports)
    result.is_async = _has_top_level_await(tree)
    result.code = _apply(lines, edits)
    try:  # edits that meet on one line (`global a; b: int` and the like) could clash
        ast.parse(result.code)
    except SyntaxError as exc:
        result.problems.append(f"cannot be moved into a function ({exc.msg})")
    return result


def _module_statements(body: list[ast.stmt], *, top: bool) -> list[tuple[ast.stmt, bool]]:
    """Every statement that runs in the module's scope, blocks included, each with whether
    it must become ``pass``: the first of a block whose statements are all left out (never at
    a cell's top level: the function has a docstring)."""
    found: list[tuple[ast.stmt, bool]] = []
    emptied = not top and all(_left_out_kind(stmt) for stmt in body)
    for stmt in body:
        found.append((stmt, emptied and stmt is body[0]))
        if isinstance(stmt, _NESTED_SCOPES):
            continue
        for name in ("body", "orelse", "finalbody"):
            found.extend(_module_statements(getattr(stmt, name, []) or [], top=False))
        for handler in getattr(stmt, "handlers", []) or []:
            found.extend(_module_statements(handler.body, top=False))
        for case in getattr(stmt, "cases", []) or []:
            found.extend(_module_statements(case.body, top=False))
    return found


def _left_out_kind(stmt: ast.stmt) -> bool:
    """A statement :func:`scope_cell` removes: ``global``, or an annotation alone."""
    annotation = isinstance(stmt, ast.AnnAssign) and stmt.value is None
    return annotation or isinstance(stmt, ast.Global)


def _namespace_calls(tree: ast.Module, lines: list[str], bound: set[str]) -> list[_Edit]:
    """Edits for the builtins that read the current namespace, called in the module's scope:
    at a notebook's top level that is the module, in the script the function's locals.
    ``locals()`` and ``vars()`` become ``globals()``, ``dir()`` ``sorted(globals())``, and
    ``exec(code)``, ``eval(code)`` get ``globals()`` as their namespace."""
    edits: list[_Edit] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, _NESTED_SCOPES):
            if not isinstance(node, ast.Lambda):
                for part in _outer_parts(node):
                    visit(part)
            return
        if isinstance(node, _COMPREHENSIONS):  # a scope of its own, but for the first iterable
            visit(node.generators[0].iter)
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            name, args = node.func.id, node.args
            if name in bound:
                pass  # the notebook's own function of that name
            elif name in ("locals", "vars") and not args:
                edits.append((_start(node.func, lines), _end(node.func, lines), "globals"))
            elif name == "dir" and not args:
                edits.append((_start(node, lines), _end(node, lines), "sorted(globals())"))
            elif (
                name in ("exec", "eval") and len(args) == 1 and not isinstance(args[0], ast.Starred)
            ):
                end = _end(args[0], lines)
                edits.append((end, end, ", globals()"))
        if isinstance(node, ast.AnnAssign):  # its annotation goes (see scope_cell)
            if node.value is not None:
                visit(node.value)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return edits


def _left_out(node: ast.stmt, code: str, lines: list[str], alone: bool, why: str) -> _Edit:
    """An edit that removes a statement: with the ``;`` that joins it to a neighbour on its
    line, else leaving a comment; ``alone`` (the first of a block that would be left empty),
    it becomes ``pass``."""
    (r1, c1), (r2, c2) = _start(node, lines), _end(node, lines)
    after = re.match(r"[ \t]*;[ \t]*", lines[r2][c2:])
    note = f"{' '.join((ast.get_source_segment(code, node) or '').split())}  (kiln export: {why})"
    if alone:
        return (r1, c1), (r2, c2), "pass" if after else f"pass  # {note}"
    before = re.search(r";[ \t]*$", lines[r1][:c1])
    if before:
        return (r1, before.start()), (r2, c2), ""
    if after:
        return (r1, c1), (r2, c2 + after.end()), ""
    return (r1, c1), (r2, c2), f"# {note}"


def _shows(value: ast.expr) -> bool:
    """Whether a last expression may have a value to show: not a call of print() or display(),
    which return None (left as written, the script reads as the notebook does)."""
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        return value.func.id not in ("print", "display")
    return True


def _ends_quietly(code: str) -> bool:
    """Whether the code's last token is ``;``: IPython then does not display the value."""
    last = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type not in _NOT_CODE:
                last = token
    except (tokenize.TokenError, SyntaxError):
        return False
    return last is not None and last.type == tokenize.OP and last.string == ";"


_NOT_CODE: Final = frozenset(
    {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    }
)


def _has_top_level_await(tree: ast.Module) -> bool:
    def visit(node: ast.AST) -> bool:
        if isinstance(node, ast.Await | ast.AsyncFor | ast.AsyncWith):
            return True
        if isinstance(node, ast.comprehension) and node.is_async:
            return True
        if isinstance(node, _NESTED_SCOPES):
            return False
        return any(visit(child) for child in ast.iter_child_nodes(node))

    return visit(tree)


def _char_col(line: str, byte_col: int) -> int:
    """ast columns count UTF-8 bytes; string slicing counts characters."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))


def _start(node: ast.AST, lines: list[str]) -> tuple[int, int]:
    row = node.lineno - 1  # type: ignore[attr-defined]
    return row, _char_col(lines[row], node.col_offset)  # type: ignore[attr-defined]


def _end(node: ast.AST, lines: list[str]) -> tuple[int, int]:
    row = node.end_lineno - 1  # type: ignore[attr-defined]
    return row, _char_col(lines[row], node.end_col_offset)  # type: ignore[attr-defined]


def _apply(lines: list[str], edits: list[tuple[tuple[int, int], tuple[int, int], str]]) -> str:
    """Replace each (start, end) span of ``lines`` with its text, last span first."""
    for (r1, c1), (r2, c2), text in sorted(edits, reverse=True):
        merged = lines[r1][:c1] + text + lines[r2][c2:]
        lines[r1 : r2 + 1] = [merged]
    return "".join(lines)


def indent_code(code: str, prefix: str) -> str:
    """``code`` with ``prefix`` before each line, except lines inside a multi-line string,
    whose text must not change. Empty lines stay empty."""
    inside: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.start[0] < token.end[0] and token.type not in (tokenize.NL, tokenize.NEWLINE):
                inside.update(range(token.start[0] + 1, token.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        pass
    out = []
    for number, line in enumerate(code.splitlines(keepends=True), start=1):
        if number in inside or not line.strip():
            out.append(line if number in inside else line.lstrip(" \t"))
        else:
            out.append(prefix + line)
    return "".join(out)
