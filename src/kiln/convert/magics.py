"""IPython syntax (magics, ``!cmd``) in a cell, translated to plain Python or flagged.

IPython's own input transformer finds the magics (so ``'!not a command'`` in a string or a
``%`` inside an expression is never mistaken for one); each magic call it produces is then
replaced by an equivalent in plain Python where one is safe, dropped with a comment where the
magic only affects the interactive display, and otherwise flagged with a comment and a warning.

The rules are data: :data:`DISPLAY_ONLY`, :data:`SHELL_ALIASES`, :data:`SCRIPT_MAGICS`,
:data:`INSTALLERS`; the translations with more to them are the ``_line_*`` and ``_cell_*``
functions.
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, cast

__all__ = [
    "DISPLAY_ONLY",
    "Issue",
    "Translation",
    "module_name",
    "python_literal",
    "python_string",
    "translate_cell",
]

#: line or cell magics that only change what the interactive session shows: dropped
_DISPLAY_WORDS: Final = (
    "matplotlib load_ext reload_ext unload_ext autoreload aimport config precision xmode colors "
    "automagic autocall doctest_mode who whos who_ls lsmagic magic pinfo pinfo2 pdef pdoc psource "
    "pfile psearch history hist timeit page clear notebook qtconsole pprint quickref alias_magic "
    "tb killbgscripts pwd html HTML markdown latex javascript js svg"
)
DISPLAY_ONLY: Final = frozenset(_DISPLAY_WORDS.split())
#: IPython's default shell aliases: ``%ls -l`` runs ``ls -l``
SHELL_ALIASES: Final = frozenset({"ls", "cat", "cp", "mv", "rm", "mkdir", "rmdir"})
#: cell magics that pipe the cell to a program (IPython's %%script family)
SCRIPT_MAGICS: Final = {
    "bash": '["bash"]',
    "sh": '["sh"]',
    "perl": '["perl"]',
    "ruby": '["ruby"]',
    "python": "[sys.executable]",
    "python3": "[sys.executable]",
    "pypy": '["pypy"]',
}
#: package installers: never run by an exported script (install before running it)
INSTALLERS: Final = frozenset({"pip", "conda", "mamba", "micromamba"})
_GET_IPYTHON_METHODS: Final = frozenset({"run_line_magic", "system", "getoutput"})


@dataclass(frozen=True)
class Issue:
    """Something an export changed or could not translate; ``warning`` when results may differ."""

    cell: int
    message: str
    warning: bool


@dataclass
class Translation:
    """A cell as plain Python, with what the script's header must provide for it.

    ``imports`` are standard modules the translations use, under the names :func:`module_name`
    gives them; ``shows_last`` says whether IPython would display the value of the cell's last
    statement (an expression of the notebook's own, not a magic).
    """

    cell: int
    code: str = ""
    imports: set[str] = field(default_factory=set)
    helpers: set[str] = field(default_factory=set)
    issues: list[Issue] = field(default_factory=list)
    valid: bool = True
    shows_last: bool = False

    def flag(self, message: str, *, warning: bool = True) -> None:
        self.issues.append(Issue(self.cell, message, warning))

    def use(self, module: str, names: frozenset[str]) -> str:
        """Import ``module`` in the script's header; the name to call it by in the cell."""
        self.imports.add(module)
        return module_name(module, names)


def translate_cell(source: str, *, index: int, names: frozenset[str] = frozenset()) -> Translation:
    """Translate one code cell; ``names`` are the notebook's own names (for ``$name`` in ``!``)."""
    from IPython.core import inputtransformer2

    # IPython is untyped: name the one call we make, so strict type checking holds either way
    manager = cast(Callable[[], Any], inputtransformer2.TransformerManager)()
    result = Translation(index)
    try:
        text = str(manager.transform_cell(source))
        tree = ast.parse(text)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" at line {line}" if line else ""
        reason = getattr(exc, "msg", None) or str(exc)
        result.flag(f"not valid Python ({reason}{where}); left as a comment")
        result.code = _commented(source, "not valid Python, not run:")
        result.valid = False
        return result
    cell_magic = _cell_magic_call(tree)
    if cell_magic is not None:
        result.code = _cell_magic(*cell_magic, names=names, result=result)
        return result
    magics = _magic_statements(tree)
    last = tree.body[-1] if tree.body else None
    result.shows_last = isinstance(last, ast.Expr) and all(last is not m for m in magics)
    lines = text.splitlines()
    new_lines = {id(stmt): _statement(stmt, names=names, result=result) for stmt in magics}
    for stmt in _needing_pass(tree, new_lines):
        new_lines[id(stmt)].append("pass")  # a block left with comments only needs a statement
    for stmt in sorted(magics, key=lambda s: s.lineno, reverse=True):
        indent = re.match(r"\s*", lines[stmt.lineno - 1])
        prefix = indent.group(0) if indent else ""
        new = new_lines[id(stmt)]
        lines[stmt.lineno - 1 : stmt.end_lineno] = [prefix + line for line in new]
    result.code = "\n".join(lines) + ("\n" if lines else "")
    if "get_ipython" in result.code and _uses_name(result.code, "get_ipython"):
        result.flag("calls get_ipython(), which returns None outside IPython")
    return result


def _needing_pass(tree: ast.Module, new_lines: dict[int, list[str]]) -> list[ast.stmt]:
    """The first statement of each nested block whose statements all become comments."""
    found = []
    for node in ast.walk(tree):
        if node is tree:
            continue  # the cell's own top level runs inside a function that has other statements
        for _, value in ast.iter_fields(node):
            if not (isinstance(value, list) and value and isinstance(value[0], ast.stmt)):
                continue
            replaced = [new_lines.get(id(stmt)) for stmt in value]
            if all(new is not None and _comments_only(new) for new in replaced):
                found.append(value[0])
    return found


def _comments_only(lines: list[str]) -> bool:
    return all(line.lstrip().startswith("#") for line in lines)


def module_name(module: str, names: frozenset[str]) -> str:
    """The name a translation uses for a standard module: the module's own name, or
    ``_module`` when the notebook binds that name itself (so neither hides the other)."""
    if module not in names:
        return module
    alias = f"_{module}"
    while alias in names:
        alias = f"_{alias}"
    return alias


def _commented(text: str, title: str) -> str:
    body = [f"# {line}".rstrip() for line in text.splitlines()]
    return "\n".join([f"# kiln export: {title}", *body]) + "\n"


def _uses_name(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(tree))


# -- recognising IPython's calls ------------------------------------------------------------------


def _ipython_call(node: ast.AST | None) -> tuple[str, list[str]] | None:
    """('run_line_magic', ['time', 'x = f()']) for ``get_ipython().run_line_magic(...)``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return None
    owner = node.func.value
    if not (
        isinstance(owner, ast.Call)
        and isinstance(owner.func, ast.Name)
        and owner.func.id == "get_ipython"
    ):
        return None
    args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if len(args) != len(node.args):
        return None
    return node.func.attr, args


def _cell_magic_call(tree: ast.Module) -> tuple[str, str, str] | None:
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    call = _ipython_call(tree.body[0].value)
    if call is None or call[0] != "run_cell_magic" or len(call[1]) != 3:
        return None
    name, line, body = call[1]
    return name, line, body


def _magic_statements(tree: ast.Module) -> list[ast.stmt]:
    found: list[ast.stmt] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr | ast.Assign):
            call = _ipython_call(node.value)
            if call is not None and call[0] in _GET_IPYTHON_METHODS:
                found.append(node)
    return found


def _statement(stmt: ast.stmt, *, names: frozenset[str], result: Translation) -> list[str]:
    call = _ipython_call(getattr(stmt, "value", None))
    assert call is not None
    method, args = call
    target = None
    if isinstance(stmt, ast.Assign):
        target = " = ".join(ast.unparse(t) for t in stmt.targets)
    if method == "system":
        return _shell(args[0], target, names, result)
    if method == "getoutput":
        return _shell(args[0], target or "_", names, result)
    name, line = args[0], args[1] if len(args) > 1 else ""
    return _line_magic(name, line, target, names=names, result=result)


# -- line magics ------------------------------------------------------------------------------


def _line_magic(
    name: str, line: str, target: str | None, *, names: frozenset[str], result: Translation
) -> list[str]:
    shown = f"%{name} {line}".rstrip()
    special = _LINE_RULES.get(name)
    if special is not None:
        translated = special(line, target, names, result)
        if translated is not None:
            return translated
    elif name in SHELL_ALIASES:
        return _shell(f"{name} {line}".strip(), target, names, result)
    elif name in DISPLAY_ONLY and target is None:
        return [f"# {shown}  (kiln export: not needed outside Jupyter)"]
    elif name in INSTALLERS:
        result.flag(f"`{shown}` is not run by the script: install the packages first")
        return [f"# kiln export: install before running this script: {name} {line}".rstrip()]
    result.flag(f"`{shown}` has no plain-Python equivalent; left as a comment")
    return [f"# kiln export: IPython-only, not run: {shown}"]


def _line_time(line: str, target: str | None, names: frozenset[str], r: Translation) -> list[str]:
    r.helpers.add("clock")
    statement = f"{target} = {line}" if target else line
    return ["_kiln_t0 = _clock()", statement, "_print_wall_time(_kiln_t0)"]


def _line_prun(line: str, target: str | None, names: frozenset[str], r: Translation) -> list[str]:
    return [f"{target} = {line}" if target else line]


def _line_cd(
    line: str, target: str | None, names: frozenset[str], r: Translation
) -> list[str] | None:
    words = shlex.split(line) if line.strip() else ["~"]
    if target is not None or len(words) != 1 or words[0].startswith("-"):
        return None
    os = r.use("os", names)
    return [f"{os}.chdir({os}.path.expanduser({_expanded(words[0], names)}))"]


def _line_env(
    line: str, target: str | None, names: frozenset[str], r: Translation
) -> list[str] | None:
    match = re.fullmatch(r"\s*(\w+)(?:\s*=\s*|\s+)(.*?)\s*", line)
    if target is not None or match is None:
        if target is None and re.fullmatch(r"\s*\w*\s*", line):
            return [f"# %env {line}  (kiln export: display only)".replace("  ", " ", 1)]
        return None
    os = r.use("os", names)
    variable = python_string(match.group(1))
    return [f"{os}.environ[{variable}] = {_expanded(match.group(2), names)}"]


def _line_run(
    line: str, target: str | None, names: frozenset[str], r: Translation
) -> list[str] | None:
    words = shlex.split(line) if line.strip() else []
    if target is not None or len(words) != 1 or not words[0].endswith(".py"):
        return None  # options, arguments or a notebook: no faithful equivalent
    runpy = r.use("runpy", names)
    path = _expanded(words[0], names)
    return [f'globals().update({runpy}.run_path({path}, run_name="__main__"))']


def _line_sx(line: str, target: str | None, names: frozenset[str], r: Translation) -> list[str]:
    return _shell(line, target or "_", names, r)


def _line_pwd(
    line: str, target: str | None, names: frozenset[str], r: Translation
) -> list[str] | None:
    if target is None:
        return ["# %pwd  (kiln export: display only)"]
    return [f"{target} = {r.use('os', names)}.getcwd()"]


_LineRule = Callable[[str, "str | None", frozenset[str], Translation], "list[str] | None"]
_LINE_RULES: Final[dict[str, _LineRule]] = {
    "time": _line_time,
    "prun": _line_prun,
    "cd": _line_cd,
    "env": _line_env,
    "run": _line_run,
    "sx": _line_sx,
    "system": _line_sx,
    "pwd": _line_pwd,
}


def _shell(command: str, target: str | None, names: frozenset[str], r: Translation) -> list[str]:
    """``!cmd`` -> subprocess.run(..., shell=True, check=True): a failing command stops the
    script (IPython only prints its output and goes on)."""
    words = command.split()
    if words and words[0] in ("pip", "conda", "mamba") and "install" in words:
        r.flag(f"`!{command}` is not run by the script: install the packages first")
        return [f"# kiln export: install before running this script: {command}"]
    subprocess = r.use("subprocess", names)
    expr = _expanded(command, names)
    if target is None:
        return [f"{subprocess}.run({expr}, shell=True, check=True)"]
    return [
        f"{target} = {subprocess}.run(",
        f"    {expr}, shell=True, check=True, capture_output=True, text=True",
        ").stdout.splitlines()",
    ]


def _expanded(text: str, names: frozenset[str]) -> str:
    """A Python expression for IPython's expansion of ``text``: ``{expr}`` and ``$name`` refer
    to the notebook's variables; anything else (``$HOME``, awk's ``{print $1}``) stays text."""
    text = re.sub(r"\$(\w+)", lambda m: _dollar(m, names), text)
    pieces: list[tuple[bool, str]] = []  # (is expression, text)
    pos = 0
    for match in re.finditer(r"\{([^{}]+)\}", text):
        if _is_notebook_expression(match.group(1), names):
            pieces.append((False, text[pos : match.start()]))
            pieces.append((True, match.group(1).strip()))
            pos = match.end()
    pieces.append((False, text[pos:]))
    if not any(is_expr for is_expr, _ in pieces):
        return python_string(text)
    body = "".join(
        "{" + piece + "}" if is_expr else piece.replace("{", "{{").replace("}", "}}")
        for is_expr, piece in pieces
    )
    fstring = "f" + python_string(body)
    try:
        compile(fstring, "<expansion>", "eval")
        return fstring
    except SyntaxError:
        return " + ".join(f"str({p})" if e else python_string(p) for e, p in pieces if p)


def _dollar(match: re.Match[str], names: frozenset[str]) -> str:
    name = match.group(1)
    return "{" + name + "}" if name in names else match.group(0)


def _is_notebook_expression(text: str, names: frozenset[str]) -> bool:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return False
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return bool(used) and used <= names


# -- cell magics ------------------------------------------------------------------------------


def _cell_magic(
    name: str, line: str, body: str, *, names: frozenset[str], result: Translation
) -> str:
    shown = f"%%{name} {line}".rstrip()
    if name in ("time", "prun", "capture"):
        inner = translate_cell(body, index=result.cell, names=names)
        result.imports |= inner.imports
        result.helpers |= inner.helpers
        result.issues.extend(inner.issues)
        result.valid = inner.valid
        if name == "capture" and line.split() and not line.split()[0].startswith("-"):
            result.flag(f"`{shown}`: the cell runs but its output is not captured into a variable")
        if name != "time":
            return f"# {shown}  (kiln export: the cell runs as is)\n{inner.code}"
        result.helpers.add("clock")
        return f"_kiln_t0 = _clock()  # {shown}\n{inner.code}_print_wall_time(_kiln_t0)\n"
    if name == "writefile":
        return _cell_writefile(line, body, names, result) or _flag_cell(shown, body, result)
    if name in SCRIPT_MAGICS or name == "script":
        return _cell_script(name, line, body, names, result) or _flag_cell(shown, body, result)
    if name in DISPLAY_ONLY:
        return _commented(body, f"{shown}: display only, not needed outside Jupyter")
    return _flag_cell(shown, body, result)


def _flag_cell(shown: str, body: str, result: Translation) -> str:
    result.flag(f"`{shown}` has no plain-Python equivalent; left as a comment")
    return _commented(body, f"IPython-only cell, not run: {shown}")


def _cell_writefile(line: str, body: str, names: frozenset[str], r: Translation) -> str | None:
    words = shlex.split(line)
    append = words[:1] in (["-a"], ["--append"])
    if append:
        words = words[1:]
    if len(words) != 1:
        return None
    path = _expanded(words[0], names)
    mode = "a" if append else "w"
    return (
        f'with open({path}, "{mode}", encoding="utf-8") as _kiln_file:  # %%writefile {line}\n'
        f"    _kiln_file.write({python_literal(body)})\n"
    )


def _cell_script(
    name: str, line: str, body: str, names: frozenset[str], r: Translation
) -> str | None:
    words = shlex.split(line)
    if name == "script":
        if not words:
            return None
        name, words = words[0], words[1:]
        program = SCRIPT_MAGICS.get(name, f"[{python_string(name)}]")
    else:
        program = SCRIPT_MAGICS[name]
    if any(w.startswith("--") for w in words):
        return None  # --out/--err/--bg/--proc capture into variables: no faithful equivalent
    if words:
        program = program[:-1] + ", " + ", ".join(python_string(w) for w in words) + "]"
    if "sys.executable" in program:
        program = program.replace("sys.", f"{r.use('sys', names)}.")
    run = f"{r.use('subprocess', names)}.run"
    return f"{run}({program}, input={python_literal(body)}, text=True, check=True)\n"


def python_string(text: str) -> str:
    """``repr(text)``, in double quotes when that needs no escaping (the style of our code)."""
    literal = repr(text)
    if literal.startswith("'") and '"' not in text:
        return '"' + literal[1:-1].replace("\\'", "'") + '"'
    return literal


def python_literal(text: str) -> str:
    """A readable literal for ``text``: a triple-quoted block when that is exact, else repr."""
    exact = not ("\\" in text or '"""' in text or text.endswith('"'))
    if not exact or any(not (c.isprintable() or c in "\n\t") for c in text):
        return python_string(text)
    return '"""\\\n' + text + '"""'
