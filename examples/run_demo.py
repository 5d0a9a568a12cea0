"""`make demo`: run the bundled sales report twice through the `kiln` command, then show the
run history; then build the bundled pipeline twice (the second time everything is up to
date) and draw it; then show the sales report's schedule, run it now through `kiln scheduler`
and mail its report to a local SMTP sink; then say where everything is. Exits non-zero if any
step fails."""

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
    mailed = scheduled_report()
    print(
        "\nDemo finished. Results are in "
        f"{OUT}:\n  output notebooks  {OUT}/daily_sales_EU.ipynb, {OUT}/daily_sales_US.ipynb\n"
        f"  run history       {OUT}/.kiln/kiln.db (try: KILN_HOME={OUT}/.kiln "
        ".venv/bin/kiln runs list)\n"
        f"  per-run folders   {OUT}/.kiln/runs/<id>/ (run.log; inputs in {OUT}/.kiln/inputs/)\n"
        f"  pipeline products {OUT}/pipeline/ (report.md, summary.csv, clean/, orders.csv)\n"
        f"  pipeline picture  {picture}\n"
        f"  mailed report     {mailed} (the e-mail as the local SMTP sink received it)\n"
        f"  pipeline status   cd {PIPELINE.relative_to(HERE.parent)} && KILN_HOME={OUT}/.kiln "
        "../../.venv/bin/kiln status"
    )
    return 0


def scheduled_report() -> Path:
    """Show the schedule's next fire times, fire it now, let `kiln scheduler` run it and mail
    the report to an SMTP sink on 127.0.0.1:2525 (kiln.yaml's smtp); returns the message."""
    import time

    from aiosmtpd.controller import Controller

    mail = OUT / "mail"
    mail.mkdir(parents=True, exist_ok=True)
    received: list[Path] = []

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            path = mail / f"message-{len(received) + 1}.eml"
            path.write_bytes(envelope.content)  # type: ignore[attr-defined]
            received.append(path)
            return "250 OK"

    sink = Controller(Sink(), hostname="127.0.0.1", port=2525)
    sink.start()
    env = dict(os.environ, KILN_HOME=str(OUT / ".kiln"))
    try:
        kiln("schedules", "list")
        kiln("schedules", "run-now", "daily-sales")
        print("\n$ kiln scheduler   (until the report is mailed)", flush=True)
        scheduler = subprocess.Popen([KILN, "scheduler"], cwd=PROJECT, env=env)
        try:
            deadline = time.monotonic() + 300
            while not received and time.monotonic() < deadline:
                time.sleep(0.5)
            if not received:
                raise SystemExit("demo: the report was not mailed within 5 minutes")
            # the scheduler records the delivery just after the mail went out: wait for it
            # (a fixed pause lost that race once on a busy machine)
            deliveries = _deliveries(env)
            while not deliveries and time.monotonic() < deadline:
                time.sleep(0.2)
                deliveries = _deliveries(env)
            if not deliveries:
                raise SystemExit("demo: the scheduler did not record the mailed report")
        finally:
            scheduler.terminate()
            scheduler.wait(timeout=60)
    finally:
        sink.stop()
    kiln("schedules", "history", "daily-sales")
    files = deliveries[0].get("files", {})
    print(f"\nThe report was mailed to managers@example.com; the sink saved it as {received[0]}")
    for kind, path in files.items():
        print(f"  report ({kind}): {path}")
    return received[0]


def _deliveries(env: dict[str, str]) -> list[dict[str, object]]:
    """The deliveries recorded for the schedule's latest slot (none yet: empty)."""
    import json

    history = subprocess.run(
        [KILN, "schedules", "history", "daily-sales", "--json"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    slots = json.loads(history.stdout)
    return list(slots[0].get("deliveries") or []) if slots else []


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        print(f"demo step failed with exit code {exc.returncode}", file=sys.stderr)
        sys.exit(1)
