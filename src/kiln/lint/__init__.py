"""``kiln lint``: reproducibility, production-readiness and security checks for notebooks.

Nothing runs: each notebook is parsed once and read statically. Use it from Python::

    from kiln.lint import lint_paths, load_lint_config

    report = lint_paths(["notebooks/"], config=load_lint_config())
    for finding in report.findings:
        print(finding.location(), finding.rule, finding.message)
    raise SystemExit(report.exit_code)            # 1 when any finding is an error

or gate a run on one notebook (what ``kiln run --lint`` does)::

    blocking = errors_for_run_gate(nb, "report.ipynb", load_lint_config())

The rules are data (:data:`RULES`); ``kiln lint --list-rules`` prints them.
"""

from kiln.lint.config import LintConfig, load_lint_config
from kiln.lint.engine import (
    discover_notebooks,
    errors_for_run_gate,
    lint_notebook,
    lint_paths,
)
from kiln.lint.findings import Finding, LintReport
from kiln.lint.formats import FORMATS
from kiln.lint.rules import RULES, RULES_BY_ID, Rule, Severity
from kiln.lint.secret_scan import mask

__all__ = [
    "FORMATS",
    "RULES",
    "RULES_BY_ID",
    "Finding",
    "LintConfig",
    "LintReport",
    "Rule",
    "Severity",
    "discover_notebooks",
    "errors_for_run_gate",
    "lint_notebook",
    "lint_paths",
    "load_lint_config",
    "mask",
]
