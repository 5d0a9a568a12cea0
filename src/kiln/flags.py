"""Command-line flags generated from the run options, and option names turned back into flags.

Every command that starts runs (``kiln run``, ``kiln verify``, and the pytest plugin with a
``--kiln-`` prefix) gets its flags from :data:`kiln.options.OPTIONS` through
:func:`add_run_options`, so they share names, help texts and parsers; :func:`flag_for` is the
one place that says which flag an option is, for error messages.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection, Mapping
from typing import Any

from kiln.options import ENGINE_ALIASES, ENGINE_CHOICES, OPTIONS, OptionError, normalize
from kiln.units import DURATION_HELP, SIZE_HELP


def _typed(name: str) -> Callable[[str], Any]:
    """An argparse ``type`` that parses with the option's own parser (same errors as the API)."""

    def parse(text: str) -> Any:
        try:
            return normalize(name, text)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(exc.problem) from None

    parse.__name__ = name  # argparse names the type in "invalid <name> value" messages
    return parse


class _EnvAction(argparse.Action):
    """``--env NAME=VALUE`` (repeatable) into one mapping."""

    def __call__(
        self, parser: Any, namespace: Any, values: Any, option_string: str | None = None
    ) -> None:
        name, sep, value = str(values).partition("=")
        if not sep or not name:
            raise argparse.ArgumentError(self, f"expected NAME=VALUE, got {values!r}")
        current = dict(getattr(namespace, self.dest, None) or {})
        current[name] = value
        try:
            setattr(namespace, self.dest, normalize("env", current))
        except OptionError as exc:
            raise argparse.ArgumentError(self, exc.problem) from None


class _TagAction(argparse.Action):
    """``--tag KEY=VALUE`` (repeatable) into one mapping."""

    def __call__(
        self, parser: Any, namespace: Any, values: Any, option_string: str | None = None
    ) -> None:
        name, sep, value = str(values).partition("=")
        if not sep or not name:
            raise argparse.ArgumentError(self, f"expected KEY=VALUE, got {values!r}")
        current = dict(getattr(namespace, self.dest, None) or {})
        current[name] = value
        try:
            setattr(namespace, self.dest, normalize("tags", current))
        except OptionError as exc:
            raise argparse.ArgumentError(self, exc.problem) from None


def add_run_options(
    group: Any,
    *,
    exclude: Collection[str] = (),
    prefix: str = "",
    absent: Any = argparse.SUPPRESS,
) -> None:
    """Add a flag per run option to an argparse parser or group (or a pytest option group,
    with ``prefix="--kiln-"``). Flags not given leave their option out (``absent``), so the
    project's and the environment's defaults apply."""
    adder = getattr(group, "addoption", None) or group.add_argument
    for f in OPTIONS:
        if f.name in exclude:
            continue
        meta = f.metadata
        flags = _flags(meta["flags"], prefix)
        help_text = str(meta["help"])
        kind = meta["kind"]
        kwargs: dict[str, Any] = {"dest": _dest(f.name, prefix), "default": absent}
        if kind == "switch":
            kwargs["action"] = "store_true"
        elif kind in ("env", "tags"):
            action = _EnvAction if kind == "env" else _TagAction
            kwargs.update(action=action, metavar=meta["metavar"])
            help_text += " (repeatable)"
        elif kind == "choice":
            kwargs["choices"] = [*ENGINE_CHOICES, *ENGINE_ALIASES]
        else:
            kwargs.update(type=_typed(f.name), metavar=meta["metavar"])
            if kind == "duration":
                help_text += f"; {DURATION_HELP}"
            elif kind == "size":
                help_text += f"; {SIZE_HELP}"
        adder(*flags, help=help_text, **kwargs)


def _flags(flags: tuple[str, ...], prefix: str) -> list[str]:
    if not prefix:
        return list(flags)
    return [prefix + flag.lstrip("-") for flag in flags if flag.startswith("--")]


def _dest(name: str, prefix: str) -> str:
    return f"{prefix.strip('-').replace('-', '_')}_{name}" if prefix else name


def run_options_from(args: Any, *, prefix: str = "") -> dict[str, Any]:
    """The run options given on the command line (a namespace or pytest config)."""
    getter = getattr(args, "getoption", None)
    out: dict[str, Any] = {}
    for f in OPTIONS:
        dest = _dest(f.name, prefix)
        value = getter(dest, None) if getter is not None else getattr(args, dest, None)
        if value is not None and value is not argparse.SUPPRESS:
            out[f.name] = value
    return out


#: names the CLI shows for things that are not flags
_CLI_NAMES: Mapping[str, str] = {"output": "the output path", "notebook": "the notebook"}


def flag_for(option: str, *, prefix: str = "") -> str:
    """The flag (or argument) a user typed for an API option name, for error messages."""
    for f in OPTIONS:
        if f.name == option:
            flags = _flags(f.metadata["flags"], prefix)
            longs = [flag for flag in flags if flag.startswith("--")]
            return (longs or flags)[0]
    return _CLI_NAMES.get(option, option)


def as_flag_error(error: OptionError, *, prefix: str = "") -> OptionError:
    """An :class:`OptionError` worded for the command line (``--cwd: ...``)."""
    return error.renamed(flag_for(error.option, prefix=prefix))
