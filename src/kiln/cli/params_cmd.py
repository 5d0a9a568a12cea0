"""``kiln params NB``: show the parameter schema Kiln infers from the parameters cell."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "params",
        parents=parents,
        help="show a notebook's parameters",
        description="Show the parameters a notebook declares in its cell tagged 'parameters': "
        "name, type, default, whether required, and help from trailing comments.",
    )
    p.add_argument("notebook")
    p.add_argument("--json", action="store_true", help="print the schema as JSON")
    p.set_defaults(handler=lambda args: show_parameters(args.notebook, as_json=args.json))


def show_parameters(notebook: str, *, as_json: bool = False) -> int:
    """Print a notebook's parameters (``kiln params``, ``kiln run --help-notebook``)."""
    from kiln.notebook import load_notebook
    from kiln.parameters import infer_schema

    schema = infer_schema(load_notebook(notebook), notebook=notebook)
    if as_json:
        print(json.dumps(schema.to_json(), indent=2, default=str))
        return 0
    if schema.cell_index is None:
        print(f"{notebook} has no cell tagged 'parameters'.")
        return 0
    from rich.table import Table

    from kiln.cli.runs_cmd import console

    print(
        f"{notebook}: {len(schema.parameters)} parameter(s), "
        f"cell {schema.cell_index}, language {schema.language}"
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAME", "TYPE", "DEFAULT", "HELP"):
        table.add_column(column, overflow="fold")
    for p in schema.parameters:
        kind = p.type + (" | None" if p.optional and p.type != "any" else "")
        if p.choices is not None:
            kind += " (" + " | ".join(repr(c) for c in p.choices) + ")"
        if p.secret:
            kind += " (secret)"
        default = "(required)" if p.required else (p.default_source or repr(p.default))
        if p.secret and not p.required and p.default not in (None, ""):
            default = "***"  # a default written in the notebook is still a secret
        table.add_row(p.name, kind, default, p.help)
    console().print(table)
    return 0
