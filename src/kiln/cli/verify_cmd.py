"""``kiln verify NB...``: re-run each notebook in fresh state and compare its outputs with the
saved ones; exit 0 when reproducible, 1 when a notebook diverged or failed, 2 on bad usage."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kiln.flags import add_run_options, run_options_from
from kiln.options import NOT_FOR


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        parents=parents,
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
    add_run_options(p.add_argument_group("run options"), exclude=NOT_FOR["verify"])
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
    from kiln.store.records import RunState
    from kiln.testing.session import NotebookSession
    from kiln.testing.verify import VerifyResult, build_normalizer, verify_notebook

    options = run_options_from(args)
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
                normalizer=normalizer,
                session=session,
                on_warning=warn,
                **options,
            )
            results.append(result)
            if not args.json:
                print(result.report(), flush=True)
            if result.run.state is RunState.CANCELLED:
                raise KeyboardInterrupt
    ok = all(r.ok for r in results)
    if args.json:
        payload = {"reproducible": ok, "notebooks": [r.to_json() for r in results]}
        print(json.dumps(payload, indent=2, default=str))
    return 0 if ok else 1
