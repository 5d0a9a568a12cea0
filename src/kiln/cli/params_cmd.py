"""``kiln params NB``: show the parameter schema Kiln infers from the parameters cell."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "params",
        help="show a notebook's parameters",
        description="Show the parameters a notebook declares in its cell tagged 'parameters': "
        "name, type, default, whether required, and help from trailing comments.",
    )
    p.add_argument("notebook")
    p.add_argument("--json", action="store_true", help="print the schema as JSON")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from kiln.notebook import load_notebook
    from kiln.parameters import infer_schema

    schema = infer_schema(load_notebook(args.notebook))
    if args.json:
        print(json.dumps(schema.to_json(), indent=2, default=str))
        return 0
    if schema.cell_index is None:
        print(f"{args.notebook} has no cell tagged 'parameters'.")
        return 0
    rows = [("NAME", "TYPE", "DEFAULT", "HELP")]
    for p in schema.parameters:
        kind = p.type + (" | None" if p.optional and p.type != "any" else "")
        default = "(required)" if p.required else (p.default_source or repr(p.default))
        rows.append((p.name, kind, default, p.help))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(
        f"{args.notebook}: {len(schema.parameters)} parameter(s), "
        f"cell {schema.cell_index}, language {schema.language}"
    )
    for r in rows:
        print("  " + "  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])
    return 0
