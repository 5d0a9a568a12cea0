"""Notebook files: load (with clear errors), upgrade, atomic save, cell tags."""

from __future__ import annotations

from typing import Any

from kiln.notebook.io import (
    atomic_write_text,
    dumps,
    load_notebook,
    parse_notebook,
    read_bytes,
    save_notebook,
    sha256_bytes,
)

__all__ = [
    "atomic_write_text",
    "cell_tags",
    "dumps",
    "has_tag",
    "load_notebook",
    "parse_notebook",
    "read_bytes",
    "save_notebook",
    "sha256_bytes",
]


def cell_tags(cell: Any) -> list[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return [t for t in tags if isinstance(t, str)]


def has_tag(cell: Any, tag: str) -> bool:
    return tag in cell_tags(cell)
