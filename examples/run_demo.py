"""`make demo`: run the bundled sales report twice through the `kiln` command, then show the
run history and where everything is. Exits non-zero if any step fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "sales"
OUT = HERE / "output"
KILN = str(Path(sys.executable).with_name("kiln"))


def kiln(*args: str) -> None:
    print(f"\n$ kiln {' '.join(args)}", flush=True)
    env = dict(os.environ, KILN_HOME=str(OUT / ".kiln"))
    subprocess.run([KILN, *args], cwd=PROJECT, env=env, check=True)


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    nb = "daily_sales.ipynb"
    kiln("params", nb)
    kiln(
        "run",
        nb,
        str(OUT / "daily_sales_EU.ipynb"),
        "-p",
        "region",
        "EU",
        "-p",
        "date",
        "2026-11-21",
        "-p",
        "n_orders",
        "500",
    )
    kiln("run", nb, str(OUT / "daily_sales_US.ipynb"), "-f", "kiln-demo-params.yaml")
    kiln("runs", "list")
    kiln("runs", "show", "last")
    print(
        "\nDemo finished. Results are in "
        f"{OUT}:\n  output notebooks  {OUT}/daily_sales_EU.ipynb, {OUT}/daily_sales_US.ipynb\n"
        f"  run history       {OUT}/.kiln/kiln.db (try: KILN_HOME={OUT}/.kiln "
        ".venv/bin/kiln runs list)\n"
        f"  per-run folders   {OUT}/.kiln/runs/<id>/ (run.log; inputs in {OUT}/.kiln/inputs/)"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        print(f"demo step failed with exit code {exc.returncode}", file=sys.stderr)
        sys.exit(1)
