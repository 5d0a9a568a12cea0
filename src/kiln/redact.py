"""Secrets kept out of what a run leaves behind: their values masked as ``***``.

A :class:`Redactor` knows the secret values of one run (the parameters declared secret, the
environment values listed as secrets) and, with ``scan``, also masks what the lint scanner
(:mod:`kiln.lint.secret_scan`) recognises as a secret format (cloud keys, tokens, private
keys, passwords in connection strings). Reports, e-mails, webhooks and logs pass their text
through it; the run itself still receives the real values.

:func:`secret_values` reads secrets from where a schedule or a request says (``env:NAME``);
a missing source is an error naming it, before anything starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: what a masked secret becomes
MASK = "***"
#: values shorter than this are not masked as plain text (masking "ab" everywhere would
#: garble the report and tell more than it hides); the scanner still applies
MIN_LENGTH = 4


def secret_values(sources: Mapping[str, str], *, missing_ok: bool = False) -> dict[str, str]:
    """Each secret parameter's value read from its source (``env:NAME``); a source that is
    missing raises :class:`kiln.errors.ParameterError` naming the parameter and the source
    (with ``missing_ok``, it is left out)."""
    import os

    found: dict[str, str] = {}
    for name, source in sources.items():
        kind, _, where = source.partition(":")
        if kind != "env" or not where:
            from kiln.errors import ParameterError

            raise ParameterError(
                f"secret parameter {name!r}: unknown source {source!r} (expected env:NAME)",
                name=name,
            )
        value = os.environ.get(where)
        if value is None:
            if missing_ok:
                continue
            from kiln.errors import ParameterError

            raise ParameterError(
                f"secret parameter {name!r}: the environment variable {where} is not set",
                name=name,
                expected=f"a value in ${where}",
            )
        found[name] = value
    return found


class Redactor:
    """Masks known secret values (longest first) and, with ``scan``, scanner hits."""

    def __init__(self, values: Iterable[object] = (), *, scan: bool = True) -> None:
        import json

        forms: set[str] = set()
        for value in values:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            # as written, inside a JSON string, inside a Python string literal
            forms.update({text, json.dumps(text)[1:-1], repr(text)[1:-1]})
        self.values = sorted((f for f in forms if len(f) >= MIN_LENGTH), key=len, reverse=True)
        self.scan = scan

    def __bool__(self) -> bool:
        return bool(self.values) or self.scan

    def mask_values(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def mask(self, text: str) -> str:
        """``text`` with every known value and (with ``scan``) every scanner hit masked."""
        text = self.mask_values(text)
        if not self.scan or len(text) < 8:
            return text
        from kiln.lint.secret_scan import find_secrets

        hits = find_secrets(text)
        if not hits:
            return text
        out, at = [], 0
        for hit in hits:
            start = text.find(hit.secret, at)
            if start < 0:
                continue
            out.append(text[at:start])
            out.append(MASK)
            at = start + len(hit.secret)
        out.append(text[at:])
        return "".join(out)

    __call__ = mask

    def mask_json(self, value: Any) -> Any:
        """``value`` (JSON-like) with every text in it masked."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, list):
            return [self.mask_json(v) for v in value]
        if isinstance(value, dict):
            return {k: self.mask_json(v) for k, v in value.items()}
        return value


#: output data that is text a person reads (images and other binary data are left alone:
#: base64 looks like a secret to an entropy scanner)
_TEXT_MIMES = ("text/plain", "text/html", "text/markdown", "text/latex", "application/json")


def mask_outputs(nb: Any, redactor: Redactor) -> None:
    """Mask, in place, every readable text of the notebook's outputs (streams, text data,
    errors) with ``redactor`` (its values and the scanner's finds)."""
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            kind = output.get("output_type")
            if kind == "stream":
                output["text"] = redactor.mask(_text(output.get("text", "")))
            elif kind == "error":
                output["evalue"] = redactor.mask(str(output.get("evalue", "")))
                output["traceback"] = [redactor.mask(str(t)) for t in output.get("traceback", [])]
            data = output.get("data")
            if isinstance(data, dict):
                for mime in _TEXT_MIMES:
                    if mime in data:
                        value = data[mime]
                        data[mime] = (
                            redactor.mask_json(value)
                            if mime == "application/json"
                            else redactor.mask(_text(value))
                        )


def masked_notebook(nb: Any, redactor: Redactor) -> Any:
    """A copy of ``nb`` with the redactor's values masked everywhere (sources, metadata,
    outputs)."""
    import copy

    shown = copy.deepcopy(nb)
    for cell in shown.get("cells", []):
        cell["source"] = redactor.mask_values(_text(cell.get("source", "")))
    mask_outputs(shown, redactor)
    return shown


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)
