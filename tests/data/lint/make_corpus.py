"""The lint corpus: notebooks written for the tests, each with the findings it must produce.

    python tests/data/lint/make_corpus.py OUT_DIR     # write it out to look at

Each case becomes ``OUT_DIR/<case>/<case>.ipynb`` (plus ``kiln.yaml`` when the case has lint
settings) and ``OUT_DIR/manifest.json`` lists, per case, the expected ``[rule, cell]`` pairs.
Every rule has cases where it must fire and cases built to tempt it where it must stay quiet.
Secret-shaped values are assembled from pieces with ``glue()``, so this file itself holds no
secret in a format a scanner would flag, even one that folds string expressions; none of them
is a real credential.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Run as a script, this folder is on sys.path; the tests' loader (lintcorpus.py) adds it.
from corpus_evasions import evasion_cases
from corpus_kit import (  # the values are re-exported for the tests
    AWS_ID,
    CARD,
    DB_URL,
    EMAIL,
    GH_TOKEN,
    GOOGLE,
    JWT,
    PASSWORD,
    PEM,
    RANDOM_TOKEN,
    SHA256,
    SLACK,
    STRIPE,
    UNEXECUTED,
    UUID,
    Case,
    clean_notebook,
    code,
    data,
    error,
    md,
    notebook,
    out,
    png,
)
from corpus_kit import glue as glue  # re-exported: the tests assemble their values with it
from corpus_more import more_cases


def cases() -> list[Case]:
    c = code
    return [
        # -- clean notebooks: nothing may fire ------------------------------------------------
        Case("clean_pipeline", clean_notebook()),
        Case(
            "clean_parameters",
            [c("region = 'EU'\nn = 3", tags=["parameters"]), c("print(region * n)")],
            lint={"require_parameters": True},
        ),
        Case("clean_unexecuted", [c("x = 1", count=UNEXECUTED), c("y = x", count=UNEXECUTED)]),
        Case(
            "clean_last_unexecuted",
            [c("x = 1"), c("", count=UNEXECUTED), c("y = x"), c("z = y", count=UNEXECUTED)],
        ),
        # -- execution order ------------------------------------------------------------------
        Case(
            "order_swapped",
            [c("a = 1", count=1), c("b = a", count=3), c("c = b", count=2)],
            [("KL101", 2)],
        ),
        Case("order_repeated", [c("a = 1", count=2), c("b = a", count=2)], [("KL101", 1)]),
        Case(
            "order_gap",
            [c("a = 1", count=1), c("b = a", count=2), c("c = b", count=5)],
            [("KL102", 2)],
        ),
        Case("order_late_start", [c("a = 1", count=4), c("b = a", count=5)], [("KL102", 0)]),
        Case(
            "order_unexecuted_middle",
            [c("a = 1", count=1), c("b = 2", count=UNEXECUTED), c("print(a)", count=2)],
            [("KL103", 1)],
        ),
        Case(
            "order_skip_tag",
            [
                c("a = 1", count=1),
                c("slow()", count=UNEXECUTED, tags=["skip-execution"]),
                c("print(a)", count=2),
            ],
        ),
        # -- names ----------------------------------------------------------------------------
        Case(
            "names_defined_below",
            [c("print(df.shape)"), c("import pandas as pd\ndf = pd.DataFrame()")],
            [("KL104", 0)],
        ),
        Case(
            "names_deleted_cell",
            [c("import math"), c("area = math.pi * radius ** 2")],
            [("KL104", 1)],
        ),
        Case("names_del", [c("x = 1"), c("del x"), c("print(x)")], [("KL104", 2)]),
        Case("names_augassign", [c("total += 1")], [("KL104", 0)]),
        Case(
            "names_function_global",
            [c("def f():\n    return helper_table[0]"), c("f()")],
            [("KL104", 0)],
        ),
        Case(
            "names_except_as",
            [c("try:\n    1 / 0\nexcept ZeroDivisionError as err:\n    pass"), c("print(err)")],
            [("KL104", 1)],
        ),
        Case(
            "names_comprehension_leak",
            [c("xs = [i * 2 for i in range(3)]"), c("print(i)")],
            [("KL104", 1)],
        ),
        Case(
            "names_class_method",
            [c("class A:\n    def go(self):\n        return missing_fn()"), c("A().go()")],
            [("KL104", 0)],
        ),
        Case(
            "names_else_branch",
            [c("import random\nif random.random() > 2:\n    flag = 1\nelse:\n    print(flag)")],
            [("KL104", 0)],
        ),
        Case(
            "names_file_dunder", [c("import os\nhere = os.path.dirname(__file__)")], [("KL104", 0)]
        ),
        Case(
            "names_star_import",
            [c("from math import *"), c("print(sqrt(2), tau_value)")],
            [("KL105", 1)],
        ),
        Case(
            "names_run_magic",
            [c("%run setup_helpers.ipynb"), c("print(shared_config)")],
            [("KL204", 0), ("KL105", 1)],
        ),
        Case(
            "names_quiet",
            [
                c("%%capture captured\nprint('hi')"),
                c("print(captured)\n%store -r cached_frame\nprint(cached_frame)"),
                c(
                    "match ('a', 1):\n    case (name, *rest):\n        print(name, rest)\n"
                    "    case {'k': v, **others}:\n        print(v, others)"
                ),
                c("for i in range(3):\n    if i:\n        print(last)\n    last = i"),
                c("%time result = 5\nprint(result)\nobj = result\nobj?"),
                c("pip install tqdm", count=UNEXECUTED),
            ],
            [("KL205", 5)],
        ),
        # -- stale outputs --------------------------------------------------------------------
        Case(
            "stale_no_count",
            [c("x = 1"), c("print(x)", out("1\n"), count=UNEXECUTED)],
            [("KL106", 1)],
        ),
        Case(
            "stale_result_count",
            [c("x = 1", count=1), c("x + 1", data({"text/plain": "2"}, count=1), count=2)],
            [("KL106", 1)],
        ),
        Case(
            "stale_name_error",
            [
                c(
                    "value = 3\nprint(value)",
                    error(
                        "NameError",
                        "name 'valu' is not defined",
                        "Cell In[1], line 2\n----> 2 print(valu)\n",
                    ),
                )
            ],
            [("KL106", 0)],
        ),
        Case(
            "stale_traceback_code",
            [
                c(
                    "load('b.csv')",
                    error(
                        "FileNotFoundError",
                        "a.csv",
                        "\x1b[0;32mCell In[1], line 1\x1b[0m\n"
                        "\x1b[0;32m----> 1\x1b[0m load('a.csv')\n",
                    ),
                )
            ],
            [("KL104", 0), ("KL106", 0)],
        ),
        Case(
            "stale_quiet",
            [
                c(
                    "import math\nmath.sqrt(-1)",
                    error(
                        "ValueError",
                        "math domain error",
                        "Cell In[1], line 2\n      1 import math\n----> 2 math.sqrt(-1)\n",
                    ),
                ),
                c("1 + 1", data({"text/plain": "2"}, count=2)),
                c("print('ok')", out("ok\n")),
            ],
        ),
        # -- randomness -----------------------------------------------------------------------
        Case(
            "random_numpy_legacy",
            [
                c("import numpy as np\nimport kiln"),
                c("x = np.random.rand(3)\nkiln.record('x', float(x.sum()))"),
            ],
            [("KL107", 1)],
        ),
        Case(
            "random_default_rng",
            [
                c("import numpy as np\nfrom kiln import record"),
                c("rng = np.random.default_rng()\nrecord('v', rng.random())"),
            ],
            [("KL107", 1)],
        ),
        Case(
            "random_stdlib_torch",
            [
                c("import random, torch\nimport kiln"),
                c("random.seed()\npick = random.choice([1, 2])"),
                c("t = torch.rand(2)\nkiln.record('t', pick)"),
            ],
            [("KL107", 1), ("KL107", 2)],
        ),
        Case(
            "random_quiet",
            [
                c("import random\nimport numpy as np\nimport torch\nimport kiln"),
                c("random.seed(1)\nnp.random.seed(2)\ntorch.manual_seed(3)"),
                c(
                    "a = random.random()\nb = np.random.rand()\nt = torch.randn(2)\n"
                    "g = np.random.default_rng(7)\nkiln.record('a', a)"
                ),
            ],
        ),
        Case("random_no_records", [c("import numpy as np\nx = np.random.rand(4)\nprint(x)")]),
        Case(
            "random_shadowed",
            [c("import kiln\nrandom = [3, 1, 2]\nrandom.sort()\nkiln.record('r', random)")],
        ),
        # -- syntax ---------------------------------------------------------------------------
        Case("syntax_error", [c("def broken(:\n    pass")], [("KL108", 0)]),
        Case(
            "syntax_quiet",
            [
                c("%%bash\nfor f in *.csv; do echo $f; done"),
                c("%%html\n<b>hi</b>"),
                c("ls -la\ncd ..", count=UNEXECUTED),
            ],
        ),
        # -- production -----------------------------------------------------------------------
        Case(
            "large_output", [c("print('x' * 700_000)", out("x" * 700_000 + "\n"))], [("KL201", 0)]
        ),
        Case(
            "large_output_allowed",
            [c("print('x' * 700_000)", out("x" * 700_000 + "\n"))],
            lint={"rules": {"KL201": {"max_output_kb": 2000}}},
        ),
        Case("large_output_quiet", [c("print('x' * 100_000)", out("x" * 100_000 + "\n"))]),
        Case(
            "local_paths",
            [
                c("df = load('/Users/ana/Desktop/sales.csv')"),
                c("raw = r'C:\\Users\\ana\\data\\q3.xlsx'"),
                c("import os\ncfg = os.path.expanduser('~/configs/etl.yaml')"),
                c("%cd /home/bob/projects/sales"),
                c(
                    "ok = ['data/sales.csv', 'https://example.com/home/ana/x', '/tmp/scratch.csv',"
                    " 's3://bucket/home/x', './home/ana', r'^/home/(\\w+)$']"
                ),
            ],
            [("KL202", 0), ("KL202", 1), ("KL202", 2), ("KL202", 3), ("KL104", 0)],
        ),
        Case(
            "interactive_input",
            [
                c("name = input('Region? ')"),
                c("import getpass\npw = getpass.getpass()"),
                c("input_df = [1]\nmodel = len\nmodel(input_df)\nprint(input)"),
            ],
            [("KL203", 0), ("KL203", 1)],
        ),
        Case("input_redefined", [c("def input(prompt):\n    return 'EU'"), c("r = input('?')")]),
        Case(
            "run_load",
            [
                c("%run helpers.py"),
                c("%load utils/cleaning.py"),
                c(
                    "%run -m http.server\n%load_ext autoreload\n"
                    "%load https://example.com/snippet.py"
                ),
            ],
            [("KL204", 0), ("KL204", 1)],
        ),
        Case(
            "pip_install",
            [
                c("!pip install pandas==2.2"),
                c("%pip install -q scikit-learn"),
                c("!python -m pip install requests"),
                c("%%bash\npip install tqdm"),
                c("%conda install numpy"),
                c("# pip install pandas\n!pip list\nprint('pip install x')"),
            ],
            [("KL205", 0), ("KL205", 1), ("KL205", 2), ("KL205", 3), ("KL205", 4)],
        ),
        Case(
            "missing_parameters",
            [c("region = 'EU'"), c("print(region)")],
            [("KL206", None)],
            lint={"require_parameters": True},
        ),
        Case(
            "scheduled_missing_parameters",
            [c("print(1)")],
            [("KL206", None)],
            # a pipeline task's notebook must take parameters
            project={
                "pipelines": {
                    "nightly": {
                        "tasks": {"report": {"notebook": "scheduled_missing_parameters.ipynb"}}
                    }
                }
            },
        ),
        Case("unscheduled_no_parameters", [c("print(1)")]),
        Case(
            "embedded_data",
            [
                md(
                    "![chart](attachment:chart.png)",
                    attachments={"chart.png": {"image/png": png(150_000)}},
                ),
                c("TABLE = " + repr([round(i * 0.37, 2) for i in range(30_000)])),
            ],
            [("KL207", 0), ("KL207", 1)],
        ),
        Case("embedded_data_quiet", [c("TABLE = " + repr(list(range(5_000))))]),
        # -- secrets in sources ---------------------------------------------------------------
        Case(
            "secret_source_tokens",
            [
                c(f"aws_key = '{AWS_ID}'"),
                c(f"headers = {{'Authorization': 'token {GH_TOKEN}'}}"),
                c(f"client = WebClient('{SLACK}')"),
                c(f"KEY = '{GOOGLE}'\nstripe_key = '{STRIPE}'"),
                c(f"engine = create_engine('{DB_URL}')"),
                c(f"pem = '''{PEM}'''"),
                c(f"db_password = '{PASSWORD}'"),
                c(f"bearer = '{JWT}'"),
                md(f"Upload with ![{GH_TOKEN}](upload.png)"),
            ],
            [("KL301", i) for i in range(9)] + [("KL104", 2), ("KL104", 4)],
        ),
        Case(
            "secret_source_quiet",
            [
                c(
                    "import os\naws_key = os.environ['AWS_ACCESS_KEY_ID']\npassword = ''\n"
                    "api_key = 'changeme'\nsecret = '<your-secret>'\ntoken = '${TOKEN}'"
                ),
                c(
                    "url = 'postgresql://user:password@localhost/db'\n"
                    "tmpl = 'mysql://{user}:{pw}@{host}/x'\nmasked = 'AKIA****************'"
                ),
                c("password_field = 'password'\nsecret_name = 'prod/db-credentials'"),
            ],
        ),
        # -- secrets in outputs ---------------------------------------------------------------
        Case(
            "secret_outputs",
            [
                c("print(os.environ['GH'])", out(f"token: {GH_TOKEN}\n")),
                c(
                    "connect()",
                    error(
                        "OperationalError",
                        "could not connect",
                        f"Cell In[2], line 1\n----> 1 connect()\nOperationalError: "
                        f"could not connect to {DB_URL}",
                    ),
                ),
                c(
                    "df",
                    data(
                        {
                            "text/html": f"<table><tr><td>key</td><td>{AWS_ID}</td></tr></table>",
                            "text/plain": "table",
                        },
                        count=3,
                    ),
                ),
                c("show()", data({"text/html": f'<img src="chart.png" alt="{SLACK}">'})),
                c("note()", data({"text/markdown": f"![{GOOGLE}](x.png)"})),
                c("cfg", data({"text/plain": f"{{'pem': '{PEM}'}}"}, count=6)),
            ],
            [("KL302", i) for i in range(6)] + [("KL104", i) for i in range(6)],
        ),
        Case(
            "secret_outputs_quiet",
            [
                c("print('ok')", out(f"key AKIA****************\nsha {SHA256}\n{UUID}\n")),
            ],
        ),
        # -- secrets in metadata --------------------------------------------------------------
        Case(
            "secret_metadata",
            [c("x = 1", metadata={"service": {"token": SLACK}})],
            [("KL303", 0), ("KL303", None)],
            metadata={"connection": {"url": DB_URL}},
        ),
        Case(
            "metadata_quiet",
            [c("x = 1", metadata={"collapsed": True, "jupyter": {"source_hidden": True}})],
            metadata={
                "widgets": {
                    "state": {
                        "IPY_MODEL_5f3e2b1c9a8d4e7f6a5b4c3d2e1f0a9b": {"model_name": "LayoutModel"}
                    }
                }
            },
        ),
        # -- high entropy ---------------------------------------------------------------------
        Case(
            "entropy",
            [
                c(f"blob = '{RANDOM_TOKEN}'"),
                c("print(session)", out(f"session ready: Zk4pQ9wX2m{'T7vR1bN6cY8d'}\n")),
            ],
            [("KL304", 0), ("KL304", 1), ("KL104", 1)],
        ),
        Case(
            "entropy_quiet",
            [
                c(
                    f"h = '{SHA256}'\nu = '{UUID}'\nname = "
                    "'ResNet50ImageClassifierV2'\np = 'models/resnet50/weights_v2.pt'"
                ),
                c("print(1)", out("pandoc-2.19-windows-x86_64.zip\n")),
            ],
        ),
        # -- personal data --------------------------------------------------------------------
        Case(
            "personal_data",
            [
                c("print(row)", out(f"owner: {EMAIL}\n")),
                c(
                    "df",
                    data(
                        {"text/html": "<td>+44 20 7946 0958</td><td>(415) 555-0132</td>"}, count=2
                    ),
                ),
                c("print(card)", out(f"card {CARD} ok\n")),
                c("print(x)", out("amex 3782 822463 10005, mc 5500-0000-0000-0004\n")),
            ],
            [("KL305", 0), ("KL306", 1), ("KL307", 2), ("KL307", 3)]
            + [("KL104", i) for i in range(4)],
        ),
        Case(
            "personal_quiet",
            [
                c(f"contact = '{EMAIL}'"),
                c(
                    "print(1)",
                    out(
                        "ids 1234567812345678 4111 1111 1111 1112 1700000000000000000\n"
                        "dates 2024-05-17 12:30:45, v1.2.3, +0.125, 3.14159265358979\n"
                        "docs: help@example.org, user@host.test, pkg@2.1.0\n"
                    ),
                ),
            ],
        ),
        Case(
            "personal_allowed_domain",
            [c("print(1)", out(f"owner: {EMAIL}\n"))],
            lint={"rules": {"KL305": {"allow_domains": ["acme-corp.com"]}}},
        ),
        # -- opting out -----------------------------------------------------------------------
        Case(
            "noqa_rule",
            [c(f"print('{AWS_ID}')", out(f"{AWS_ID}\n"), tags=["kiln-noqa:KL301"])],
            [("KL302", 0)],
        ),
        Case(
            "noqa_all",
            [c(f"print('{AWS_ID}')\nprint(missing)", out(f"{AWS_ID}\n"), tags=["kiln-noqa"])],
        ),
        Case(
            "config_ignore",
            [c(f"k = '{AWS_ID}'\nprint(missing)")],
            [("KL104", 0)],
            lint={"ignore": ["KL3"]},
        ),
        Case(
            "config_severity",
            [c("print(missing)")],
            [("KL104", 0)],
            lint={"severity": {"KL104": "warning"}},
        ),
        # -- other kernels and broken files ---------------------------------------------------
        Case(
            "r_kernel",
            [c("plot(cars)\nsummary(mtcars)"), c(f'key <- "{AWS_ID}"')],
            [("KL301", 1)],
            language="R",
        ),
        Case("not_json", [], [("KL001", None)], raw='{"cells": [\n'),
        *more_cases(),
        *evasion_cases(),
    ]


def build(folder: Path) -> dict[str, Any]:
    """Write every case under ``folder``; returns (and writes) the manifest."""
    import yaml

    manifest: dict[str, Any] = {}
    for case in cases():
        target = folder / case.name
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{case.name}.ipynb"
        text = case.raw if case.raw is not None else json.dumps(notebook(case), indent=1)
        path.write_text(text, encoding="utf-8")
        project = dict(case.project or {})
        if case.lint:
            project["lint"] = case.lint
        if project:
            (target / "kiln.yaml").write_text(yaml.safe_dump(project), encoding="utf-8")
        manifest[case.name] = {
            "path": str(path.relative_to(folder)),
            "expect": sorted([list(e) for e in set(case.expect)], key=str),
        }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


if __name__ == "__main__":
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "lint-corpus")
    found = build(out_dir)
    print(f"{len(found)} notebooks written to {out_dir}")
