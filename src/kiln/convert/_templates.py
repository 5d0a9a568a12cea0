"""Helper functions ``kiln export`` writes into a module when the module needs them.

Each block is standard-library Python, kept here as text so the generator stays readable.
"""

from __future__ import annotations

from typing import Final

NOTEBOOK_DEFAULT: Final = '''
class _NotebookDefault:
    """The default of a parameter the parameters cell computes (an expression, a list...)."""

    def __repr__(self) -> str:
        return "<the notebook's default>"


NOTEBOOK_DEFAULT: Any = _NotebookDefault()
'''

OPTIONAL: Final = '''
def _optional(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """`none` or `null` for None, else the text converted."""

    def parse(text: str) -> Any:
        return None if text.strip().lower() in ("none", "null") else convert(text)

    parse.__name__ = convert.__name__  # argparse names the type in its errors
    return parse
'''

DATA: Final = '''
def _data(kind: type) -> Callable[[str], Any]:
    """A list or dict given as JSON (or YAML, when PyYAML is installed)."""

    def parse(text: str) -> Any:
        try:
            value = json.loads(text)
        except ValueError:
            try:
                import yaml
            except ImportError:
                raise argparse.ArgumentTypeError(f"not JSON: {text!r}") from None
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                raise argparse.ArgumentTypeError(f"neither JSON nor YAML: {text!r}") from None
        if not isinstance(value, kind):
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}")
        return value

    return parse
'''

ANY_VALUE: Final = '''
def _any_value(text: str) -> Any:
    """As `kiln run -p` reads an untyped parameter: int, float, true/false, none/null, or text."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    words = {"true": True, "false": False, "none": None, "null": None}
    return words.get(text.strip().lower(), text)
'''

CLOCK: Final = '''
def _clock() -> float:
    import time

    return time.perf_counter()


def _print_wall_time(start: float) -> None:
    """What IPython's %time prints (the wall time; CPU times are left out)."""
    print(f"Wall time: {_clock() - start:.3f} s")
'''

IMPORT_STAR: Final = '''
def _import_star(module: str) -> None:
    """`from module import *` in a cell: a function body cannot hold one, so import by hand."""
    import importlib

    imported = importlib.import_module(module)
    names = getattr(imported, "__all__", None)
    if names is None:
        names = [name for name in vars(imported) if not name.startswith("_")]
    globals().update({name: getattr(imported, name) for name in names})
'''

DISPLAY: Final = '''
def display(*objs: Any, **kwargs: Any) -> None:
    """IPython's display(); without IPython, the plain text."""
    try:
        from IPython.display import display as ipython_display
    except ImportError:
        print(*objs)
    else:
        ipython_display(*objs, **kwargs)
'''

GET_IPYTHON: Final = '''
def get_ipython() -> Any:
    """IPython's shell when the script runs inside IPython, else None (as IPython says)."""
    try:
        from IPython import get_ipython as ipython_shell
    except ImportError:
        return None
    return ipython_shell()
'''

SHOW: Final = '''
def _kiln_show(value: Any) -> None:
    """A cell's last expression, shown as Jupyter shows it: its repr, and nothing for None."""
    if value is not None:
        print(repr(value))
'''
