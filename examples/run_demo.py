"""`make demo`: run the bundled sales report twice through the `kiln` command, then show the
run history; then build the bundled pipeline twice (the second time everything is up to
date) and draw it; then say where everything is. Exits non-zero if any step fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "sales"
PIPELINE = HERE / "pipeline"
OUT = HERE / "output"
KILN = str(Path(sys.executable).with_name("kiln"))


def kiln(*args: str, cwd: Path = PROJECT) -> None:
    print(f"\n$ kiln {' '.join(args)}", flush=True)
    env = dict(os.environ, KILN_HOME=str(OUT / ".kiln"))
    subprocess.run([KILN, *args], cwd=cwd, env=env, check=True)


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
    # the pipeline: generate -> clean (one task per region) -> analyse -> report
    kiln("build", "-j", "2", cwd=PIPELINE)  # everything runs
    kiln("build", "-j", "2", cwd=PIPELINE)  # everything is up to date: nothing runs
    picture = OUT / "pipeline" / "sales.svg"
    kiln("dag", "-o", str(picture), cwd=PIPELINE)
    if not picture.exists():  # no Graphviz: the picture is Mermaid text
        picture = picture.with_suffix(".mmd")
    print(
        "\nDemo finished. Results are in "
        f"{OUT}:\n  output notebooks  {OUT}/daily_sales_EU.ipynb, {OUT}/daily_sales_US.ipynb\n"
        f"  run history       {OUT}/.kiln/kiln.db (try: KILN_HOME={OUT}/.kiln "
        ".venv/bin/kiln runs list)\n"
        f"  per-run folders   {OUT}/.kiln/runs/<id>/ (run.log; inputs in {OUT}/.kiln/inputs/)\n"
        f"  pipeline products {OUT}/pipeline/ (report.md, summary.csv, clean/, orders.csv)\n"
        f"  pipeline picture  {picture}\n"
        f"  pipeline status   cd {PIPELINE.relative_to(HERE.parent)} && KILN_HOME={OUT}/.kiln "
        "../../.venv/bin/kiln status"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        print(f"demo step failed with exit code {exc.returncode}", file=sys.stderr)
        sys.exit(1)
