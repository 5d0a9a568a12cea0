"""Inject parameter values into a notebook, in papermill's layout.

The values become one new code cell tagged ``injected-parameters``, placed right after the cell
tagged ``parameters`` (so they override its defaults) or first when there is none. Any cell left
by an earlier injection is removed, so re-running an output notebook never stacks them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiln.parameters.infer import (
    INJECTED_TAG,
    PARAMETERS_TAG,
    cell_tags,
    find_tagged_cell,
    notebook_language,
)
from kiln.parameters.schema import ParameterSchema
from kiln.parameters.translators import get_translator

if TYPE_CHECKING:
    from nbformat import NotebookNode

__all__ = ["InjectResult", "inject_parameters"]


@dataclass(frozen=True)
class InjectResult:
    """The new notebook and where its injected cell sits.

    ``had_parameters_cell`` is False when the values went to the top of a notebook without a
    ``parameters`` cell; callers should warn, since nothing declared those names.
    """

    notebook: NotebookNode
    cell_index: int
    had_parameters_cell: bool


def inject_parameters(
    nb: NotebookNode,
    values: Mapping[str, Any],
    *,
    schema: ParameterSchema | None = None,
    language: str | None = None,
    in_place: bool = False,
) -> InjectResult:
    """Return a copy of ``nb`` with ``values`` written as literals in an injected cell.

    The language is ``language``, else ``schema.language``, else the notebook's kernel language.
    ``nb`` itself is not changed, unless ``in_place`` (a caller that owns a fresh notebook
    spares the copy). Values should already be checked with
    :func:`kiln.parameters.resolve_parameters`; the translator still refuses anything that is
    not plain data.
    """
    if language is None:
        language = schema.language if schema is not None else notebook_language(nb)
    source = get_translator(language).render(values)

    new = nb if in_place else copy.deepcopy(nb)
    new.cells = [cell for cell in new.cells if INJECTED_TAG not in cell_tags(cell)]
    params_index = find_tagged_cell(new.cells, PARAMETERS_TAG)
    index = 0 if params_index is None else params_index + 1

    cell = _new_code_cell(source, tags=[INJECTED_TAG])
    if _has_cell_ids(new):
        taken = {c.get("id") for c in new.cells}
        while cell.id in taken:
            cell.id = _new_code_cell("", tags=[]).id
    else:
        del cell["id"]  # nbformat < 4.5 has no cell ids; an id would make the notebook invalid
    new.cells.insert(index, cell)
    return InjectResult(
        notebook=new, cell_index=index, had_parameters_cell=params_index is not None
    )


def _has_cell_ids(nb: NotebookNode) -> bool:
    major = nb.get("nbformat", 4)
    minor = nb.get("nbformat_minor", 5)
    return bool(major > 4 or (major == 4 and minor >= 5))


def _new_code_cell(source: str, *, tags: list[str]) -> NotebookNode:
    import uuid

    from nbformat import from_dict

    # the same cell nbformat.v4.new_code_cell makes, without its per-cell jsonschema
    # validation (a millisecond on every run; the shape is fixed here)
    cell: NotebookNode = from_dict(
        {
            "id": uuid.uuid4().hex[:8],
            "cell_type": "code",
            "metadata": {"tags": tags},
            "execution_count": None,
            "source": source,
            "outputs": [],
        }
    )
    return cell
