"""What the runner records about a run beyond its cells: the environment it ran in, the git
state of its notebook's repository, the files it declared it reads, and the metric points and
artefacts it logged.

:class:`RunCapture` starts when the run starts: the environment, git state and declared
inputs are looked up on a worker thread while the engine boots (each is cached per process,
see :mod:`kiln.provenance`, so a run in a known environment and repository costs a dictionary
lookup and a few ``stat`` calls), and the environment is stored once per hash. Metric points,
artefacts and ``kiln.input`` files arrive as outputs of their own mime types
(:mod:`kiln.recording`) and are collected as they come. Everything is written with the run's
terminal state, in the same UPDATE.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from kiln.provenance import Environment, environment_of, git_fingerprint, git_state, hash_file
from kiln.recording import ARTIFACTS_FOLDER, tracking_from_output

if TYPE_CHECKING:
    from kiln.request import Prepared, RunRequest
    from kiln.store.sql import RunStore

#: how long the end of a run waits for its capture before recording the run without it
CAPTURE_WAIT = 10.0
#: seconds a run reuses what the last run of the same notebook, history and Python found
#: out with ``stat`` calls (the environment unchanged, where the repository and the project
#: file are, no declared inputs): back-to-back runs (a sweep, an endpoint's calls) skip those
#: ~15 calls. A commit, or a change of the index, is still seen at once (two ``stat`` calls).
KNOWN_TTL = 1.0


class _Found(NamedTuple):
    """What :meth:`RunCapture.known` found for a run, and when."""

    at: float
    environment: Environment
    #: the notebook's repository, and its HEAD and index then (None: outside one)
    root: str | None
    fingerprint: Any
    context: dict[str, Any]


#: :class:`_Found` by run (its Python, language, notebook, working directory and history)
_recent: dict[tuple[Any, ...], _Found] = {}
#: entries kept at most (a server with many notebooks): all are dropped past it
_RECENT_MAX = 256


class RunCapture:
    """One run's provenance (looked up in the background) and tracked outputs."""

    def __init__(self, prepared: Prepared, engine_name: str, store: RunStore, run_id: str) -> None:
        self.prepared = prepared
        self.run_id = run_id
        self.engine_name = engine_name
        self.store = store
        self.metrics: list[dict[str, Any]] = []
        self.artifacts: dict[str, dict[str, Any]] = {}
        self.notebook_inputs: dict[str, dict[str, Any]] = {}
        self.environment: Environment | None = None
        self.context: dict[str, Any] = {}
        self._task: asyncio.Future[dict[str, Any]] | None = None

    def start(self, known: dict[str, Any] | None = None) -> None:
        """Look up the environment, git state and declared inputs: at once when all of it
        is at hand (the usual case from a process's second run: cached, checked with a few
        ``stat`` calls), else on a worker thread (a thread per run costs more than those
        lookups, and two wake-ups of the event loop). ``known``: what :meth:`known` just
        found, if it was called."""
        if known is None:
            known = self.known()
        if known is not None:
            self.context = known
            return
        self._task = asyncio.ensure_future(asyncio.to_thread(self._lookup))

    def known(self) -> dict[str, Any] | None:
        """What :meth:`_lookup` would find, if nothing slow is needed to find it: no scan
        of the distributions, no git command, no write, no file to hash."""
        from kiln.provenance import known_environment, known_git_state
        from kiln.store.environments import environment_saved

        prepared, request = self.prepared, self.prepared.request
        if request.mlflow_uri and not request.prepare_only:
            return None  # the export's mark is a write
        executable = _kernel_executable(prepared, self.engine_name)
        # the history too: what was found includes that it holds the environment's row
        history = (self.store.url, str(self.store.home))
        key = (executable, prepared.language, request.notebook_label, request.run_cwd, history)
        now = time.monotonic()
        recent = _recent.get(key)
        if (
            recent is not None
            and now - recent.at < KNOWN_TTL
            and (recent.root is None or git_fingerprint(recent.root) == recent.fingerprint)
        ):
            self.environment = recent.environment
            return dict(recent.context)
        env = known_environment(executable, language=prepared.language)
        if env is None or not environment_saved(self.store, env):
            return None
        folder = _notebook_folder(request)
        known, state = known_git_state(folder, exclude=self.store.home)
        if not known or _declared_inputs(request, folder):
            return None
        self.environment = env
        found: dict[str, Any] = {
            "environment_hash": env.hash,
            "git": state.to_json() if state is not None else None,
            "inputs": [],
        }
        root = state.root if state is not None else None
        if len(_recent) >= _RECENT_MAX:
            _recent.clear()
        _recent[key] = _Found(now, env, root, git_fingerprint(root) if root else None, found)
        return dict(found)

    def _lookup(self) -> dict[str, Any]:
        from kiln.store.environments import save_environment

        prepared, request = self.prepared, self.prepared.request
        out: dict[str, Any] = {}
        env = environment_of(
            _kernel_executable(prepared, self.engine_name), language=prepared.language
        )
        self.environment = env
        out["environment_hash"] = save_environment(self.store, env)
        where = _notebook_folder(request)
        state = git_state(where, exclude=self.store.home)
        out["git"] = state.to_json() if state is not None else None
        out["inputs"] = [hash_file(p).to_json() for p in _declared_inputs(request, where)]
        if request.mlflow_uri and not request.prepare_only:
            # owed from now on: a run that never gets to its export is found by sync-mlflow
            from kiln.mlflow_export import experiment_for
            from kiln.store.exports import PENDING, mark_export

            experiment = experiment_for(request.notebook_label, request.run_cwd)
            mark_export(
                self.store,
                self.run_id,
                uri=request.mlflow_uri,
                experiment=experiment,
                state=PENDING,
            )
        return out

    async def wait(self) -> None:
        """Wait (boundedly) for the background lookup; a failed one records nothing."""
        if self._task is None:  # found at once, or never started
            return
        try:
            self.context = await asyncio.wait_for(asyncio.shield(self._task), CAPTURE_WAIT)
        except Exception:  # never fail a run for its provenance
            self.context = {}

    def output(self, output: Mapping[str, Any]) -> None:
        """Collect a metric point, an artefact or an input the notebook declared."""
        found = tracking_from_output(output)
        if found is None:
            return
        kind, entry = found
        if kind == "metric" and isinstance(entry.get("name"), str):
            self.metrics.append(
                {"name": entry["name"], "value": entry.get("value"), "step": entry.get("step")}
            )
        elif kind == "artifact" and isinstance(entry.get("name"), str):
            self.artifacts[entry["name"]] = {
                "name": os.path.basename(entry["name"]),
                "path": str(entry.get("path", "")),
                "size": entry.get("size"),
                "sha256": entry.get("sha256"),
            }
        elif kind == "input" and isinstance(entry.get("path"), str):
            self.notebook_inputs[entry["path"]] = {
                "path": entry["path"],
                "sha256": entry.get("sha256"),
                "size": entry.get("size"),
                "source": "notebook",
            }

    def fields(self, run_dir: str | None) -> dict[str, Any]:
        """The run's columns to write with its terminal state."""
        out = dict(self.context)
        declared = {i["path"]: i for i in out.get("inputs") or []}
        declared.update(self.notebook_inputs)
        out["inputs"] = list(declared.values())
        out["metrics"] = self.metrics
        out["artifacts"] = [a for a in self.artifacts.values() if _inside(a["path"], run_dir)]
        return out


def _inside(path: str, run_dir: str | None) -> bool:
    """An artefact the runner keeps must be in this run's own artefact folder."""
    if not run_dir:
        return False
    folder = os.path.realpath(os.path.join(run_dir, ARTIFACTS_FOLDER))
    with contextlib.suppress(ValueError, OSError):
        return os.path.commonpath([folder, os.path.realpath(path)]) == folder
    return False


def _kernel_executable(prepared: Prepared, engine_name: str) -> str | None:
    """The Python a kernel engine's kernel runs (the fork engine runs Kiln's own)."""
    if engine_name != "kernel" or not prepared.language.startswith("python"):
        return None
    try:
        from kiln.engines.kernel import kernel_spec

        argv = list(kernel_spec(prepared.kernel_name).argv or [])
    except Exception:  # the kernel was found when the run was prepared; be safe anyway
        return None
    return str(argv[0]) if argv else None


def _notebook_folder(request: RunRequest) -> Path:
    """Where the notebook lives (its repository's git state is recorded): its folder, or
    the run's working directory for a notebook given as bytes whose path is gone."""
    label = Path(request.notebook_label)
    if label.is_absolute() and label.parent.is_dir():
        return label.parent
    return request.run_cwd


def _declared_inputs(request: RunRequest, folder: Path) -> list[Path]:
    """The files the project file says the notebook reads (``folder``: the notebook's)."""
    from kiln.project import find_project_file

    found = find_project_file(folder)
    if found is None:  # most runs: no project, nothing more to look at
        return []
    from kiln.project.file import project_at, project_inputs
    from kiln.yamlio import YamlError

    try:
        project = project_at(found)
    except YamlError:
        if found.exists():
            raise
        return []  # removed meanwhile
    return project_inputs(project, request.notebook_label)


def request_record(request: RunRequest) -> dict[str, Any]:
    """What a direct run stores of its request, so that ``kiln rerun`` can run it again
    the same way: the options (the working directory made absolute), the output path. The
    values of ``env`` are not kept (they may hold secrets): only their names."""
    data = request.to_json()
    options = dict(data["options"])
    env = options.pop("env", None)
    options["cwd"] = str(request.run_cwd_resolved)
    data["options"] = options
    data["notebook"] = request.notebook_label
    if env:
        data["env_names"] = sorted(env)
    return data
