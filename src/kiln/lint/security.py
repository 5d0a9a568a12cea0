"""KL301-KL307: secrets in sources, outputs and metadata; personal data in outputs.

Every text is scanned once; known secrets win over the high-entropy guess at the same place.
Messages carry the masked value only (see :func:`kiln.lint.secret_scan.mask`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from kiln.lint.cells import CodeCell, NotebookView, json_text, strip_data_uris, text_of
from kiln.lint.findings import Hit
from kiln.lint.personal import find_cards, find_emails, find_phones
from kiln.lint.secret_scan import SecretHit, find_secrets, high_entropy_tokens, mask

SECURITY_RULES = ("KL301", "KL302", "KL303", "KL304", "KL305", "KL306", "KL307")


@dataclass(frozen=True)
class SecurityOptions:
    enabled: frozenset[str]
    min_length: int = 20
    allow_domains: Collection[str] = ()


def security_hits(view: NotebookView, options: SecurityOptions) -> Iterator[Hit]:
    code = {cell.index: cell for cell in view.code}
    for index, cell in enumerate(view.cells):
        source = strip_data_uris(text_of(cell.get("source")))
        if source.strip():
            yield from _source_hits(index, source, code.get(index), options)
        metadata = cell.get("metadata")
        if isinstance(metadata, dict) and set(metadata) - {"tags", "collapsed", "scrolled"}:
            found = _text_hits("KL303", index, "cell metadata", json_text(metadata), options)
            yield from (hit for _, hit in found)
    for code_cell in view.code:
        # One output shows a value several ways (text/plain and text/html of a DataFrame):
        # each value is reported once per output.
        seen: set[tuple[str, int, str]] = set()
        for text in code_cell.output_texts():
            if text.label == "output metadata":
                where = f"output {text.output} metadata"
                found = _text_hits("KL303", code_cell.index, where, text.text, options)
                yield from (hit for _, hit in found)
                continue
            where = f"output {text.output} ({text.label})"
            for value, hit in [
                *_text_hits("KL302", code_cell.index, where, text.text, options),
                *_personal_hits(code_cell.index, where, text.text, options),
            ]:
                key = (hit.rule, text.output, value)
                if key not in seen:
                    seen.add(key)
                    yield hit
    if view.metadata:
        found = _text_hits("KL303", None, "notebook metadata", json_text(view.metadata), options)
        yield from (hit for _, hit in found)


def _source_hits(
    index: int, source: str, cell: CodeCell | None, options: SecurityOptions
) -> Iterator[Hit]:
    found = find_secrets(source) if "KL301" in options.enabled or "KL304" in options.enabled else []
    if "KL301" in options.enabled:
        for hit in found:
            line, column = _line_column(source, hit.start)
            yield Hit("KL301", index, line, column, f"{hit.kind} in the source: {_masked(hit)}")
    if "KL304" in options.enabled:
        for line, column, token in _entropy_in_source(source, cell, found, options.min_length):
            yield Hit(
                "KL304",
                index,
                line,
                column,
                f"random-looking string in the source: {mask(token)}",
            )


def _entropy_in_source(
    source: str, cell: CodeCell | None, found: Sequence[SecretHit], min_length: int
) -> Iterator[tuple[int, int, str]]:
    covered = {h.secret for h in found}
    if cell is not None and cell.tree is not None:
        # Python: only string literals can hold a secret, never identifiers
        for node in cell.nodes().strings:
            value = str(node.value)
            if len(value) < min_length:
                continue
            for hit in high_entropy_tokens(value, min_length=min_length):
                if not _covered(hit.secret, covered):
                    yield node.lineno, node.col_offset + 1, hit.secret
        return
    for hit in high_entropy_tokens(source, min_length=min_length):
        if not _overlaps(hit, found):
            line, column = _line_column(source, hit.start)
            yield line, column, hit.secret


def _text_hits(
    rule: str, cell: int | None, where: str, text: str, options: SecurityOptions
) -> Iterator[tuple[str, Hit]]:
    """Secrets (``rule``) and random-looking strings (KL304) in one text, each hit with the raw
    value it is about (for de-duplication, never for display)."""
    wants_secret = rule in options.enabled
    wants_entropy = "KL304" in options.enabled
    if not text.strip() or not (wants_secret or wants_entropy):
        return
    found = find_secrets(text)
    if wants_secret:
        for hit in found:
            line = text.count("\n", 0, hit.start) + 1
            message = f"{hit.kind} in {where}, line {line}: {_masked(hit)}"
            yield hit.secret, Hit(rule, cell, message=message)
    if wants_entropy:
        for hit in high_entropy_tokens(text, min_length=options.min_length):
            if not _overlaps(hit, found):
                line = text.count("\n", 0, hit.start) + 1
                message = f"random-looking string in {where}, line {line}: {mask(hit.secret)}"
                yield hit.secret, Hit("KL304", cell, message=message)


def _personal_hits(
    cell: int, where: str, text: str, options: SecurityOptions
) -> Iterator[tuple[str, Hit]]:
    finders = (
        ("KL305", lambda t: find_emails(t, allow_domains=options.allow_domains)),
        ("KL306", find_phones),
        ("KL307", find_cards),
    )
    for rule, finder in finders:
        if rule in options.enabled:
            for hit in finder(text):
                line = text.count("\n", 0, hit.start) + 1
                message = f"{hit.kind} in {where}, line {line}: {hit.masked}"
                yield hit.value, Hit(rule, cell, message=message)


def _masked(hit: SecretHit) -> str:
    return mask(hit.secret, reveal=hit.reveal)


def _covered(token: str, secrets: set[str]) -> bool:
    return any(token in s or s in token for s in secrets)


def _overlaps(hit: SecretHit, found: Sequence[SecretHit]) -> bool:
    end = hit.start + len(hit.secret)
    return any(h.start < end and hit.start < h.start + len(h.secret) for h in found)


def _line_column(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    start = text.rfind("\n", 0, offset) + 1
    return line, offset - start + 1
