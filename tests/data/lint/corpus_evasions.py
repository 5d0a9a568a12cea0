"""The lint corpus, third batch: secrets hidden from a text scan, and the look-alikes that are
not secrets (project issue 9, item 9).

Twelve evasions an attacker tried: eight that build the secret from string literals (missed
before constant folding) and four that a text scan already caught. Then the connection-string
and keyword forms, and for each group its negatives: placeholders, environment lookups,
documentation examples. As in the rest of the corpus, every secret-shaped value is assembled
here from pieces (``glue()``, a call no folding scanner follows), so this file shows none
whole.
"""

from __future__ import annotations

import itertools

from corpus_kit import (
    AWS_ID,
    GH_TOKEN,
    GOOGLE,
    PASSWORD,
    SLACK,
    STRIPE,
    Case,
    code,
    glue,
    md,
    out,
)

#: a password for connection strings (no character that needs escaping in any of them)
DB_PASSWORD = glue("Vx9mQ2", "pLr7wZk")


def _escaped(text: str, kind: str) -> str:
    """``text`` with its first four characters written as escapes (``x``: ``\\x41``, ``u``:
    ``\\u0041``, ``o``: ``\\101``), as Python source inside a normal string literal."""
    forms = {"x": "\\x{:02x}", "u": "\\u{:04x}", "o": "\\{:03o}"}
    return "".join(forms[kind].format(ord(c)) for c in text[:4]) + text[4:]


def _split(text: str, *cuts: int) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def folded_evasions() -> list[Case]:
    """The eight evasions a text scan missed: one cell per way of building a string."""
    c = code
    aws = _split(AWS_ID, 4)
    gh = _split(GH_TOKEN, 20)
    slack = SLACK.split("-")
    stripe = _split(STRIPE, 8)
    return [
        Case(
            "evasion_folded",
            [
                # 1. `+` of literals
                c(f'aws_key = "{aws[0]}" + "{aws[1]}"'),
                # 2. implicit concatenation across lines in parentheses
                c(f'gh_token = (\n    "{gh[0]}"\n    "{gh[1]}"\n)'),
                # 3. escapes: hex, unicode and octal
                c(
                    f'k1 = "{_escaped(AWS_ID, "x")}"\nk2 = "{_escaped(GOOGLE, "u")}"\n'
                    f'k3 = "{_escaped(STRIPE, "o")}"'
                ),
                # 4. a raw piece next to a normal one holding an escape
                c(f'stripe_key = r"{stripe[0]}" "{_escaped(stripe[1], "x")}"'),
                # 5. "".join of a constant list
                c(f"slack = '-'.join({slack!r})"),
                # 6. an f-string with constant parts only
                c(f"google = f\"{{'{GOOGLE[:4]}'}}{GOOGLE[4:]}\""),
                # 7. %-format and str.format of constants
                c(
                    f'k4 = "%s%s" % ("{aws[0]}", "{aws[1]}")\n'
                    f'k5 = "{stripe[0]}{{}}".format("{stripe[1]}")'
                ),
                # 8. bytes literals, concatenated and decoded
                c(f'gh = (b"{gh[0]}" + b"{gh[1]}").decode("ascii")'),
            ],
            [("KL301", i) for i in range(8)],
        ),
        Case(
            "evasion_caught_before",
            [
                c(f'aws_key = r"{AWS_ID}"'),  # a raw string
                c(f'token = b"{GH_TOKEN}"'),  # a bytes literal
                c(f"# old key, rotated? {STRIPE}\nx = 1"),  # a comment
                c(f"%env SLACK_TOKEN={SLACK}"),  # an IPython magic line
            ],
            [("KL301", i) for i in range(4)],
        ),
        Case(
            "evasion_folded_quiet",
            [
                # a raw string keeps its backslashes: this is not a key
                c(f'pattern = r"{_escaped(AWS_ID, "x")}"'),
                c(f'masked = "{aws[0]}" + "*" * 16\nshown = "{aws[0]}" + "****************"'),
                c(f'tmpl = "{stripe[0]}" + "{{key}}"\nurl = "postgresql://" + "user:password@"'),
                c("parts = ''.join(['<', 'token', '>'])\nmsg = 'Hello, %s!' % 'world'"),
                c("label = f\"{'run'}-{'2024'}\"\nb = b'\\x00\\x01'.decode('latin-1')"),
            ],
        ),
    ]


def connection_cases() -> list[Case]:
    c = code
    pw = DB_PASSWORD
    encoded = pw[:4] + "%40" + pw[4:]
    return [
        Case(
            "connection_strings",
            [
                c(f'REDIS = "redis://:{pw}@cache.acme.io:6379/0"'),  # no user name
                c(f'REDIS_TLS = "rediss://default:{pw}@cache.acme.io:6380"'),
                c(f'BROKER = "amqp://etl:{pw}@mq.acme.io:5672/jobs"'),
                c(f'JDBC = "jdbc:postgresql://db.acme.io/sales?user=etl&password={pw}"'),
                c(
                    'JDBC_MS = "jdbc:sqlserver://db.acme.io:1433;databaseName=sales;'
                    f'user=etl;password={pw}"'
                ),
                c(f'ADO = "Server=tcp:db.acme.io,1433;Database=sales;User Id=etl;Password={pw};"'),
                c(f'ODBC = "DRIVER={{ODBC Driver 18}};SERVER=db.acme.io;UID=etl;PWD={{{pw}}}"'),
                c(f'URL = "postgresql://etl:{encoded}@db.acme.io/sales"'),  # percent-encoded
                c(f'DSN = "host=db.acme.io user=etl password={pw} dbname=sales"'),  # libpq
                c("print(cfg)", out(f"{{'dsn': 'Server=db;User Id=etl;Password={pw};'}}\n")),
            ],
            [("KL301", i) for i in range(9)] + [("KL302", 9), ("KL104", 9)],
        ),
        Case(
            "connection_strings_quiet",
            [
                c(
                    "import os\nREDIS = f\"redis://:{os.environ['REDIS_PW']}@cache:6379/0\"\n"
                    'JDBC = "jdbc:postgresql://db/sales?user=etl&password=${DB_PASSWORD}"\n'
                    'ADO = "Server=db;User Id=etl;Password=<password>;"\n'
                    'ODBC = "SERVER=db;UID=etl;PWD={password}"\n'
                    'DSN = "host=db user=etl password=%s dbname=sales" % os.environ["PW"]'
                ),
                c(
                    'LOCAL_MQ = "amqp://guest:guest@localhost:5672//"\n'
                    'TEST_DB = "postgresql://postgres:postgres@localhost/test"\n'
                    "ENC = 'postgresql://u:%3Cpassword%3E@db/x'\nSTARS = 'redis://:***@cache:6379'"
                ),
                md(
                    "Connection strings look like `Server=myServerAddress;Database=myDataBase;"
                    "User Id=myUsername;Password=myPassword;` or `jdbc:postgresql://localhost/"
                    "test?user=fred&password=secret&ssl=true`; the manual's example is `mongodb"
                    f"://reader:{pw}@mongodb0.example.com:27017/`."
                ),
                c(
                    "import os\nimport psycopg2\npw = os.environ['PW']\n"
                    "conn = psycopg2.connect('dbname=sales', password=pw)"
                ),
            ],
        ),
    ]


def keyword_cases() -> list[Case]:
    c = code
    pw = PASSWORD
    token = glue("Sup3r", "S3cretTok9")
    return [
        Case(
            "keyword_secrets",
            [
                c(
                    "import psycopg2\nconn = psycopg2.connect(host='db.acme.io', user='etl', "
                    f"password={pw!r})"
                ),
                c(f"import pymysql\nconn = pymysql.connect(host='db', user='etl', passwd={pw!r})"),
                c(f"import pyodbc\nconn = pyodbc.connect(server='db', uid='etl', pwd={pw!r})"),
                c(f"import openai\nclient = openai.OpenAI(api_key={token!r})"),
                c(f"import hvac\nvault = hvac.Client(url='https://vault.io', token={token!r})"),
                c(f"settings = {{'host': 'db', 'password': {pw!r}}}"),
                c(f"import os\nos.environ['DB_PASSWORD'] = {pw!r}"),
                c(f"db_password = {pw[:5]!r} + {pw[5:]!r}"),  # a password built from pieces
                c(f"def connect(host, secret={token!r}):\n    return host, secret"),
            ],
            [("KL301", i) for i in range(9)],
        ),
        Case(
            "keyword_secrets_quiet",
            [
                c(
                    "import os\nimport psycopg2\nfrom getpass import getpass\n"
                    "a = psycopg2.connect(host='db', password=os.environ['DB_PASSWORD'])\n"
                    "b = psycopg2.connect(host='db', password=os.getenv('PW', ''))\n"
                    "c = psycopg2.connect(host='db', password=getpass())"
                ),
                c(
                    "import psycopg2\npsycopg2.connect(password='<password>')\n"
                    "psycopg2.connect(password='***')\n"
                    "psycopg2.connect(password='changeme')\npsycopg2.connect(password='')\n"
                    "psycopg2.connect(password='${PASSWORD}')\n"
                    "psycopg2.connect(password='{password}')\npsycopg2.connect(password=None)"
                ),
                c(
                    "import os\ncfg = {'password': os.environ['PW'], 'token': '', "
                    "'secret_name': 'prod/db-credentials', 'password_field': 'password'}\n"
                    "api_key = 'YOUR_API_KEY'\ngh = dict(token='GITHUB_TOKEN')\n"
                    "creds = dict(password_file='secrets/db.txt', api_key='DEMO_KEY')"
                ),
                c(
                    "from transformers import AutoTokenizer\n"
                    "tok = AutoTokenizer.from_pretrained('gpt2', pad_token='<|endoftext|>')\n"
                    "tok.add_special_tokens({'eos_token': '</s>', 'mask_token': '[MASK]'})\n"
                    "login = dict(password=input('Password: '), token=tok.eos_token)"
                ),
                md(
                    "Pass the password at run time: `psycopg2.connect(host=..., "
                    "password=os.environ['PGPASSWORD'])`, never `password='...'`."
                ),
            ],
            [("KL203", 0), ("KL203", 3)],
        ),
    ]


def evasion_cases() -> list[Case]:
    return [*folded_evasions(), *connection_cases(), *keyword_cases()]
