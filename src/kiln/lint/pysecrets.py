"""Secrets in parsed Python cells that a text scan cannot see.

Two passes in one walk of a cell's syntax tree (the tree the other rules use: nothing is parsed
again). Cheap tests on the source decide first: a cell without string literals, or without
a string-building construct or a secret-ish name (one regex each, :data:`_BUILDS_STRINGS` and
:data:`_NAMES_HINT`), is not walked at all, and the walk skips every statement whose lines hold
no match. Most cells cost a substring test or two here.

* **folded strings**: every string-building expression that :func:`kiln.lint.folding.fold`
  can evaluate (``"AKIA" + "..."``, ``"".join([...])``, escapes, f-strings, ``%``/``format``,
  ``b"...".decode()``) and whose value does not appear as such in the source is scanned like
  any text, and reported where the expression starts;
* **named secrets**: a literal (or folded) string given to a secret-named keyword argument
  (``connect(password="...")``), dict entry (``{"api_key": "..."}``), assignment
  (``DB_PASSWORD = "..."``, ``os.environ["TOKEN"] = "..."``) or parameter default. What is not
  a constant (``os.environ[...]``, ``getpass()``, a name) is never reported, nor are
  placeholders (see :func:`credential_like`).
"""

from __future__ import annotations

import ast
import re
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

from kiln.lint.connstrings import is_placeholder
from kiln.lint.folding import fold, fold_chain, is_chain, may_fold_call
from kiln.lint.secret_scan import find_secrets

#: the shortest folded value scanned: no secret format Kiln knows is shorter
MIN_FOLDED = 8

# A source worth folding: an operator or method right after a literal, adjacent literals (also
# with comments between them), a literal inside an f-string field, `+` before a literal, an
# escape. A superset of what fold() handles, checked before any walk. (A bytes or raw literal
# alone is verbatim in the source, which the text scan reads.) Every branch starts with a rare
# character, so the regex stays fast.
_BUILDS_STRINGS = re.compile(
    r"""["'](?:\s*(?:[+%]|\.(?:join|format|decode|encode)\b)|\s+[rRbBuUfF]{0,2}["']"""
    r"""|(?:\s*#[^\n]*)+\s+[rRbBuUfF]{0,2}["']"""
    r"""|(?<=[^"'\s\\]["'])["'](?=[^"']))"""
    r"""|\{\s*[rRbBuU]{0,2}["']|\+\s*[rRbBuUfF]{0,2}["']|\\[xuUN0-7]"""
)

#: a name ending in one of these words holds a password (group 1) or another secret
_SECRET_NAME = re.compile(
    r"(?:^|[_.])(?:(password|passwd|pwd|passphrase)|secret|token|api_?key|access_key|"
    r"secret_key|private_key)$"
)
_BYTES_PREFIXES = ("b'", 'b"', "B'", 'B"')
_NAME_WORDS = ("pass", "pwd", "secret", "token", "key", "setdefault", "putenv", "setenv")
_NAMES_HINT = re.compile(
    r"(?:pass\w*|pwd|secret|token|key)[\"']?\]?\s*[:=]|setdefault|putenv|setenv", re.I
)
#: names ending in a secret word that hold something else (tokenizer vocabularies, paging)
_NOT_SECRET_NAMES = re.compile(
    r"(?:^|_)(?:bos|eos|pad|unk|sep|cls|mask|special|start|end|stop|next|page|pagination|"
    r"continuation|sort|cache|partition|primary|foreign|dict|csrf)_token$"
)
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
_FILE_LIKE = re.compile(
    r"(?:^~?[/\\]|^\.{1,2}[/\\]|\.(?:json|toml|ya?ml|txt|env|ini|cfg|conf|pem|key|p12|pfx|crt)$)",
    re.I,
)
_REGEX_LIKE = re.compile(r"\\[wdsbWDSB]|\[\^|\(\?|\.[*+]")
_ENV_SETTERS = frozenset({"setdefault", "putenv", "setenv"})


_BUILDING = (ast.BinOp, ast.JoinedStr, ast.Call, ast.Constant)
_NAMING = (ast.Call, ast.Dict, ast.Assign, ast.AnnAssign, ast.arguments)
#: node types that can hold a string below them (not contexts, operators, aliases)
_INNER = (
    ast.stmt,
    ast.expr,
    ast.arguments,
    ast.keyword,
    ast.comprehension,
    ast.excepthandler,
    ast.withitem,
    ast.match_case,
    ast.pattern,
)
_LEAVES = (ast.Name,)


@dataclass(frozen=True)
class CodeSecret:
    line: int
    column: int  # 1-based, in characters
    end_line: int  # the last line of the expression
    kind: str
    secret: str
    reveal: bool
    built: bool  # found in a folded string expression (not under a secret name)
    #: found in one literal with its escapes resolved: a text scan hit of the same kind in
    #: that literal's lines is the same secret, seen through its escapes
    literal: bool = False


@dataclass
class CodeScan:
    secrets: list[CodeSecret] = field(default_factory=list)
    #: (line, column, value) of folded strings not in the source as such: for KL304
    folded: list[tuple[int, int, str]] = field(default_factory=list)


def scan_code(tree: ast.Module, source: str, *, has_strings: bool = True) -> CodeScan | None:
    """Secrets in one parsed cell (``source`` is its text, to place columns and to skip values
    a text scan already sees); None when the cell gives no reason to look (most cells).
    ``has_strings=False`` says the tree holds no str literal: then only a bytes literal could
    hold a secret, and without one nothing is read."""
    if not has_strings and not any(p in source for p in _BYTES_PREFIXES):
        return None
    fold_at = _match_lines(_BUILDS_STRINGS, source)
    lowered = source.lower()  # substring tests first: ~6x cheaper than the regex alone
    name_at = []
    if any(w in lowered for w in _NAME_WORDS):
        name_at = _match_lines(_NAMES_HINT, source)
    if not (fold_at or name_at):
        return None
    scan = _Scanner(source, sorted({*fold_at, *name_at}))
    scan.walk(tree, want_folds=bool(fold_at), want_names=bool(name_at))
    return scan.result


def _match_lines(regex: re.Pattern[str], source: str) -> list[int]:
    """The (1-based) lines where ``regex`` matches in ``source``."""
    lines: list[int] = []
    line, position = 1, 0
    for match in regex.finditer(source):
        line += source.count("\n", position, match.start())
        position = match.start()
        if not lines or lines[-1] != line:
            lines.append(line)
    return lines


def secret_name(name: str) -> str | None:
    """``"password"`` or ``"secret"`` when ``name`` (an argument, key or variable) says it
    holds one: ``password``, ``db_password``, ``DB-PASSWORD``, ``api_key``, ``client_secret``,
    ``auth_token``; None for ``secret_name``, ``password_field``, ``pad_token`` and the like."""
    lowered = name.lower().replace("-", "_").strip("_ ")
    match = _SECRET_NAME.search(lowered)
    if match is None or _NOT_SECRET_NAMES.search(lowered):
        return None
    return "password" if match.group(1) else "secret"


def credential_like(value: str, label: str) -> bool:
    """Whether a value under a secret name is a credential, not a stand-in for one.

    Not credentials: placeholders (``""``, ``"<password>"``, ``"***"``, ``"changeme"``,
    ``"${PASSWORD}"``, ``"{password}"``, ``"%s"``), templated or sequential strings, values
    with spaces (prompts, messages), URLs, file paths and names, regular expressions,
    environment variable names (``"DB_PASSWORD"``) and names repeating the word
    (``"db_password"``). A password needs 6 characters; a token or key needs 8, and digits or
    mixed case (``"DEMO_KEY"``, ``"Bearer"``, ``"<|endoftext|>"`` are not keys).
    """
    from detect_secrets.filters import heuristic

    if (
        len(value) < 6
        or any(c.isspace() for c in value)
        or "://" in value
        or is_placeholder(value)
        or _ENV_NAME.match(value)
        or _FILE_LIKE.search(value)
        or _REGEX_LIKE.search(value)
    ):
        return False
    lowered = value.lower()
    if value.isidentifier() and any(
        w in lowered for w in ("pass", "pwd", "secret", "token", "key")
    ):
        return False
    if (
        heuristic.is_templated_secret(value)
        or heuristic.is_sequential_string(value)
        or heuristic.is_potential_uuid(value)
        or heuristic.is_not_alphanumeric_string(value)
    ):
        return False
    if label == "password":
        return True
    mixed = any(c.islower() for c in value) and any(c.isupper() for c in value)
    return len(value) >= 8 and (mixed or any(c.isdigit() for c in value))


class _Scanner:
    def __init__(self, source: str, hint_lines: list[int]) -> None:
        self.source = source
        self.lines = source.split("\n")
        self.hint_lines = hint_lines  # sorted: where the gates matched
        self.result = CodeScan()

    def _hinted(self, node: ast.stmt) -> bool:
        """Whether a statement spans a line where a gate matched (else nothing is there)."""
        first = node.lineno
        decorators = getattr(node, "decorator_list", None)
        if decorators:
            first = min(first, decorators[0].lineno)
        at = bisect_left(self.hint_lines, first)
        return at < len(self.hint_lines) and self.hint_lines[at] <= (node.end_lineno or first)

    def walk(self, tree: ast.Module, *, want_folds: bool, want_names: bool) -> None:
        stack: list[ast.AST] = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.stmt) and not self._hinted(node):
                continue
            if want_names and isinstance(node, _NAMING):
                self._named(node)
            if want_folds and isinstance(node, _BUILDING):
                if isinstance(node, ast.Constant):
                    if isinstance(node.value, (str, bytes)) and len(node.value) >= MIN_FOLDED:
                        self._folded(node, node.value)  # escapes, implicit concatenation
                    continue
                if is_chain(node):
                    whole, runs, rest = fold_chain(node)
                    if whole is not None:
                        self._folded(node, whole)
                    for start, run in runs:
                        self._folded(start, run)
                    # the parts of a chain, not its left spine: a long `+` chain stays linear
                    stack.extend(part for part in rest if not isinstance(part, _LEAVES))
                    continue
                if not isinstance(node, ast.Call) or may_fold_call(node):
                    value = fold(node)
                    if value is not None:
                        self._folded(node, value)
                        continue  # its parts are literals: nothing else below
            # like ast.iter_child_nodes, without the generators and the leaves that hold no
            # string (contexts, operators, names): this walk is most of the pass's cost
            for name in node._fields:
                child = getattr(node, name, None)
                if isinstance(child, list):
                    stack.extend(
                        c for c in child if isinstance(c, _INNER) and not isinstance(c, _LEAVES)
                    )
                elif isinstance(child, _INNER) and not isinstance(child, _LEAVES):
                    stack.append(child)

    # -- folded strings ---------------------------------------------------------------------

    def _folded(self, node: ast.AST, value: str | bytes) -> None:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if len(text) < MIN_FOLDED or text in self.source:
            return  # the text scan sees it as it is
        line, column = self._place(node)
        self.result.folded.append((line, column, text))
        end = getattr(node, "end_lineno", None) or line
        literal = isinstance(node, ast.Constant)
        for hit in find_secrets(text):
            secret = CodeSecret(line, column, end, hit.kind, hit.secret, hit.reveal, True, literal)
            self.result.secrets.append(secret)

    # -- named secrets ----------------------------------------------------------------------

    def _named(self, node: ast.AST) -> None:
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg is not None:
                    self._check(keyword.arg, keyword.value, f"passed as {keyword.arg}=")
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr in _ENV_SETTERS
                and len(node.args) == 2
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                variable = node.args[0].value
                self._check(variable, node.args[1], f"set as {variable}")
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    self._check(key.value, value, f"under the key {key.value!r}")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                name = _target_name(target)
                if name is not None:
                    self._check(name, node.value, f"assigned to {name}")
        elif isinstance(node, ast.arguments):
            positional = [*node.posonlyargs, *node.args]
            with_default = positional[len(positional) - len(node.defaults) :]
            pairs = list(zip(with_default, node.defaults, strict=True))
            pairs += [
                (a, d)
                for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True)
                if d is not None
            ]
            for arg, default in pairs:
                self._check(arg.arg, default, f"default of {arg.arg}=")

    def _check(self, name: str, value_node: ast.expr, where: str) -> None:
        label = secret_name(name)
        if label is None:
            return
        value = fold(value_node)
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if value is None or not credential_like(value, label) or find_secrets(value):
            return  # a value of a known format is reported as such, by the text or fold scan
        line, column = self._place(value_node)
        end = value_node.end_lineno or line
        secret = CodeSecret(line, column, end, f"{label} {where}", value, False, built=False)
        self.result.secrets.append(secret)

    def _place(self, node: ast.AST) -> tuple[int, int]:
        """1-based line and character column (ast counts UTF-8 bytes) of ``node``'s start."""
        line = getattr(node, "lineno", 1)
        offset = getattr(node, "col_offset", 0)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        if not text.isascii():
            offset = len(text.encode()[:offset].decode(errors="ignore"))
        return line, offset + 1


def _target_name(target: ast.expr) -> str | None:
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute):
        return target.attr
    if isinstance(target, ast.Subscript):
        key = target.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value
    return None


def iter_secrets(scan: CodeScan) -> Iterator[CodeSecret]:
    """The secrets of one scan, one per value and place."""
    seen: set[tuple[int, int, str]] = set()
    for secret in scan.secrets:
        key = (secret.line, secret.column, secret.secret)
        if key not in seen:
            seen.add(key)
            yield secret
