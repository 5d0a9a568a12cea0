"""Parameter names are checked once per process when valid, every time when not."""

from __future__ import annotations

import pytest

from kiln.errors import InvalidParameterName
from kiln.parameters.schema import validate_name


@pytest.mark.parametrize("bad", ["class", "__import__", "1x", "", "ｃlass"])
def test_an_invalid_name_is_refused_every_time(bad: str) -> None:
    for _ in range(2):
        with pytest.raises(InvalidParameterName):
            validate_name(bad, notebook="nb.ipynb")


def test_a_valid_name_stays_valid_and_a_non_string_never_is() -> None:
    for _ in range(2):
        validate_name("learning_rate")
        validate_name("match")  # a soft keyword
    with pytest.raises(InvalidParameterName, match="not a string"):
        validate_name(3)  # type: ignore[arg-type]
