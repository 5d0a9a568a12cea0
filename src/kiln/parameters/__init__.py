"""Notebook parameters: infer the schema, coerce and check values, inject them as literals.

The path a run takes::

    schema = infer_schema(nb, notebook="report.ipynb")        # read, never executed
    values = resolve_parameters(schema, {"region": CliValue("EU"), "n": 3},
                                notebook="report.ipynb")         # refused before a kernel starts
    result = inject_parameters(nb, values, schema=schema)        # a copy with one injected cell

Names must be identifiers (not keywords, not dunders); values must be plain data; each kernel
language has a translator (:data:`TRANSLATORS`) that writes them as literals, never as code.
"""

from kiln.parameters.infer import infer_schema
from kiln.parameters.inject import InjectResult, inject_parameters
from kiln.parameters.schema import MISSING, Parameter, ParameterSchema, validate_name
from kiln.parameters.translators import TRANSLATORS, Translator, get_translator
from kiln.parameters.values import (
    CliValue,
    Extra,
    coerce_cli_value,
    load_yaml_values,
    resolve_parameters,
)

__all__ = [
    "MISSING",
    "TRANSLATORS",
    "CliValue",
    "Extra",
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
]
