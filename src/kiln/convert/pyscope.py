"""Moving notebook code into a function body without changing what it means.

A notebook runs its cells in one module namespace. The exported script runs them in the body of
one function that declares ``global`` every name the cells bind at their top level, so each
assignment, import, ``def`` and ``class`` lands in the module namespace exactly as in the
notebook: a function defined in one cell sees names assigned in later cells, ``pickle`` and
``multiprocessing`` find classes and functions by their plain ``__qualname__``, and ``del``,
``for`` targets, ``except ... as`` and ``with ... as`` behave as at module level.

Three statements cannot stay as written inside such a function, so they are rewritten:

- ``x: int = 1`` becomes ``x = 1`` (an annotated name cannot be declared global), and an
  annotation alone (``x: int``), which binds nothing, becomes ``pass``;
- a cell's own ``global x`` becomes ``pass`` (the function already declares it);
- ``from m import *`` becomes ``_import_star("m")`` (star imports are only legal in modules).

Cells with top-level ``await`` (IPython's autoawait) make the function ``async``.
"""

from __future__ import annotations

import ast
import io
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


def bound_names(tree: ast.Module) -> set[str]:
    """Names a module binds in its own namespace (not in nested functions, classes, lambdas or
    comprehensions, except the walrus targets comprehensions leak)."""
    names: set[str] = set()

    def visit(node: ast.AST, in_comprehension: bool) -> None:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            if not in_comprehension:
                names.add(node.id)
            return
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


def scope_cell(code: str) -> ScopedCode:
    """Rewrite plain-Python cell code (magics already translated) for a function body."""
    tree = ast.parse(code)
    result = ScopedCode(code, names=bound_names(tree))
    lines = code.splitlines(keepends=True)
    edits: list[tuple[tuple[int, int], tuple[int, int], str]] = []
    for node in _module_statements(tree.body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            value = ast.get_source_segment(code, node.value) if node.value else None
            plain = "pass" if value is None else f"{node.target.id} = {value}"
            edits.append((_start(node, lines), _end(node, lines), plain))
        elif isinstance(node, ast.Global):
            edits.append((_start(node, lines), _end(node, lines), "pass"))
        elif isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            if node.level:
                result.problems.append(f"line {node.lineno}: a relative star import")
                continue
            replacement = f"_import_star({python_string(node.module or '')})"
            edits.append((_start(node, lines), _end(node, lines), replacement))
            result.star_import = True
    result.is_async = _has_top_level_await(tree)
    result.code = _apply(lines, edits)
    return result


def _module_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Every statement that runs in the module's scope, blocks included."""
    found: list[ast.stmt] = []
    for stmt in body:
        found.append(stmt)
        if isinstance(stmt, _NESTED_SCOPES):
            continue
        for name in ("body", "orelse", "finalbody"):
            found.extend(_module_statements(getattr(stmt, name, []) or []))
        for handler in getattr(stmt, "handlers", []) or []:
            found.extend(_module_statements(handler.body))
        for case in getattr(stmt, "cases", []) or []:
            found.extend(_module_statements(case.body))
    return found


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
