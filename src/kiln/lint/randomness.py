"""KL107: unseeded randomness in a notebook that records values (``kiln.record``).

A recorded value is a result someone will compare across runs; drawn from an unseeded generator
it changes every time. Calls are resolved through the notebook's imports (``np`` ->
``numpy``), so a user's own variable called ``random`` is never mistaken for the module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Sequence

from kiln.lint.cells import CodeCell
from kiln.lint.findings import Hit

_RANDOM = frozenset(
    [
        "random",
        "randint",
        "randrange",
        "choice",
        "choices",
        "shuffle",
        "sample",
        "uniform",
        "gauss",
        "normalvariate",
        "triangular",
        "betavariate",
        "expovariate",
        "gammavariate",
        "lognormvariate",
        "vonmisesvariate",
        "paretovariate",
        "weibullvariate",
        "getrandbits",
        "randbytes",
        "binomialvariate",
    ]
)
_NUMPY_LEGACY = frozenset(
    [
        "rand",
        "randn",
        "randint",
        "random",
        "random_sample",
        "random_integers",
        "ranf",
        "sample",
        "choice",
        "shuffle",
        "permutation",
        "normal",
        "uniform",
        "binomial",
        "poisson",
        "exponential",
        "beta",
        "gamma",
        "standard_normal",
        "multivariate_normal",
        "lognormal",
        "multinomial",
        "dirichlet",
        "bytes",
        "laplace",
        "logistic",
        "geometric",
        "chisquare",
        "triangular",
    ]
)
_TORCH = frozenset(
    [
        "rand",
        "randn",
        "randint",
        "randperm",
        "rand_like",
        "randn_like",
        "randint_like",
        "normal",
        "bernoulli",
        "multinomial",
        "poisson",
    ]
)

#: qualified call -> the global generator it draws from
DRAWS: Mapping[str, str] = {
    **{f"random.{name}": "random" for name in _RANDOM},
    **{f"numpy.random.{name}": "numpy" for name in _NUMPY_LEGACY},
    **{f"torch.{name}": "torch" for name in _TORCH},
    "sklearn.model_selection.train_test_split": "numpy",
}
#: qualified call -> the generator it seeds (when given a seed)
SEEDS: Mapping[str, str] = {
    "random.seed": "random",
    "numpy.random.seed": "numpy",
    "torch.manual_seed": "torch",
    "torch.random.manual_seed": "torch",
}
SEED_EVERYTHING = frozenset(
    {
        "lightning.seed_everything",
        "lightning.pytorch.seed_everything",
        "pytorch_lightning.seed_everything",
        "lightning.fabric.seed_everything",
        "transformers.set_seed",
        "accelerate.utils.set_seed",
    }
)
#: generators that take their own seed: unseeded when called without one
CONSTRUCTORS = frozenset(
    {
        "numpy.random.default_rng",
        "numpy.random.RandomState",
        "numpy.random.PCG64",
        "numpy.random.MT19937",
        "numpy.random.Philox",
        "numpy.random.SFC64",
        "random.Random",
    }
)
_FAMILY_NAMES = {
    "random": "Python's random module",
    "numpy": "NumPy's global generator",
    "torch": "PyTorch's global generator",
}
_RECORDERS = frozenset({"kiln.record", "kiln.recording.record", "scrapbook.glue"})
_KEYWORD_SEEDS = {"random_state", "seed"}


def unseeded_randomness(cells: Sequence[CodeCell]) -> Iterator[Hit]:
    parsed = [c for c in cells if c.tree is not None]
    if not any(("record" in c.source or "glue" in c.source) for c in parsed):
        return
    resolver = _Resolver()
    records = False
    candidates: list[Hit] = []
    seeded: set[str] = set()
    reported: set[tuple[str, int]] = set()
    for cell in parsed:
        for node in _in_order(cell):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                resolver.learn(node)
                continue
            assert isinstance(node, ast.Call)
            name = resolver.resolve(node.func)
            if name is None:
                continue
            records = records or name in _RECORDERS
            hit = _judge(node, name, seeded, cell.index)
            if hit is not None and (hit.message, cell.index) not in reported:
                reported.add((hit.message, cell.index))
                candidates.append(hit)
    if records:
        yield from candidates


def _judge(node: ast.Call, name: str, seeded: set[str], cell: int) -> Hit | None:
    has_seed = (bool(node.args) and not _is_none(node.args[0])) or any(
        k.arg in _KEYWORD_SEEDS and not _is_none(k.value) for k in node.keywords
    )
    if name in SEEDS:
        if has_seed:
            seeded.add(SEEDS[name])
        return None
    if name in SEED_EVERYTHING:
        if has_seed:
            seeded.update(_FAMILY_NAMES)
        return None
    shown = name.replace("numpy.", "np.", 1)
    if name in CONSTRUCTORS:
        if has_seed:
            return None
        return Hit(
            "KL107", cell, node.lineno, node.col_offset + 1, f"{shown}() is created without a seed"
        )
    family = DRAWS.get(name)
    if family is None or family in seeded:
        return None
    if name.endswith("train_test_split") and any(k.arg == "random_state" for k in node.keywords):
        return None
    return Hit(
        "KL107",
        cell,
        node.lineno,
        node.col_offset + 1,
        f"{shown}() draws from {_FAMILY_NAMES[family]}, which no cell above seeds",
    )


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _in_order(cell: CodeCell) -> list[ast.AST]:
    found = cell.nodes()
    nodes: list[ast.AST] = [*found.imports, *found.calls]
    nodes.sort(key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))
    return nodes


class _Resolver:
    """Local names -> the qualified names the notebook's imports give them."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}

    def learn(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.aliases[alias.asname] = alias.name
                else:
                    head = alias.name.split(".", 1)[0]
                    self.aliases[head] = head
        elif node.module and not node.level:
            for alias in node.names:
                if alias.name != "*":
                    self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def resolve(self, node: ast.expr) -> str | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self.aliases:
            return None
        parts.append(self.aliases[node.id])
        return ".".join(reversed(parts))
