"""`alerts:` in kiln.yaml tells of a failed pipeline build, `kiln build` included: the alert
(a real HTTP server) names the build, its tasks and the failing task's error; a delivery that
fails is logged, shown and recorded on the build, and never changes the build or its exit
code; a build that succeeds sends nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nbformat
import pytest

from kiln.store.builds import BuildStore
from kilnsinks import webhook_sink

from kilntest import KILN, build_notebook

pytestmark = pytest.mark.kernel


def _project(root: Path, url: str, fail: bool) -> None:
    nbformat.write(build_notebook([("fail = False", ["parameters"]),
                                   "assert not fail, 'bad rows'"]), root / "a.ipynb")  # fmt: skip
    nbformat.write(build_notebook(["print('b')"]), root / "b.ipynb")
    (root / "kiln.yaml").write_text(
        f"""\
pipelines:
  etl:
    tasks:
      a: {{notebook: a.ipynb, parameters: {{fail: {str(fail).lower()}}}}}
      b: {{notebook: b.ipynb, upstream: [a]}}
alerts:
  webhook: {{url: "{url}", timeout: 5}}
"""
    )


def _build(root: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(home)
    return subprocess.run([KILN, "build", "--json"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=240)  # fmt: skip


def test_a_failed_kiln_build_alerts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with webhook_sink() as hook:
        _project(tmp_path, hook.url, fail=True)
        done = _build(tmp_path, home)
        posts = [p["json"] for p in hook.posts]
    assert done.returncode == 1, done.stderr
    build = json.loads(done.stdout)
    (alert,) = posts
    assert alert["alert"] == "build_failed" and alert["build_id"] == build["id"]
    assert alert["pipeline"] == "etl" and alert["build_state"] == "failed"
    assert alert["failed_task"]["task"] == "a" and "bad rows" in alert["failed_task"]["error"]
    assert {t["task"]: t["state"] for t in alert["tasks"]} == {"a": "failed", "b": "blocked"}
    assert build["alerts"][0]["kind"] == "webhook" and build["alerts"][0]["ok"] is True
    with BuildStore.open(home) as builds:
        assert builds.deliveries(build["id"])[0]["ok"] is True


def test_an_alert_that_cannot_be_sent_never_changes_the_build(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with webhook_sink(status=500) as hook:
        _project(tmp_path, hook.url, fail=True)
        done = _build(tmp_path, home)
        assert hook.attempts >= 1
    assert done.returncode == 1  # the task failed; the alert's failure adds nothing
    build = json.loads(done.stdout)
    assert build["state"] == "failed"
    assert "alert by webhook failed" in done.stderr and "answered 500" in done.stderr
    with BuildStore.open(home) as builds:
        (recorded,) = builds.deliveries(build["id"])
        assert builds.get_build(build["id"]).state == "failed"
    assert recorded["ok"] is False and "answered 500" in recorded["error"]


def test_a_good_build_sends_no_alert(tmp_path: Path) -> None:
    with webhook_sink() as hook:
        _project(tmp_path, hook.url, fail=False)
        done = _build(tmp_path, tmp_path / "home")
        assert hook.posts == []
    assert done.returncode == 0 and "alerts" not in json.loads(done.stdout)


def test_kiln_build_from_python_alerts_as_the_command_does(tmp_path: Path) -> None:
    import kiln

    home = tmp_path / "home"
    with webhook_sink() as hook:
        _project(tmp_path, hook.url, fail=True)
        build = kiln.build("etl", project=tmp_path, home=home)
        posts = [p["json"] for p in hook.posts]
    assert build.state == "failed"
    (alert,) = posts
    assert alert["alert"] == "build_failed" and alert["build_id"] == build.id
    assert alert["failed_task"]["task"] == "a" and "bad rows" in alert["failed_task"]["error"]
    with BuildStore.open(home) as builds:
        assert builds.deliveries(build.id)[0]["ok"] is True
