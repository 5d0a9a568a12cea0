"""The declared public surface of kiln.parameters, and the path a run takes through it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import nbformat
from nbformat import NotebookNode

from kiln.parameters import CliValue, infer_schema, inject_parameters, resolve_parameters

NotebookFactory = Callable[..., NotebookNode]  # the `notebook` fixture (conftest.py)

PUBLIC = {
    "MISSING",
    "TRANSLATORS",
    "CliValue",
    "InjectResult",
    "Parameter",
    "ParameterSchema",
    "Translator",
    "coerce_cli_value",
    "get_translator",
    "infer_schema",
    "inject_parameters",
    "load_yaml_values",
    "resolve_parameters",
    "validate_name",
}


def test_import_is_light() -> None:
    code = (
        "import sys, kiln.parameters; "
        "heavy = {'yaml', 'nbformat', 'pandas', 'numpy', 'jsonschema'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_path_a_run_takes(notebook: NotebookFactory) -> None:
    nb = notebook("date: str  # run date\nregion = 'EU'\nn: int = 3\n")
    schema = infer_schema(nb, notebook="report.ipynb")
    values = resolve_parameters(
        schema, {"date": CliValue("2024-01-01"), "n": CliValue("7")}, notebook="report.ipynb"
    )
    result = inject_parameters(nb, values, schema=schema)
    nbformat.validate(result.notebook)
    namespace: dict[str, object] = {}
    for cell in result.notebook.cells[1:3]:
        exec(cell.source, namespace)
    assert (namespace["date"], namespace["region"], namespace["n"]) == ("2024-01-01", "EU", 7)
