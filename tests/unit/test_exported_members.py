"""Every package's declared surface (``__all__``) is a property, not a copied list.

For each package that declares ``__all__``: the names are unique and resolve; every public
class or function the package itself defines or re-exports from Kiln is in ``__all__`` (a
public name nobody declared is a leak); and every exported class and function has a docstring
(the surface is documented).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect

import pytest

PACKAGES = (
    "kiln",
    "kiln.errors",
    "kiln.events",
    "kiln.parameters",
    "kiln.engines",
    "kiln.store",
    "kiln.testing",
    "kiln.lint",
    "kiln.project",
    "kiln.sweeps",
    "kiln.pipeline",
)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_unique_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    declared = list(module.__all__)
    assert len(declared) == len(set(declared)), f"{name}.__all__ lists a name twice"
    for attr in declared:
        assert hasattr(module, attr), f"{name}.__all__ names {attr}, which does not resolve"


def _defined_in(value: object, package: str) -> bool:
    home = getattr(value, "__module__", "") or ""
    return home == package or home.startswith(package + ".")


@pytest.mark.parametrize("name", PACKAGES)
def test_public_kiln_objects_are_exported(name: str) -> None:
    module = importlib.import_module(name)
    leaked = sorted(
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and _defined_in(value, name)
        and attr not in module.__all__
        and not inspect.ismodule(value)
    )
    assert leaked == [], f"{name} has public names missing from __all__: {leaked}"


@pytest.mark.parametrize("name", PACKAGES)
def test_exported_classes_and_functions_are_documented(name: str) -> None:
    module = importlib.import_module(name)
    undocumented = []
    for attr in module.__all__:
        value = getattr(module, attr)
        if (inspect.isclass(value) or inspect.isfunction(value)) and not inspect.getdoc(value):
            undocumented.append(attr)
    assert undocumented == [], f"{name} exports undocumented names: {undocumented}"


def test_every_module_says_what_it_is_for() -> None:
    import pkgutil

    import kiln

    missing = []
    for info in pkgutil.walk_packages(kiln.__path__, "kiln."):
        if ".migrations" in info.name:
            continue
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None
        with open(spec.origin, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        if not ast.get_docstring(tree):
            missing.append(info.name)
    assert missing == [], f"modules without a first docstring line: {missing}"
