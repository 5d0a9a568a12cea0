"""``kiln verify NB...``: re-run each notebook in fresh state and compare its outputs with the
saved ones; exit 0 when reproducible, 1 when a notebook diverged or failed, 2 on bad usage."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kiln.errors import UsageError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="re-run a notebook and check its saved outputs are reproducible",
        description="Run each notebook top to bottom in fresh state (a recorded run with the "
        "notebook's own parameter defaults) and compare the fresh outputs with the saved "
        "ones, after replacing volatile parts: memory addresses, timestamps and dates, uuids, "
        "temporary paths, colour codes, %time figures. Images are compared by type unless "
        "--strict-images. Reports the first diverging cell with a diff of its outputs. Cells "
        "tagged kiln-verify-skip or nbval-ignore-output (or commented # NBVAL_IGNORE_OUTPUT) "
        "are not compared, nor are cells never executed in the saved notebook. kiln.yaml: "
        "verify: {ignore: [regex, ...], strict_images: bool}.",
        epilog="Exit codes: 0 reproducible, 1 diverged or the fresh run failed, 2 bad usage.",
    )
    p.add_argument("notebooks", nargs="+", metavar="NB", help="notebook(s) to verify")
    p.add_argument(
        "--engine",
        choices=("auto", "fork", "kernel"),
        default="auto",
        help="auto (default): the fork engine for Python notebooks, else a kernel",
    )
    p.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="seconds the whole run may take"
    )
    p.add_argument("--cell-timeout", type=float, metavar="SECONDS", help="seconds one cell may run")
    p.add_argument(
        "--ignore-regex",
        action="append",
        default=[],
        metavar="REGEX",
        help="replace matches by <IGNORED> in saved and fresh outputs before comparing "
        "(repeatable; added to kiln.yaml's verify.ignore)",
    )
    p.add_argument(
        "--strict-images",
        action="store_true",
        default=None,
        help="compare image bytes exactly (default: an image of the same type must be there)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from kiln.testing.session import NotebookSession
    from kiln.testing.verify import VerifyResult, build_normalizer, verify_notebook

    for name, value in (("--timeout", args.timeout), ("--cell-timeout", args.cell_timeout)):
        if value is not None and value <= 0:
            raise UsageError(f"{name} must be a positive number of seconds, not {value:g}")
    normalizers = [
        build_normalizer(nb, ignore=args.ignore_regex, strict_images=args.strict_images)
        for nb in args.notebooks
    ]  # every notebook's settings and regexes are checked before anything runs

    def warn(text: str) -> None:
        if not args.json:
            print(f"Warning: {text}", file=sys.stderr)

    results: list[VerifyResult] = []
    with NotebookSession() as session:
        for notebook, normalizer in zip(args.notebooks, normalizers, strict=True):
            result = verify_notebook(
                notebook,
                engine=args.engine,
                timeout=args.timeout,
                cell_timeout=args.cell_timeout,
                normalizer=normalizer,
                session=session,
                on_warning=warn,
            )
            results.append(result)
            if not args.json:
                print(result.report(), flush=True)
            if result.run.state == "cancelled":
                raise KeyboardInterrupt
    ok = all(r.ok for r in results)
    if args.json:
        payload = {"reproducible": ok, "notebooks": [r.to_json() for r in results]}
        print(json.dumps(payload, indent=2, default=str))
    return 0 if ok else 1
