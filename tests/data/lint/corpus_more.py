"""The lint corpus, second batch: written after the rules, and run as first written (one
phone-number format was missed on that first run and the rule was widened)."""

from __future__ import annotations

from corpus_kit import (
    AWS_ID,
    GH_TOKEN,
    SHA256,
    STRIPE,
    UNEXECUTED,
    Case,
    code,
    data,
    glue,
    md,
    out,
)


def more_cases() -> list[Case]:
    """A second batch, written after the rules and run as they were first written."""
    c = code
    aws_secret = glue("wJalrXUtnFEMI/K7MDENG/", "bPxRfiCYz3Xq9Lm2Nv8Rt")
    return [
        Case(
            "analysis_typical",
            [
                md("# Churn analysis\nQuarterly churn by plan."),
                c(
                    "import pandas as pd\nimport seaborn as sns\n"
                    "from sklearn.model_selection import train_test_split\nimport kiln"
                ),
                c(
                    "df = pd.read_parquet('data/churn.parquet')\ndf.info()",
                    out("<class 'pandas.core.frame.DataFrame'>\nRangeIndex: 7043 entries\n"),
                ),
                c("X_train, X_test = train_test_split(df, test_size=0.2)"),
                c(
                    "rate = X_test['churn'].mean()\nkiln.record('churn_rate', rate)\nrate",
                    data({"text/plain": "0.2654"}, count=4),
                ),
            ],
            [("KL107", 3)],
        ),
        Case(
            "analysis_rerun_cells",
            [
                c("import numpy as np", count=1),
                c("x = np.arange(10)", count=7),
                c("y = x * 2", count=8),
                c("y.sum()", data({"text/plain": "90"}, count=12), count=12),
            ],
            [("KL102", 1), ("KL102", 3)],
        ),
        Case(
            "analysis_moved_cell",
            [
                c("summary = sales.groupby('region').sum()", count=3),
                c("import pandas as pd\nsales = pd.read_csv('s.csv')", count=1),
                c("summary", count=4),
            ],
            [("KL104", 0), ("KL101", 1)],
        ),
        Case(
            "analysis_half_run",
            [
                c("import math", count=1),
                c("radius = 2", count=UNEXECUTED),
                c("area = math.pi * radius ** 2", count=UNEXECUTED),
                c("print('done')", out("done\n"), count=2),
            ],
            [("KL103", 1), ("KL103", 2)],
        ),
        Case(
            "names_nested_scopes",
            [
                c(
                    "def make_adder(n):\n    def add(x):\n        return x + n + offset\n"
                    "    return add"
                ),
                c("offset = 10\nadd3 = make_adder(3)\nprint(add3(1))"),
                c("values = sorted(data, key=lambda row: row[weight_col])"),
            ],
            [("KL104", 2)],
        ),
        Case(
            "names_conditional_import",
            [
                c(
                    "try:\n    import orjson as fast_json\nexcept ModuleNotFoundError:\n"
                    "    fast_json = None"
                ),
                c("if fast_json is None:\n    import json as fast_json\nprint(fast_json)"),
                c("with open('a') as f, open('b') as g:\n    pass\nprint(f, g)"),
                c("for k, (a, *b) in enumerate([(1, 2, 3)]):\n    pass\nprint(k, a, b)"),
            ],
        ),
        Case(
            "names_star_then_error",
            [
                c("from pylab import *"),
                c("plot(linspace(0, 1))\nsavefig(out_path)"),
            ],
            [("KL105", 1)],
        ),
        Case("syntax_py2", [c("print 'hello'"), c("x = 1\nx = = 2")], [("KL108", 0), ("KL108", 1)]),
        Case(
            "stale_cleared_counts",
            [
                c("a = 1", out("a\n"), count=UNEXECUTED),
                c("b = 2", data({"text/plain": "2"}), count=UNEXECUTED),
            ],
            [("KL106", 0), ("KL106", 1)],
        ),
        Case(
            "big_html_table",
            [
                c(
                    "df",
                    data(
                        {
                            "text/html": "<table>"
                            + "<tr><td>0.12345</td></tr>" * 30_000
                            + "</table>",
                            "text/plain": "df",
                        },
                        count=1,
                    ),
                ),
            ],
            [("KL104", 0), ("KL201", 0)],
        ),
        Case(
            "paths_in_calls",
            [
                c('import pandas as pd\ndf = pd.read_csv("/home/jsmith/Downloads/export (3).csv")'),
                c("open('D:/work/report.docx')"),
                c(
                    "BASE = 'data'\nos_path = '/usr/lib/python3/dist-packages'\nurl = "
                    "'http://localhost:8888/tree/home/x'"
                ),
            ],
            [("KL202", 0), ("KL202", 1)],
        ),
        Case(
            "pip_variants",
            [
                c("!pip3 install -U 'pandas>=2'"),
                c("!uv pip install polars"),
                c("import subprocess\nsubprocess.run(['pip', 'show', 'pandas'])"),
            ],
            [("KL205", 0), ("KL205", 1)],
        ),
        Case(
            "secrets_aws_pair",
            [
                c(
                    f"import boto3\ns3 = boto3.client('s3', aws_access_key_id='{AWS_ID}',\n"
                    f"    aws_secret_access_key='{aws_secret}')"
                ),
            ],
            [("KL301", 0)],
        ),
        Case(
            "secrets_in_env_print",
            [
                c(
                    "import os\nprint(os.environ)",
                    out(
                        "environ({'HOME': '/home/app', 'GITHUB_TOKEN': '" + GH_TOKEN + "', "
                        "'LANG': 'C.UTF-8'})\n"
                    ),
                ),
            ],
            [("KL302", 0)],
        ),
        Case(
            "secrets_html_alt_and_title",
            [
                c(
                    "display(img)",
                    data(
                        {
                            "text/html": f'<figure><img src="x.png" title="upload" '
                            f'alt="key {STRIPE}"></figure>'
                        }
                    ),
                ),
            ],
            [("KL104", 0), ("KL302", 0)],
        ),
        Case(
            "secrets_redacted_output",
            [
                c(
                    "print(conn)",
                    out(
                        "postgresql://etl_user:********@db.internal/sales\n"
                        "token=ghp_****************\n"
                    ),
                ),
            ],
            [("KL104", 0)],
        ),
        Case(
            "entropy_more",
            [
                c("headers = {'X-Api-Session': 'Qm9vV2lLk3z8Xp1Rt7Yb'}"),
                c(
                    "print(df.columns)",
                    out(
                        "Index(['customer_id', 'plan_type', "
                        "'monthly_charges_2024'], dtype='object')\n"
                    ),
                ),
                c(
                    "print(run)",
                    out(
                        "run_id=9b1d5e7a-3c2f-4e8d-a1b6-0f9e8d7c6b5a "
                        "checksum=sha256:" + SHA256 + "\n"
                    ),
                ),
            ],
            [("KL304", 0), ("KL104", 1), ("KL104", 2)],
        ),
        Case(
            "personal_more",
            [
                c(
                    "customers.head()",
                    data(
                        {
                            "text/html": "<tr><td>Ana Lima</td><td>"
                            "ana.lima@gmail.com</td><td>+55 11 98765-4321</td>"
                            "</tr>"
                        },
                        count=1,
                    ),
                ),
                c("print(invoice)", out("Total: 1,234.56 EUR  Ref: 2024-000123-77\n")),
                c("print(payment)", out("charged card 5555555555554444 (Mastercard)\n")),
            ],
            [("KL104", 0), ("KL104", 1), ("KL104", 2), ("KL305", 0), ("KL306", 0), ("KL307", 2)],
        ),
    ]
