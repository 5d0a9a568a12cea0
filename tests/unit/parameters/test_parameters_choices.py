"""``date`` parameters and ``Literal[...]`` choices: read from the cell, checked like any type."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from nbformat import NotebookNode

from kiln.errors import ParameterTypeError
from kiln.parameters import CliValue, infer_schema, resolve_parameters

NotebookFactory = Callable[..., NotebookNode]  # the `notebook` fixture (conftest.py)

CELL = (
    "from datetime import date\n"
    "from typing import Literal, Optional\n"
    "region: Literal['EU', 'US'] = 'EU'  # where\n"
    "start: date = date(2024, 1, 31)\n"
    "end: 'date' = '2024-02-01'\n"
    "level: Literal[1, 2, 3] | None = None\n"
    "mode: Optional[Literal['a', 'b']] = 'a'\n"
    "mixed: Literal['x', 2] = 'x'\n"
)


def test_choices_and_dates_are_read(notebook: NotebookFactory) -> None:
    schema = infer_schema(notebook(CELL))
    by = {p.name: p for p in schema}
    assert by["region"].type == "str" and by["region"].choices == ("EU", "US")
    assert by["region"].help == "where"
    assert by["start"].type == "date" and by["start"].default == "2024-01-31"
    assert by["end"].type == "date" and by["end"].default == "2024-02-01"
    assert by["level"].choices == (1, 2, 3) and by["level"].optional
    assert by["mode"].choices == ("a", "b")
    assert by["mixed"].type == "any" and by["mixed"].choices == ("x", 2)
    assert schema.to_json()["parameters"][0]["choices"] == ["EU", "US"]
    plain = infer_schema(notebook("n: int = 3"))
    assert plain.parameters[0].choices is None


def test_values_are_checked(notebook: NotebookFactory) -> None:
    schema = infer_schema(notebook(CELL))
    got = resolve_parameters(
        schema,
        {
            "region": CliValue("US"),
            "start": CliValue("2024-02-29"),
            "level": CliValue("2"),
            "mixed": CliValue("2"),
        },
    )
    assert got == {"region": "US", "start": "2024-02-29", "level": 2, "mixed": 2}
    assert resolve_parameters(schema, {"level": None, "end": "2025-12-31"})["level"] is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"region": CliValue("FR")}, "'region' expects one of 'EU', 'US', got 'FR'"),
        ({"region": "eu"}, "expects one of 'EU', 'US'"),
        ({"start": CliValue("2023-02-29")}, "'start' expects a date as YYYY-MM-DD"),
        ({"start": "31/01/2024"}, "expects a date as YYYY-MM-DD"),
        ({"start": 20240131}, "expects a date"),
        ({"level": 5}, "'level' expects one of 1, 2, 3, got 5"),
        ({"level": True}, "expects one of 1, 2, 3"),  # True == 1, but is not an int choice
        ({"mixed": CliValue("y")}, "'mixed' expects one of 'x', 2"),
    ],
)
def test_bad_values_name_the_parameter(
    notebook: NotebookFactory, values: dict[str, object], message: str
) -> None:
    with pytest.raises(ParameterTypeError, match=message.replace("(", r"\(")) as caught:
        resolve_parameters(infer_schema(notebook(CELL)), values)
    assert caught.value.name == next(iter(values))
