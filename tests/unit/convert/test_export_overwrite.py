"""`kiln export` writes an executable script, and never overwrites what it did not write, or what
was edited since it wrote it, without --force (the kiln-export checksum)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from kiln.cli.main import run_main
from kiln.convert import stamp


def test_seal_and_check_a_text():
    text = stamp.seal(f"# {stamp.PLACEHOLDER}\nprint(1)\n")
    assert stamp.PLACEHOLDER not in text
    assert stamp.check(text) == "intact"
    assert stamp.check(text.replace("print(1)", "print(2)")) == "edited"
    digest = text.split("sha256=")[1][:64]
    other = digest.translate(str.maketrans("0123456789abcdef", "123456789abcdef0"))
    assert stamp.check(text.replace(digest, other)) == "edited"  # the line itself changed
    assert stamp.check("print(1)\n") == "unsealed"
    assert stamp.seal("print(1)\n") == "print(1)\n"  # nothing to fill in


@pytest.fixture
def exported(make_nb, tmp_path):
    nb = make_nb([("n = 1", ["parameters"]), "print(n)"], name="report.ipynb")
    assert run_main(["export", str(nb), "-q"]) == 0
    return nb, tmp_path / "report.py"


def test_script_is_executable_with_a_shebang(exported):
    _, script = exported
    assert script.read_text().startswith("#!/usr/bin/env python3\n")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(script.stat().st_mode) == 0o777 & ~umask
    if os.access(script, os.X_OK) and sys.platform != "win32":
        done = subprocess.run(
            [str(script), "--n", "2"], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0 and done.stdout == "2\n"


def test_script_mode_follows_the_umask(make_nb, tmp_path):
    nb = make_nb(["print(1)"], name="strict.ipynb")
    previous = os.umask(0o077)
    try:
        assert run_main(["export", str(nb), "-q"]) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "strict.py").stat().st_mode) == 0o700


def test_an_unedited_export_is_overwritten(exported):
    nb, script = exported
    nb.write_text(nb.read_text().replace('"n = 1"', '"n = 5"'))
    assert run_main(["export", str(nb), "-q"]) == 0
    assert "n = 5" in script.read_text()


def test_an_edited_export_is_kept_unless_forced(exported, capsys):
    nb, script = exported
    edited = script.read_text().replace("print(n)", "print(n * 2)")
    script.write_text(edited)
    assert run_main(["export", str(nb)]) == 2
    err = capsys.readouterr().err
    assert f"{script} was edited since kiln export wrote it" in err and "--force" in err
    assert script.read_text() == edited
    assert run_main(["export", str(nb), "--force", "-q"]) == 0
    assert "print(n * 2)" not in script.read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("print('mine')\n", "was not written by kiln export", id="hand-written"),
        pytest.param(
            "#!/usr/bin/env python3\n# kiln export: generated from report.ipynb; edit ...\n",
            "recorded no checksum",
            id="older-kiln-export",
        ),
        pytest.param("# ---\n# jupyter:\n#   jupytext:\n", "not written by kiln", id="jupytext"),
    ],
)
def test_a_file_kiln_did_not_seal_is_kept_unless_forced(
    make_nb, tmp_path, capsys, content, message
):
    nb = make_nb(["print(1)"], name="report.ipynb")
    script = tmp_path / "report.py"
    script.write_text(content)
    assert run_main(["export", str(nb)]) == 2
    err = capsys.readouterr().err
    assert message in err and "pass --force" in err and str(script) in err
    assert script.read_text() == content
    assert run_main(["export", str(nb), "--force", "-q"]) == 0


def test_text_notebooks_carry_the_checksum_too(make_nb, tmp_path, capsys):
    nb = make_nb([("n = 1", ["parameters"])], name="report.ipynb")
    assert run_main(["export", str(nb), "--to", "py:percent", "-q"]) == 0
    text = (tmp_path / "report.py").read_text()
    assert stamp.check(text) == "intact" and "#     kiln-export: sha256=" in text
    assert run_main(["export", str(nb), "--to", "py:percent", "-q"]) == 0
    (tmp_path / "report.py").write_text(text.replace("n = 1", "n = 2"))
    assert run_main(["export", str(nb), "--to", "py:percent"]) == 2
    assert "was edited since kiln export wrote it" in capsys.readouterr().err
    assert not os.access(tmp_path / "report.py", os.X_OK)  # a text notebook, not a program


@pytest.mark.parametrize("command", ["export", "lint"])
def test_an_output_that_cannot_be_written_is_a_usage_error(make_nb, tmp_path, capsys, command):
    nb = make_nb(["print(1)"], name="report.ipynb")
    (tmp_path / "a-file").write_text("")
    target = tmp_path / "a-file" / "out.txt"  # its folder is a file
    assert run_main([command, str(nb), "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {target}" in err and "Traceback" not in err and "Internal" not in err
    assert not target.parent.is_dir()
