"""Notebooks in version control and outside Jupyter: clean, diff, export, git set-up.

::

    clean_file("report.ipynb")                     # strip outputs and volatile metadata
    diff = diff_notebooks(nb_a, nb_b)               # cell-level diff; diff.changed
    print(render_diff(diff, color=False))
    result = export_script(nb)                      # a Python module with a typed CLI
    install_git(repo)                               # git clean filter + readable git diff

Submodules load on first use, so the git clean filter (``kiln clean --stdout -``) imports only
what cleaning needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.convert.clean import CleanResult, clean_file, clean_json, clean_text
    from kiln.convert.diff import NotebookDiff, diff_notebooks
    from kiln.convert.export import ExportResult, export_script
    from kiln.convert.gitsetup import install_git, uninstall_git
    from kiln.convert.render import render_diff, render_text

__all__ = [
    "CleanResult",
    "ExportResult",
    "NotebookDiff",
    "clean_file",
    "clean_json",
    "clean_text",
    "diff_notebooks",
    "export_script",
    "install_git",
    "render_diff",
    "render_text",
    "uninstall_git",
]

_LAZY = {
    "CleanResult": "clean",
    "clean_file": "clean",
    "clean_json": "clean",
    "clean_text": "clean",
    "NotebookDiff": "diff",
    "diff_notebooks": "diff",
    "ExportResult": "export",
    "export_script": "export",
    "install_git": "gitsetup",
    "uninstall_git": "gitsetup",
    "render_diff": "render",
    "render_text": "render",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kiln.convert' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"kiln.convert.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
