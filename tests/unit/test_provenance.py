"""Provenance: distributions read from metadata folder names, environment hashes, the git
state of a repository (cached, re-read when it changes) and input hashes (once per content)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kiln import provenance
from kiln.provenance import Environment, git_state, hash_file, package_changes, scan_distributions


def _dist(folder: Path, name: str, *, metadata: str | None = None) -> None:
    path = folder / name
    path.mkdir(parents=True)
    if metadata is not None:
        (path / "METADATA").write_text(metadata)


def test_distributions_come_from_folder_names_first_on_the_path_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    _dist(first, "numpy-2.1.0.dist-info")
    _dist(first, "Foo_Bar-1.0rc1.dist-info")
    _dist(first, "legacy-0.3-py3.11.egg-info")
    _dist(second, "numpy-1.26.4.dist-info")
    _dist(
        second, "oddname.dist-info", metadata="Metadata-Version: 2.1\nName: oddname\nVersion: 7\n"
    )
    found = dict(scan_distributions([str(first), str(second), str(tmp_path / "missing")]))
    assert found == {"numpy": "2.1.0", "foo-bar": "1.0rc1", "legacy": "0.3", "oddname": "7"}


def test_the_real_environment_matches_importlib_metadata() -> None:
    import importlib.metadata as md

    expected = {
        provenance._canonical(d.metadata["Name"]): d.version
        for d in md.distributions()
        if d.metadata["Name"]
    }
    found = provenance.current_environment().package_map
    assert {k: v for k, v in expected.items() if k in found} == {
        k: found[k] for k in expected if k in found
    }
    assert set(expected) <= set(found)


def test_another_venv_on_the_same_base_python_is_another_environment(tmp_path: Path) -> None:
    # a venv's bin/python is a symlink to the base interpreter, like this one's may be
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "v")], check=True)
    other = tmp_path / "v" / "bin" / "python"
    site = next((tmp_path / "v" / "lib").glob("python*/site-packages"))
    (site / "kilnonlyhere-1.2.dist-info").mkdir()
    env = provenance.environment_of(str(other))
    assert env.executable == str(other)
    assert env.package_map.get("kilnonlyhere") == "1.2"
    assert "kilnonlyhere" not in provenance.current_environment().package_map
    # this venv's own python, by another name in its folder, is this environment
    assert provenance.environment_of(sys.executable) is provenance.current_environment()


def _env(*packages: tuple[str, str], version: str = "3.11.7") -> Environment:
    return Environment("python", version, "CPython", "Linux-x", "x86_64", tuple(packages))


def test_the_hash_names_what_defines_an_environment() -> None:
    one = _env(("a", "1"), ("b", "2"))
    assert one.hash == _env(("a", "1"), ("b", "2")).hash
    assert one.hash != _env(("a", "1"), ("b", "3")).hash
    assert one.hash != _env(("a", "1"), ("b", "2"), version="3.12.0").hash
    assert Environment.from_json(one.to_json()) == one
    assert package_changes({"a": "1", "b": "2", "c": "1"}, {"a": "1", "b": "3", "d": "1"}) == {
        "added": ["d"],
        "removed": ["c"],
        "changed": [["b", "2", "3"]],
    }


def test_an_install_is_seen_without_rescanning_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    _dist(site, "alpha-1.0.dist-info")
    monkeypatch.setattr(sys, "path", [str(site)])
    monkeypatch.setattr(provenance, "_known", {})
    before = provenance.current_environment()
    assert provenance.current_environment() is before  # cached: the folder did not change
    shutil.rmtree(site / "alpha-1.0.dist-info")
    _dist(site, "alpha-2.0.dist-info")  # an upgrade changes the folder
    after = provenance.current_environment()
    assert after.package_map == {"alpha": "2.0"}
    assert after.hash != before.hash


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@e",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@e",
        },
    )


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    monkeypatch.setattr(provenance, "_git_cache", {})
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "nb.ipynb").write_text("{}")
    _git(root, "add", "nb.ipynb")
    _git(root, "commit", "-q", "-m", "one")
    (root / "sub").mkdir()
    return root


def test_git_state_commit_dirty_and_diff(repo: Path) -> None:
    clean = git_state(repo / "sub", now=0.0)
    assert clean is not None and clean.commit and len(clean.commit) == 40
    assert (clean.branch, clean.dirty, clean.diff_sha256) == ("main", False, None)
    (repo / "nb.ipynb").write_text('{"a": 1}')
    edited = git_state(repo, now=100.0)
    assert edited is not None and edited.dirty and edited.diff_sha256
    (repo / "nb.ipynb").write_text('{"a": 2}')
    other = git_state(repo, now=200.0)
    assert other is not None and other.diff_sha256 != edited.diff_sha256
    assert git_state(repo.parent) is None or git_state(repo.parent).root != str(repo)  # type: ignore[union-attr]


def test_kilns_own_home_does_not_make_the_repository_dirty(repo: Path) -> None:
    home = repo / ".kiln"
    (home / "runs").mkdir(parents=True)
    (home / "kiln.db").write_text("x")
    state = git_state(repo, exclude=home, now=0.0)
    assert state is not None and not state.dirty
    # without the exclusion the untracked home is a change; other untracked files still are
    seen = git_state(repo, now=0.0)
    assert seen is not None and seen.dirty
    (repo / "notes.txt").write_text("new")
    after = git_state(repo, exclude=home, now=100.0)
    assert after is not None and after.dirty and after.diff_sha256
    # a home outside the repository leaves nothing out
    assert git_state(repo, exclude=repo.parent / "elsewhere", now=200.0) == git_state(
        repo, now=200.0
    )


def test_git_state_is_reused_briefly_but_a_commit_is_seen_at_once(repo: Path) -> None:
    first = git_state(repo, now=0.0)
    (repo / "nb.ipynb").write_text('{"b": 1}')
    # within the time to live, nothing that git tracks as HEAD or index changed: reused
    assert git_state(repo, now=0.5) is first
    assert git_state(repo, now=provenance.GIT_TTL + 1) != first
    _git(repo, "commit", "-qam", "two")
    after = git_state(repo, now=provenance.GIT_TTL + 1.5)
    assert after is not None and first is not None
    assert after.commit != first.commit and not after.dirty


def test_input_files_are_hashed_once_per_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "x.csv"
    data.write_text("a,b\n1,2\n")
    first = hash_file(data)
    reads = []
    real_open = open

    def counting_open(path, *args, **kw):  # type: ignore[no-untyped-def]
        if str(path) == str(data):
            reads.append(path)
        return real_open(path, *args, **kw)

    monkeypatch.setattr("builtins.open", counting_open)
    assert hash_file(data) == first
    assert reads == []
    data.write_text("a,b\n1,3\n")
    os.utime(data, ns=(1, 1))
    changed = hash_file(data)
    assert changed.sha256 != first.sha256 and reads
    missing = hash_file(tmp_path / "gone.csv")
    assert missing.sha256 is None and missing.error


def test_a_known_environment_is_one_nothing_changed_since_it_was_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    _dist(site, "alpha-1.0.dist-info")
    monkeypatch.setattr(sys, "path", [str(site)])
    monkeypatch.setattr(provenance, "_known", {})
    assert provenance.known_environment(None) is None  # never read: finding it takes a scan
    env = provenance.current_environment()
    assert provenance.known_environment(None) is env
    assert provenance.known_environment(sys.executable) is env
    shutil.rmtree(site / "alpha-1.0.dist-info")
    _dist(site, "alpha-2.0.dist-info")
    assert provenance.known_environment(None) is None  # an install: read it again
    assert provenance.known_environment("/nowhere/python") is None  # never asked
    other = provenance.known_environment(None, language="R")
    assert other is not None and other.language == "r"


def test_a_known_git_state_is_a_cached_one_whose_head_and_index_did_not_change(
    repo: Path,
) -> None:
    assert provenance.known_git_state(repo) == (False, None)  # never read: git must be asked
    first = git_state(repo)
    known, state = provenance.known_git_state(repo / "sub")
    assert known and state is first
    (repo / "nb.ipynb").write_text('{"c": 1}')
    _git(repo, "commit", "-qam", "two")
    assert provenance.known_git_state(repo) == (False, None)  # a commit: ask git again
    assert git_state(repo) != first
    assert provenance.known_git_state(repo)[0]
    outside = repo.parent / "elsewhere"
    outside.mkdir()
    if provenance.find_repository(outside) is None:
        assert provenance.known_git_state(outside) == (True, None)


def test_the_os_description_is_platforms_own_text() -> None:
    import platform

    provenance.os_description.cache_clear()
    assert provenance.os_description() == platform.platform()


@pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or os.uname().machine not in provenance._PROCESSOR_LEFT_OUT
    or os.path.exists("/etc/gentoo-release"),
    reason="the description without a subprocess is for Linux on the listed machines",
)
def test_the_os_description_starts_no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a subprocess was started: {args}")

    provenance.os_description.cache_clear()
    platform._uname_cache = None  # type: ignore[attr-defined]
    monkeypatch.setattr(subprocess, "Popen", refused)
    monkeypatch.setattr(subprocess, "check_output", refused)
    try:
        text = provenance.os_description()
    finally:
        provenance.os_description.cache_clear()
    assert text.startswith(f"Linux-{os.uname().release}".replace(" ", "_"))
    assert "-with-" in text


def test_elsewhere_the_os_description_asks_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    real = os.uname()
    fake = os.uname_result((real.sysname, real.nodename, real.release, real.version, "i686"))
    monkeypatch.setattr(os, "uname", lambda: fake)
    monkeypatch.setattr(platform, "platform", lambda: "Linux-asked-i686")
    provenance.os_description.cache_clear()
    try:
        assert provenance.os_description() == "Linux-asked-i686"
    finally:
        provenance.os_description.cache_clear()


@pytest.mark.parametrize(
    "parts",
    [
        ("Linux", "6.1.0-18-amd64", "x86_64", "with", "glibc2.36"),
        ("Lin ux", 'a/b\\c:d;e"f(g)h', "unknown", "", "x--y-"),
        ("Linux", "5.15.0 (custom)", "aarch64", "with", "glibc2.31"),
    ],
)
def test_the_description_is_cleaned_as_platform_cleans_it(parts: tuple[str, ...]) -> None:
    import platform

    assert provenance._platform_text(*parts) == platform._platform(*parts)  # type: ignore[attr-defined]
