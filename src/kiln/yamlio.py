"""The one YAML reader: bounded (no alias bombs, no endless nesting) and located (line, column).

Every YAML Kiln reads from users goes through :func:`load_yaml`: ``kiln.yaml``, parameter files
(``-f``), inline parameters (``-y``) and sweep grids. It is PyYAML's safe loader with three
changes that matter for untrusted input:

- **Bounded.** A document over ``max_bytes`` is refused before parsing. Aliases may not grow
  the document by more than ``max_alias_nodes`` nodes once expanded (a 300-byte "billion
  laughs" file otherwise expands to gigabytes), recursive aliases are refused, nesting is
  limited to ``max_depth`` levels and integers to 1,000 digits. Each refusal is a
  :class:`YamlError` (a usage error, exit 2) that says which limit was hit.
- **Located.** Mappings and lists come back as :class:`YamlMap` / :class:`YamlList` (a ``dict``
  and a ``list``) that remember the line and column of each key or item, so later validation
  can point at the exact place. Duplicate keys are an error instead of "last one wins".
- **Dates stay text.** ``day: 2026-11-21`` gives the string ``"2026-11-21"`` (parameters,
  cron and templates are text; a ``datetime`` would surprise every consumer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln.errors import UsageError

if TYPE_CHECKING:
    import yaml

#: (line, column), both counted from 1
Mark = tuple[int, int]

MAX_BYTES = 16 * 1024 * 1024
MAX_ALIAS_NODES = 10_000
MAX_DEPTH = 100
MAX_INT_DIGITS = 1000

_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"
_INT = "tag:yaml.org,2002:int"
_STR = "tag:yaml.org,2002:str"
_PLAIN = frozenset({"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"})


class YamlError(UsageError):
    """YAML that cannot be used, with where it came from (``origin``) and the position."""

    def __init__(self, origin: str, problem: str, mark: Mark | None = None) -> None:
        self.origin = origin
        self.problem = problem
        self.mark = mark
        where = f"{origin}:{mark[0]}:{mark[1]}" if mark else origin
        super().__init__(f"{where}: {problem}")


class YamlMap(dict[Any, Any]):
    """A mapping read from YAML: ``marks[key]`` is where the key was written."""

    mark: Mark | None = None
    marks: dict[Any, Mark]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks = {}


class YamlList(list[Any]):
    """A list read from YAML: ``marks[i]`` is where item ``i`` was written."""

    mark: Mark | None = None
    marks: list[Mark]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.marks = []


def load_yaml(
    text: str | bytes,
    *,
    origin: str,
    max_bytes: int = MAX_BYTES,
    max_alias_nodes: int = MAX_ALIAS_NODES,
    max_depth: int = MAX_DEPTH,
    word_keys: bool = False,
) -> Any:
    """Parse one YAML document (empty text gives ``None``); see the module docstring.

    ``word_keys``: a bare ``on``/``off``/``yes``/``no``/``true``/``false`` *key* stays the word
    (YAML 1.1 reads it as a boolean); the project file's keys are words, never booleans."""
    import yaml

    if isinstance(text, bytes):
        text = _decode(text, origin, max_bytes)
    elif len(text) > max_bytes:
        raise YamlError(origin, f"the document is larger than {max_bytes // 1024 // 1024} MiB")
    if "\0" in text:
        raise YamlError(origin, "the text contains NUL characters: is it a binary file?")
    loader = _loader_class()(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise _located(origin, exc) from None
    except yaml.YAMLError as exc:
        raise YamlError(origin, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlError(origin, f"nested more than {max_depth} levels deep") from None
    finally:
        loader.dispose()
    if node is None:
        return None
    builder = _Builder(loader, origin, max_depth, word_keys=word_keys)
    budget = builder.unique(node) + max_alias_nodes
    expanded = builder.expanded(node, budget)
    if expanded > budget:
        raise YamlError(
            origin,
            f"aliases expand the document to over {budget:,} nodes (at most "
            f"{max_alias_nodes:,} more than written): refusing a YAML alias bomb",
        )
    return builder.build(node, 0)


def plain(value: Any) -> Any:
    """A copy made of plain ``dict`` and ``list`` (for values handed to notebooks)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def mark_of(node: Any) -> Mark:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _decode(data: bytes, origin: str, max_bytes: int) -> str:
    if len(data) > max_bytes:
        raise YamlError(origin, f"the document is larger than {max_bytes // 1024 // 1024} MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YamlError(
            origin, f"not UTF-8 text (byte {exc.start}): is it a binary file?"
        ) from None


def _located(origin: str, exc: yaml.MarkedYAMLError) -> YamlError:
    mark = exc.problem_mark or exc.context_mark
    problem = ", ".join(part for part in (exc.context, exc.problem) if part) or "cannot parse"
    at = (mark.line + 1, mark.column + 1) if mark is not None else None
    return YamlError(origin, f"invalid YAML: {problem}", at)


_LOADER: Any = None


def _loader_class() -> Any:
    """The C (libyaml) safe loader when available, with timestamps resolved as text."""
    global _LOADER
    if _LOADER is None:
        import yaml

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        class KilnLoader(base):  # type: ignore[misc,valid-type]
            pass

        KilnLoader.yaml_implicit_resolvers = {
            first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
            for first, resolvers in base.yaml_implicit_resolvers.items()
        }
        KilnLoader.add_constructor(_TIMESTAMP, lambda _loader, node: str(node.value))
        _LOADER = KilnLoader
    return _LOADER


class _Builder:
    """Turns the composed node graph into Python values, checking the bounds."""

    def __init__(self, loader: Any, origin: str, max_depth: int, *, word_keys: bool) -> None:
        self.word_keys = word_keys
        self.loader = loader
        self.origin = origin
        self.max_depth = max_depth

    def unique(self, root: Any) -> int:
        """Nodes as written (each anchored node once)."""
        seen: set[int] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.extend(self._children(node))
        return len(seen)

    def expanded(self, root: Any, budget: int) -> int:
        """Nodes once every alias is expanded (stops counting past ``budget``)."""
        sizes: dict[int, int] = {}
        active: set[int] = set()

        def size(node: Any, depth: int) -> int:
            key = id(node)
            if key in sizes:
                return sizes[key]
            if key in active:
                raise YamlError(
                    self.origin, "a recursive alias (an anchor used inside itself)", mark_of(node)
                )
            if depth > self.max_depth:
                raise YamlError(
                    self.origin, f"nested more than {self.max_depth} levels deep", mark_of(node)
                )
            active.add(key)
            total = 1
            for child in self._children(node):
                total += size(child, depth + 1)
                if total > budget:
                    break
            active.discard(key)
            sizes[key] = total
            return total

        return size(root, 0)

    @staticmethod
    def _children(node: Any) -> list[Any]:
        import yaml

        if isinstance(node, yaml.MappingNode):
            return [part for pair in node.value for part in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    def build(self, node: Any, depth: int) -> Any:
        import yaml

        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN:
            raise YamlError(
                self.origin,
                f"unsupported YAML tag {node.tag!r}: only plain lists and mappings are read",
                mark_of(node),
            )
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, depth)
        if isinstance(node, yaml.SequenceNode):
            out = YamlList()
            out.mark = mark_of(node)
            for item in node.value:
                out.append(self.build(item, depth + 1))
                out.marks.append(mark_of(item))
            return out
        return self._scalar(node)

    def _mapping(self, node: Any, depth: int) -> YamlMap:
        import yaml

        out = YamlMap()
        out.mark = mark_of(node)
        merged: list[YamlMap] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                value = self.build(value_node, depth + 1)
                sources = value if isinstance(value, list) else [value]
                if not all(isinstance(s, YamlMap) for s in sources):
                    raise YamlError(
                        self.origin,
                        "'<<' merges a mapping or a list of mappings",
                        mark_of(key_node),
                    )
                merged.extend(sources)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlError(
                    self.origin,
                    "a mapping key must be a plain value, not a list or mapping",
                    mark_of(key_node),
                )
            key = self._scalar(key_node)
            if self.word_keys and isinstance(key, bool) and not key_node.style:
                key = key_node.value  # notify's `on: failure` means the word
            if key in out:
                first = out.marks[key]
                raise YamlError(
                    self.origin,
                    f"duplicate key {key!r} (first written at line {first[0]})",
                    mark_of(key_node),
                )
            out[key] = self.build(value_node, depth + 1)
            out.marks[key] = mark_of(key_node)
        for source in merged:  # explicit keys win over merged ones, earlier merges over later
            for key, value in source.items():
                if key not in out:
                    out[key] = value
                    out.marks[key] = source.marks.get(key, source.mark or (0, 0))
        return out

    def _scalar(self, node: Any) -> Any:
        import yaml

        if node.tag == _INT and len(node.value.lstrip("+-").replace("_", "")) > MAX_INT_DIGITS:
            raise YamlError(
                self.origin,
                f"an integer with more than {MAX_INT_DIGITS} digits is not a usable value",
                mark_of(node),
            )
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise _located(self.origin, exc) from None
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            raise YamlError(self.origin, f"invalid value: {exc}", mark_of(node)) from None
