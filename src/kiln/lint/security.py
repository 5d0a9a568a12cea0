"""KL301-KL307: secrets in sources, outputs and metadata; personal data in outputs.

Every text (cell sources, outputs, metadata, in any kernel's language) is scanned once by
:mod:`kiln.lint.secret_scan`: Kiln's patterns, passwords in connection strings (URLs, JDBC,
ADO.NET/ODBC, libpq; :mod:`kiln.lint.connstrings`) and detect-secrets' plugins. Known secrets
win over the high-entropy guess (KL304) at the same place.

Python cells that parse get a second look (:mod:`kiln.lint.pysecrets`): string expressions
built from literals (``"AKIA" + "..."``, adjacent literals, escapes, ``"".join([...])``,
f-strings, ``%``/``format``, ``b"...".decode()``) are folded (:mod:`kiln.lint.folding`),
scanned as the text they make at run time and reported where the expression starts; literal
values given to a secret's name (``password=``, ``api_key=``, ``{"token": ...}``,
``DB_PASSWORD = ...``) are reported unless they are placeholders or lookups. What the text scan
already sees is reported once, as the text scan found it. A cell that does not parse (and any
other kernel's cell) gets the text scan only.

Out of scope, on purpose: whatever only running the code would reveal. Decoding (base64, hex,
ROT13, ``codecs``), decompression or decryption, reversing or slicing, ``chr()`` arithmetic,
values passed through variables or across cells, secrets read from files or fetched at run
time. Running notebook code to find secrets would be a larger risk than the secrets; such
values show up in outputs (KL302) once printed, and otherwise need review.

Messages carry the masked value only (see :func:`kiln.lint.secret_scan.mask`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

from kiln.lint.cells import CodeCell, NotebookView, json_text, strip_data_uris, text_of
from kiln.lint.findings import Hit
from kiln.lint.personal import find_cards, find_emails, find_phones
from kiln.lint.pysecrets import CodeSecret, iter_secrets, scan_code
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
    if not ("KL301" in options.enabled or "KL304" in options.enabled):
        return
    found = find_secrets(source)
    code = None
    if cell is not None and cell.tree is not None:
        code = scan_code(cell.tree, cell.source, has_strings=bool(cell.nodes().strings))
    extra: list[CodeSecret] = []
    if code is not None and code.secrets:
        # what the text scan found wins: the code scan adds only values it could not see
        extra = [s for s in iter_secrets(code) if not _seen_in_text(s, found, source)]
        if extra:  # a piece of a value the code scan saw whole (`pw = "Tr0ub" + "4dor..."`)
            found = [h for h in found if not _piece_of(h, extra, source)]
    if "KL301" in options.enabled:
        hits: list[tuple[int, int, str]] = []
        for hit in found:
            line, column = _line_column(source, hit.start)
            hits.append((line, column, f"{hit.kind} in the source: {_masked(hit)}"))
        for secret in extra:
            how = " (built from string literals)" if secret.built else ""
            shown = mask(secret.secret, reveal=secret.reveal)
            hits.append((secret.line, secret.column, f"{secret.kind} in the source{how}: {shown}"))
        for line, column, message in sorted(hits) if extra else hits:
            yield Hit("KL301", index, line, column, message)
    if "KL304" in options.enabled:
        known = found
        if extra:
            known = [*found, *(SecretHit(s.kind, s.secret, -1, s.reveal) for s in extra)]
        folded = code.folded if code is not None else []
        for line, column, token in _entropy_in_source(
            source, cell, known, options.min_length, folded
        ):
            yield Hit(
                "KL304",
                index,
                line,
                column,
                f"random-looking string in the source: {mask(token)}",
            )


def _entropy_in_source(
    source: str,
    cell: CodeCell | None,
    found: Sequence[SecretHit],
    min_length: int,
    folded: Sequence[tuple[int, int, str]] = (),
) -> Iterator[tuple[int, int, str]]:
    covered = {h.secret for h in found}
    if cell is not None and cell.tree is not None:
        # Python: only string literals (and strings built from them) can hold a secret
        strings = [
            (node.lineno, node.col_offset + 1, node.value)
            for node in cell.nodes().strings
            if isinstance(node.value, str) and len(node.value) >= min_length
        ]
        if folded:
            strings += [f for f in folded if len(f[2]) >= min_length]
        reported: set[str] = set()
        for line, column, value in strings:
            for hit in high_entropy_tokens(value, min_length=min_length):
                if not _covered(hit.secret, covered) and hit.secret not in reported:
                    reported.add(hit.secret)
                    yield line, column, hit.secret
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


def _seen_in_text(secret: CodeSecret, found: Sequence[SecretHit], source: str) -> bool:
    if any(secret.secret in hit.secret for hit in found):
        return True
    if not secret.literal:
        return False
    return any(
        hit.kind == secret.kind
        and secret.line <= _line_column(source, hit.start)[0] <= secret.end_line
        for hit in found
    )


def _piece_of(hit: SecretHit, extra: Sequence[CodeSecret], source: str) -> bool:
    line = _line_column(source, hit.start)[0]
    return any(hit.secret in s.secret and s.line <= line <= s.end_line for s in extra)


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
