"""KL104/KL105: names used before any cell above defines them, read statically top to bottom.

The cells are read in document order, as a fresh "restart and run all" would execute them.
Module-level code runs at once, so a name it reads must be bound by then; a function body runs
later, so a global it reads only has to be bound somewhere in the notebook. The analysis leans
towards silence: a name bound in any branch of an ``if``/``try`` counts as bound, and so do
names bound anywhere in a loop's body while that body is read. After a star import, ``%run``,
``exec`` or ``globals()``, an unknown name is only "unknown" (KL105), not an error.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

from kiln.lint.cells import CodeCell

_IPYTHON_NAMES = frozenset(
    {
        "get_ipython",
        "display",
        "In",
        "Out",
        "exit",
        "quit",
        "_",
        "__",
        "___",
        "_i",
        "_ii",
        "_iii",
        "_ih",
        "_oh",
        "_dh",
        "__builtin__",
        "__builtins__",
    }
)
_HISTORY = re.compile(r"^_i?\d+$")
#: ``__file__`` is left out on purpose: a Jupyter kernel does not define it
BUILTIN_NAMES = frozenset(n for n in dir(builtins) if n != "__file__") | _IPYTHON_NAMES
#: calls that may define any name at module level
_DYNAMIC_CALLS = frozenset({"exec", "execfile", "globals", "vars", "locals"})


@dataclass(frozen=True)
class NameProblem:
    rule: str  # KL104 or KL105
    cell: int
    line: int
    column: int
    name: str
    message: str


@dataclass
class _Scope:
    kind: str  # module | function | class | comprehension
    bound: set[str] = field(default_factory=set)
    parent: _Scope | None = None
    function_name: str = ""


class _State:
    """What the notebook's module namespace holds so far, across cells."""

    def __init__(self) -> None:
        self.defined: set[str] = set()
        self.ever_bound: set[str] = set()  # at module level, anywhere in the notebook
        self.unknown_from: str | None = None
        self.deferred: list[tuple[str, int, int, int, str]] = []
        self.problems: list[NameProblem] = []
        self.reported: set[tuple[str, int]] = set()


def undefined_names(cells: Sequence[CodeCell]) -> list[NameProblem]:
    """KL104/KL105 problems for the notebook's Python code cells, in document order."""
    state = _State()
    for cell in cells:
        if cell.tree is None:
            if cell.syntax_error is not None and state.unknown_from is None:
                state.unknown_from = f"cell {cell.index}, which does not parse"
            _cell_magic_bindings(cell, state)
            continue
        _apply_magics(cell, state)
        _Walker(state, cell.index).run(cell.tree)
    for name, cell_index, line, column, function in state.deferred:
        if name in state.ever_bound or name in BUILTIN_NAMES or _HISTORY.match(name):
            continue
        message = f"function '{function}' uses '{name}', which no cell defines"
        _report(state, name, (cell_index, line, column), message)
    return state.problems


def _report(state: _State, name: str, where: tuple[int, int, int], message: str) -> None:
    cell, line, column = where
    if (name, cell) in state.reported:
        return
    state.reported.add((name, cell))
    if state.unknown_from is not None:
        message = f"{message}; it may come from {state.unknown_from}"
        state.problems.append(NameProblem("KL105", cell, line, column, name, message))
    else:
        state.problems.append(NameProblem("KL104", cell, line, column, name, message))


def _apply_magics(cell: CodeCell, state: _State) -> None:
    for magic in cell.magics:
        if magic.kind == "%" and magic.name in ("run", "load", "pylab") and not state.unknown_from:
            state.unknown_from = f"%{magic.name} in cell {cell.index}"
        elif magic.kind == "%" and magic.name == "store" and "-r" in magic.args.split():
            names = [a for a in magic.args.split() if a != "-r" and a.isidentifier()]
            if names:
                _bind_module(state, names)
            elif state.unknown_from is None:
                state.unknown_from = f"%store -r in cell {cell.index}"
    _cell_magic_bindings(cell, state)


def _cell_magic_bindings(cell: CodeCell, state: _State) -> None:
    if cell.cell_magic == "capture":
        words = [m.args for m in cell.magics if m.kind == "%%"]
        names = [w for w in (words[0].split() if words else []) if w.isidentifier()]
        _bind_module(state, names[-1:])


def _bind_module(state: _State, names: Iterable[str]) -> None:
    for name in names:
        state.defined.add(name)
        state.ever_bound.add(name)


class _Walker:
    """Reads one cell's statements in execution order against the notebook's state."""

    def __init__(self, state: _State, cell: int) -> None:
        self.state = state
        self.cell = cell
        self.scope = _Scope("module")
        self.conditional = 0

    def run(self, tree: ast.Module) -> None:
        self.statements(tree.body)

    # -- name resolution ------------------------------------------------------------------------

    def load(self, name: str, node: ast.AST) -> None:
        scope: _Scope | None = self.scope
        crossed_function = False
        came_from_inner = False
        while scope is not None:
            if scope.kind == "module":
                break
            skip = scope.kind == "class" and came_from_inner
            if not skip and name in scope.bound:
                return
            if scope.kind in ("function", "comprehension"):
                came_from_inner = True
            crossed_function = crossed_function or scope.kind == "function"
            scope = scope.parent
        if name in BUILTIN_NAMES or _HISTORY.match(name):
            return
        line, column = getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1
        if crossed_function:
            function = self._function_name()
            self.state.deferred.append((name, self.cell, line, column, function))
        elif name not in self.state.defined:
            message = f"'{name}' is used before any cell above defines it"
            _report(self.state, name, (self.cell, line, column), message)

    def _function_name(self) -> str:
        scope: _Scope | None = self.scope
        while scope is not None and scope.kind != "function":
            scope = scope.parent
        return scope.function_name if scope is not None else "?"

    def bind(self, name: str, *, walrus: bool = False) -> None:
        scope = self.scope
        while walrus and scope.kind == "comprehension" and scope.parent is not None:
            scope = scope.parent  # `(y := x)` in a comprehension binds in the enclosing scope
        if scope.kind == "module":
            self.state.defined.add(name)
            self.state.ever_bound.add(name)
        else:
            scope.bound.add(name)

    def unbind(self, name: str) -> None:
        if self.scope.kind == "module" and not self.conditional:
            self.state.defined.discard(name)

    # -- statements -----------------------------------------------------------------------------

    def statements(self, body: Sequence[ast.stmt]) -> None:
        for stmt in body:
            self.statement(stmt)

    def statement(self, node: ast.stmt) -> None:
        method = getattr(self, "stmt_" + type(node).__name__, None)
        if method is not None:
            method(node)
        else:
            self.generic(node)

    def stmt_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.bind(alias.asname or alias.name.split(".", 1)[0])

    def stmt_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                if self.state.unknown_from is None:
                    module = "." * node.level + (node.module or "")
                    self.state.unknown_from = f"`from {module} import *` in cell {self.cell}"
            else:
                self.bind(alias.asname or alias.name)

    def stmt_Assign(self, node: ast.Assign) -> None:
        self.expr(node.value)
        for target in node.targets:
            self.target(target)

    def stmt_AnnAssign(self, node: ast.AnnAssign) -> None:
        # Annotations are never checked: Python 3.14 evaluates them lazily, if at all.
        if node.value is not None:
            self.expr(node.value)
        if (
            node.value is not None
            or self.scope.kind == "function"
            or not isinstance(node.target, ast.Name)
        ):
            self.target(node.target)

    def stmt_AugAssign(self, node: ast.AugAssign) -> None:
        self.expr(node.value)
        if isinstance(node.target, ast.Name):
            self.load(node.target.id, node.target)  # `x += 1` needs x first
            self.bind(node.target.id)
        else:
            self.target(node.target)

    def stmt_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            if isinstance(target, ast.Name):
                self.load(target.id, target)
                self.unbind(target.id)
            else:
                self.target(target)

    def stmt_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.expr(decorator)
        self.arguments_outside(node.args)
        self.bind(node.name)
        self.function_body(node.name, node.args, node.body)

    stmt_AsyncFunctionDef = stmt_FunctionDef

    def stmt_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.expr(expr)
        outer = self.scope
        self.scope = _Scope("class", parent=outer)
        self.statements(node.body)
        self.scope = outer
        self.bind(node.name)

    def stmt_Global(self, node: ast.Global) -> None:
        return None

    stmt_Nonlocal = stmt_Global

    def stmt_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.expr(node.iter)
        self.target(node.target)
        self.loop_body(node.body, node.orelse)

    stmt_AsyncFor = stmt_For

    def stmt_While(self, node: ast.While) -> None:
        self.expr(node.test)
        self.loop_body(node.body, node.orelse)

    def loop_body(self, body: list[ast.stmt], orelse: list[ast.stmt]) -> None:
        # A later iteration sees what the previous one bound: count the body's bindings first.
        for name in _bound_in(body):
            self.bind(name)
        self.conditional += 1
        self.statements(body)
        self.statements(orelse)
        self.conditional -= 1

    def stmt_If(self, node: ast.If) -> None:
        self.expr(node.test)
        self.branches([node.body, node.orelse])

    def branches(self, bodies: Sequence[Sequence[ast.stmt] | Callable[[], None]]) -> None:
        """Each branch starts from the same state; afterwards a name from any branch counts."""
        start = set(self.state.defined)
        union = set(start)
        self.conditional += 1
        for body in bodies:
            if self.scope.kind == "module":
                self.state.defined = set(start)
            if callable(body):
                body()
            else:
                self.statements(body)
            union |= self.state.defined
        self.conditional -= 1
        if self.scope.kind == "module":
            self.state.defined = union

    def stmt_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.expr(item.context_expr)
            if item.optional_vars is not None:
                self.target(item.optional_vars)
        self.statements(node.body)

    stmt_AsyncWith = stmt_With

    def stmt_Try(self, node: ast.Try) -> None:
        self.conditional += 1
        self.statements(node.body)
        self.conditional -= 1
        for handler in node.handlers:
            if handler.type is not None:
                self.expr(handler.type)
        handlers = [partial(self.handler, h) for h in node.handlers]
        self.branches([*handlers, node.orelse])
        self.statements(node.finalbody)

    stmt_TryStar = stmt_Try

    def handler(self, handler: ast.ExceptHandler) -> None:
        name = handler.name
        had = bool(name) and name in self.state.defined
        if name:
            self.bind(name)
        self.statements(handler.body)
        if name and not had and self.scope.kind == "module":
            self.state.defined.discard(name)  # `except E as e` deletes e when the handler ends

    def stmt_Match(self, node: ast.Match) -> None:
        self.expr(node.subject)
        bodies: list[list[ast.stmt]] = []
        for case in node.cases:
            self.pattern(case.pattern)
            if case.guard is not None:
                self.expr(case.guard)
            bodies.append(case.body)
        self.branches(bodies)

    def pattern(self, node: ast.pattern) -> None:
        for child in ast.walk(node):
            if isinstance(child, (ast.MatchAs, ast.MatchStar)) and child.name:
                self.bind(child.name)
            elif isinstance(child, ast.MatchMapping) and child.rest:
                self.bind(child.rest)
            elif isinstance(child, ast.MatchValue):
                self.expr(child.value)
            elif isinstance(child, ast.MatchClass):
                self.expr(child.cls)

    def generic(self, node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                self.statement(child)
            elif isinstance(child, ast.expr):
                self.expr(child)
            else:
                self.generic(child)

    # -- functions ------------------------------------------------------------------------------

    def arguments_outside(self, args: ast.arguments) -> None:
        """Defaults run when the ``def`` runs, in the enclosing scope."""
        for default in [*args.defaults, *(d for d in args.kw_defaults if d is not None)]:
            self.expr(default)

    def function_body(self, name: str, args: ast.arguments, body: Sequence[ast.stmt]) -> None:
        local, declared_global, declared_nonlocal = _function_locals(body)
        assigned_globals = declared_global & local
        local |= {a.arg for a in _all_args(args)}
        local -= declared_global | declared_nonlocal
        for global_name in assigned_globals:
            self.state.ever_bound.add(global_name)
            if self.scope.kind == "module":
                self.state.defined.add(global_name)  # leaning to silence: as if called
        outer, outer_conditional = self.scope, self.conditional
        self.scope = _Scope("function", local, outer, name)
        self.conditional = 1
        self.statements(body)
        self.scope, self.conditional = outer, outer_conditional

    # -- expressions ----------------------------------------------------------------------------

    def target(self, node: ast.expr) -> None:
        if isinstance(node, ast.Name):
            self.bind(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                self.target(element)
        elif isinstance(node, ast.Starred):
            self.target(node.value)
        else:  # attribute or subscript: `df["x"] = 1` reads df
            self.expr(node)

    def expr(self, node: ast.expr) -> None:
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                self.load(node.id, node)
            else:
                self.bind(node.id)
        elif isinstance(node, ast.NamedExpr):
            self.expr(node.value)
            if isinstance(node.target, ast.Name):
                self.bind(node.target.id, walrus=True)
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            self.comprehension(node)
        elif isinstance(node, ast.Lambda):
            self.arguments_outside(node.args)
            body = [ast.Expr(node.body)]
            ast.copy_location(body[0], node.body)
            self.function_body("<lambda>", node.args, body)
        elif isinstance(node, ast.Call):
            self.call(node)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.expr(child)
                elif isinstance(child, ast.AST):
                    self.generic_expr(child)

    def generic_expr(self, node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expr(child)
            else:
                self.generic_expr(child)

    def call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Name)
            and func.id in _DYNAMIC_CALLS
            and (func.id.startswith("exec") or not node.args)
            and self.scope.kind == "module"
            and self.state.unknown_from is None
        ):
            self.state.unknown_from = f"{func.id}() in cell {self.cell}"
        self.expr(func)
        for arg in node.args:
            self.expr(arg)
        for keyword in node.keywords:
            self.expr(keyword.value)

    def comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
    ) -> None:
        generators = node.generators
        self.expr(generators[0].iter)  # the first iterable runs in the enclosing scope
        outer = self.scope
        self.scope = _Scope("comprehension", parent=outer)
        for index, generator in enumerate(generators):
            if index:
                self.expr(generator.iter)
            self.target(generator.target)
            for condition in generator.ifs:
                self.expr(condition)
        if isinstance(node, ast.DictComp):
            self.expr(node.key)
            self.expr(node.value)
        else:
            self.expr(node.elt)
        self.scope = outer


def _all_args(args: ast.arguments) -> Iterator[ast.arg]:
    yield from args.posonlyargs
    yield from args.args
    if args.vararg is not None:
        yield args.vararg
    yield from args.kwonlyargs
    if args.kwarg is not None:
        yield args.kwarg


def _own_nodes(body: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Every node of these statements, not entering nested function or class bodies (their
    names, decorators and defaults belong to this scope; their bodies do not)."""
    stack = list(body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stack.extend(node.decorator_list)
            stack.extend(node.args.defaults)
            stack.extend(d for d in node.args.kw_defaults if d is not None)
        elif isinstance(node, ast.ClassDef):
            stack.extend(node.decorator_list)
            stack.extend(node.bases)
        elif isinstance(node, ast.Lambda):
            stack.extend(node.args.defaults)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _bound_in(body: Iterable[ast.AST]) -> set[str]:
    """Names these statements bind in their own scope (comprehension targets excluded)."""
    bound: set[str] = set()
    comprehension_targets: set[int] = set()
    for node in _own_nodes(body):
        if isinstance(node, ast.comprehension):
            comprehension_targets.update(id(n) for n in ast.walk(node.target))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            if id(node) not in comprehension_targets:
                bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    bound.add(alias.asname or alias.name.split(".", 1)[0])
        elif (isinstance(node, ast.ExceptHandler) and node.name) or (
            isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name
        ):
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound.add(node.rest)
    return bound


def _function_locals(body: Sequence[ast.stmt]) -> tuple[set[str], set[str], set[str]]:
    """(locals, names declared global, names declared nonlocal) of a function body."""
    declared_global: set[str] = set()
    declared_nonlocal: set[str] = set()
    for node in _own_nodes(body):
        if isinstance(node, ast.Global):
            declared_global.update(node.names)
        elif isinstance(node, ast.Nonlocal):
            declared_nonlocal.update(node.names)
    return _bound_in(body), declared_global, declared_nonlocal
