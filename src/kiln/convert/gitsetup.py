"""``kiln git install``: commit notebooks clean and diff them as text, in one repository.

It sets, in the repository's own ``.git/config`` (never the user's global config):

- ``filter.kiln-clean.clean = KILN clean --stdout --stdin-name %f -``: git pipes every notebook
  it stages through ``kiln clean``, so the committed blob has no outputs, execution counts or
  volatile metadata while the working copy keeps them (``smudge = cat``: checkout restores the
  clean file as it is);
- ``filter.kiln-clean.required = true``: if that command cannot run (Kiln uninstalled, venv
  gone) git refuses to stage notebooks rather than silently committing their outputs. A file
  that is not a notebook (yet) passes through the filter unchanged, with a warning;
- ``diff.kiln.textconv = KILN diff --textconv``: ``git diff``/``git log -p`` show notebooks as
  text (cell headers, source lines, outputs), not JSON;

and adds ``*.ipynb filter=kiln-clean diff=kiln`` to ``.gitattributes`` (shared with the team
through the repository) or, with ``private``, to ``.git/info/attributes`` (this clone only).

``KILN`` is, by default, the absolute path of the ``kiln`` executable being run: git runs
filters from IDEs and GUIs that do not activate the project's virtual environment, where
``kiln`` on PATH would not be found (or would be another version). The setting lives in this
clone's ``.git/config`` only, so a machine-specific path is right there; pass
``command="kiln"`` to use PATH instead (when Kiln is installed globally, e.g. with pipx).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from kiln.errors import UsageError

__all__ = [
    "ATTRIBUTES_LINE",
    "DIFF_DRIVER",
    "FILTER_NAME",
    "GitSetup",
    "default_command",
    "install_git",
    "uninstall_git",
]

FILTER_NAME: Final = "kiln-clean"
DIFF_DRIVER: Final = "kiln"
ATTRIBUTES_LINE: Final = f"*.ipynb filter={FILTER_NAME} diff={DIFF_DRIVER}"
_COMMENT: Final = "# notebooks: committed without outputs, diffed as text (kiln git install)"


@dataclass
class GitSetup:
    """What ``install_git``/``uninstall_git`` did, for the CLI to report."""

    repo: Path
    attributes: Path
    config: dict[str, str] = field(default_factory=dict)
    attributes_changed: bool = False
    notes: list[str] = field(default_factory=list)


def default_command() -> str:
    """The shell words that run this Kiln: its ``kiln`` script, else ``python -m kiln.cli.main``."""
    launched = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if launched is not None and launched.name == "kiln" and launched.is_file():
        return shlex.quote(str(launched.absolute()))
    beside = Path(sys.executable).with_name("kiln")
    if beside.is_file():
        return shlex.quote(str(beside))
    return f"{shlex.quote(sys.executable)} -m kiln.cli.main"


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError:
        raise UsageError("git is not installed (or not on PATH)") from None
    if check and done.returncode != 0:
        detail = done.stderr.strip() or f"exit code {done.returncode}"
        raise UsageError(f"git {' '.join(args)} failed: {detail}")
    return done


def repository_root(cwd: Path) -> Path:
    done = _git(cwd, "rev-parse", "--show-toplevel", check=False)
    if done.returncode != 0:
        raise UsageError(f"{cwd} is not inside a git repository (run git init first)")
    return Path(done.stdout.strip())


def _attributes_file(repo: Path, *, private: bool) -> Path:
    if not private:
        return repo / ".gitattributes"
    inside = _git(repo, "rev-parse", "--git-path", "info/attributes").stdout.strip()
    return (repo / inside).resolve()


def install_git(
    cwd: Path | None = None, *, command: str | None = None, private: bool = False
) -> GitSetup:
    """Set up the clean filter and the diff driver in the repository containing ``cwd``.

    Idempotent: running it again changes nothing (it updates the command if it changed).
    """
    repo = repository_root(cwd or Path.cwd())
    kiln = command or default_command()
    setup = GitSetup(repo, _attributes_file(repo, private=private))
    setup.config = {
        f"filter.{FILTER_NAME}.clean": f"{kiln} clean --stdout --stdin-name %f -",
        # `required` makes git insist on both halves; checkout has nothing to restore
        f"filter.{FILTER_NAME}.smudge": "cat",
        f"filter.{FILTER_NAME}.required": "true",
        f"diff.{DIFF_DRIVER}.textconv": f"{kiln} diff --textconv",
    }
    for key, value in setup.config.items():
        _git(repo, "config", "--local", key, value)
    setup.attributes_changed = _add_line(setup.attributes)
    setup.notes.extend(_other_notebook_rules(setup.attributes))
    return setup


def uninstall_git(cwd: Path | None = None) -> GitSetup:
    """Remove what :func:`install_git` set (config sections and attribute lines, both files)."""
    repo = repository_root(cwd or Path.cwd())
    setup = GitSetup(repo, repo / ".gitattributes")
    for section in (f"filter.{FILTER_NAME}", f"diff.{DIFF_DRIVER}"):
        done = _git(repo, "config", "--local", "--remove-section", section, check=False)
        if done.returncode == 0:
            setup.config[section] = "removed"
    for private in (False, True):
        path = _attributes_file(repo, private=private)
        if _remove_line(path):
            setup.attributes = path
            setup.attributes_changed = True
    return setup


def _add_line(path: Path) -> bool:
    from kiln.notebook.io import atomic_write_text

    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if ATTRIBUTES_LINE in (line.strip() for line in text.splitlines()):
        return False
    if text and not text.endswith("\n"):
        text += "\n"
    atomic_write_text(path, f"{text}{_COMMENT}\n{ATTRIBUTES_LINE}\n")
    return True


def _remove_line(path: Path) -> bool:
    from kiln.notebook.io import atomic_write_text

    if not path.is_file():
        return False
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() not in (ATTRIBUTES_LINE, _COMMENT)]
    if kept == lines:
        return False
    if any(line.strip() for line in kept) or path.name != ".gitattributes":
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    else:
        path.unlink()  # it held only our line: leave the repository as it was
    return True


def _other_notebook_rules(path: Path) -> list[str]:
    """Warnings about other lines that set a filter or diff driver for notebooks."""
    notes = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#") or line.strip() == ATTRIBUTES_LINE:
            continue
        if words[0] in ("*.ipynb", "**/*.ipynb") and any(
            w.startswith(("filter=", "diff=")) for w in words[1:]
        ):
            notes.append(
                f"{path.name} line {number} also sets a driver for notebooks ({line.strip()}); "
                "the last matching line wins in git"
            )
    return notes
