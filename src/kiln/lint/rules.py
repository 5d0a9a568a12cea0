"""The lint rules, as data: one row per rule, with its id, severity, category and fix hint.

Ids are grouped by their first digit, so a prefix selects a family (``KL1`` reproducibility,
``KL2`` production readiness, ``KL3`` security). Which code produces each rule lives in
:mod:`kiln.lint.engine` (``CHECKS``); what a rule means, and how to fix it, lives here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]

#: most severe first; text output sorts by position, this orders summaries
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")

_NO_OPTIONS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Rule:
    """One lint rule: what it finds, how bad that is by default, and how to fix it.

    ``options`` holds the rule's settings and their defaults; ``kiln.yaml`` may change them
    (``lint: {rules: {KL201: {max_output_kb: 2000}}}``) with values of the same type.
    """

    id: str
    name: str
    severity: Severity
    category: str
    summary: str
    hint: str
    options: Mapping[str, Any] = field(default_factory=lambda: _NO_OPTIONS)


def _opts(**values: Any) -> Mapping[str, Any]:
    return MappingProxyType(dict(values))


RULES: tuple[Rule, ...] = (
    Rule(
        "KL001",
        "unreadable-notebook",
        "error",
        "general",
        "the file cannot be read as a Jupyter notebook",
        "fix or regenerate the file; `kiln run` refuses it too",
    ),
    Rule(
        "KL101",
        "execution-order",
        "warning",
        "reproducibility",
        "cells were executed out of order (an execution count lower than one above it)",
        "restart the kernel and run all cells top to bottom, then save",
    ),
    Rule(
        "KL102",
        "execution-gaps",
        "info",
        "reproducibility",
        "execution counts have gaps or do not start at 1 (cells re-run, deleted or run apart)",
        "restart the kernel and run all cells top to bottom, then save",
    ),
    Rule(
        "KL103",
        "unexecuted-cell",
        "warning",
        "reproducibility",
        "a code cell was never executed although cells below it were",
        "run the cell (or delete it) and re-run the notebook top to bottom",
    ),
    Rule(
        "KL104",
        "undefined-name",
        "error",
        "reproducibility",
        "a name is used before any cell above defines it (fails on a fresh top-to-bottom run)",
        "define the name in this cell or a cell above it, or move the defining cell up",
    ),
    Rule(
        "KL105",
        "unknown-name",
        "info",
        "reproducibility",
        "a name is defined nowhere visible, but a star import, %run or exec above may define it",
        "import the names you use explicitly instead of `from module import *` or %run",
    ),
    Rule(
        "KL106",
        "stale-output",
        "warning",
        "reproducibility",
        "a cell's saved outputs do not come from its current source",
        "re-run the cell (or clear its outputs) so the saved output matches the code",
    ),
    Rule(
        "KL107",
        "unseeded-random",
        "warning",
        "reproducibility",
        "randomness without a seed in a notebook that records values (results change per run)",
        "seed it before use: random.seed(0), np.random.default_rng(0), torch.manual_seed(0)",
    ),
    Rule(
        "KL108",
        "syntax-error",
        "warning",
        "reproducibility",
        "a code cell does not parse as Python (after IPython magics are set aside)",
        "fix the syntax; the cell will fail when the notebook runs",
    ),
    Rule(
        "KL201",
        "large-output",
        "warning",
        "production",
        "a cell's saved outputs are very large",
        "clear or shrink the output (show a head, save data to a file) before committing",
        _opts(max_output_kb=500),
    ),
    Rule(
        "KL202",
        "local-path",
        "warning",
        "production",
        "an absolute or home-relative path that only exists on one machine",
        "use a path relative to the project, or make it a parameter",
    ),
    Rule(
        "KL203",
        "interactive-input",
        "error",
        "production",
        "input() or getpass() waits for a person; an unattended run fails or hangs there",
        "make the value a parameter (cell tagged 'parameters'), or read it from the environment",
    ),
    Rule(
        "KL204",
        "run-local-file",
        "warning",
        "production",
        "%run or %load of a local file: the notebook depends on a file Kiln does not track",
        "import the code as a module from the project, or inline it",
    ),
    Rule(
        "KL205",
        "pip-install",
        "warning",
        "production",
        "packages installed from inside the notebook",
        "declare the dependency in the project's requirements instead of installing at run time",
    ),
    Rule(
        "KL206",
        "missing-parameters",
        "error",
        "production",
        "a scheduled or pipeline notebook has no readable cell tagged 'parameters'",
        "tag the cell that holds the notebook's inputs with 'parameters'",
    ),
    Rule(
        "KL207",
        "embedded-data",
        "warning",
        "production",
        "a cell embeds a lot of data in its source or attachments",
        "load the data from a file instead of pasting it into the notebook",
        _opts(max_source_kb=100),
    ),
    Rule(
        "KL301",
        "secret-in-source",
        "error",
        "security",
        "a secret (key, token, password, private key) in a cell's source",
        "remove it and rotate it; read secrets from the environment or a secret parameter",
    ),
    Rule(
        "KL302",
        "secret-in-output",
        "error",
        "security",
        "a secret in a cell's saved output (stdout, traceback, HTML, text, alt text)",
        "clear the output, stop printing the secret, and rotate it",
    ),
    Rule(
        "KL303",
        "secret-in-metadata",
        "error",
        "security",
        "a secret in notebook, cell or output metadata",
        "remove it from the metadata and rotate it",
    ),
    Rule(
        "KL304",
        "high-entropy-string",
        "warning",
        "security",
        "a random-looking string that may be a secret",
        "if it is a secret, remove and rotate it; if not, add the tag kiln-noqa:KL304 to the cell",
        _opts(min_length=20),
    ),
    Rule(
        "KL305",
        "email-in-output",
        "warning",
        "security",
        "an e-mail address (personal data) in a saved output",
        "clear the output or mask the column before saving",
        _opts(allow_domains=()),
    ),
    Rule(
        "KL306",
        "phone-in-output",
        "warning",
        "security",
        "a phone number (personal data) in a saved output",
        "clear the output or mask the column before saving",
    ),
    Rule(
        "KL307",
        "card-number-in-output",
        "error",
        "security",
        "a payment card number (passes the Luhn check) in a saved output",
        "clear the output; card numbers must never be stored in a notebook",
    ),
)

RULES_BY_ID: Mapping[str, Rule] = MappingProxyType({rule.id: rule for rule in RULES})


def rules_matching(code: str) -> list[Rule]:
    """Rules whose id starts with ``code`` (``KL3`` -> every security rule); ``ALL`` -> all."""
    code = code.strip().upper()
    if code == "ALL":
        return list(RULES)
    return [rule for rule in RULES if rule.id.startswith(code)] if code else []


def expand_codes(codes: Iterable[str]) -> set[str]:
    """The rule ids that ``codes`` (ids or prefixes) select; an unknown code raises ValueError."""
    selected: set[str] = set()
    for code in codes:
        matched = rules_matching(code)
        if not matched:
            raise ValueError(code)
        selected.update(rule.id for rule in matched)
    return selected
