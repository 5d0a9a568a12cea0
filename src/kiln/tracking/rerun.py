"""``kiln rerun ID``: run a recorded run again, exactly, and say what changed.

The rerun executes the run's stored input copy (the exact bytes that ran) with the same
parameters and options; overrides are allowed and recorded with the new run (``origin``:
``{rerun_of, overrides}``). Before it runs, :func:`plan_rerun` says what differs from the
original: packages added, removed or changed in the environment that will run it, input files
whose content hash changed, the git commit and working-tree state, a notebook file edited
since. After it, :func:`rerun_report` puts the two runs side by side on one screen: states,
records (with numeric deltas) and outputs, compared with ``kiln verify``'s normalisation, down
to the first diverging cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import StoreError
from kiln.options import make_options
from kiln.provenance import Environment, environment_of, git_state, hash_file, package_changes
from kiln.request import RunRequest, prepare
from kiln.store.records import Run

if TYPE_CHECKING:
    from kiln.store.sql import RunStore
    from kiln.testing.compare import Comparison
    from kiln.tracking.compare import RunComparison


@dataclass
class RerunPlan:
    """The request that reruns ``original``, and what differs from when it first ran."""

    original: Run
    request: RunRequest
    #: parameter values given anew (as the notebook's schema typed them)
    overrides: dict[str, Any]
    #: packages of the environment that will run it against the original's (None: unknown)
    packages: dict[str, list[Any]] | None
    #: ``[{path, before, now}]``: declared inputs whose content hash is not what it was
    inputs: list[dict[str, Any]]
    #: ``{before, now}`` git states when they differ (commit, dirty, diff)
    git: dict[str, Any] | None
    #: other things to know (the notebook file changed since, env values not kept, ...)
    notes: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        """Nothing recorded differs (packages, inputs, git)."""
        changed = self.packages and any(self.packages.values())
        return not changed and not self.inputs and self.git is None

    def to_json(self) -> dict[str, Any]:
        return {
            "rerun_of": self.original.id,
            "overrides": self.overrides,
            "packages": self.packages,
            "inputs": self.inputs,
            "git": self.git,
            "notes": self.notes,
        }


def plan_rerun(
    store: RunStore,
    key: str,
    *,
    parameters: Mapping[str, Any] | None = None,
    **options: Any,  # Any: run options given anew (tags are added to the original's)
) -> RerunPlan:
    """The rerun of run ``key`` (id, prefix or ``last``) with ``parameters`` overriding its
    own, validated (nothing runs), and what differs from the original."""
    from kiln.sweeps.plan import SWEEP_TAG

    original = store.get_run(key)
    if not original.input_path:
        raise StoreError(f"run {original.id} has no stored input copy: it cannot be rerun")
    from kiln.store.artifacts import read_bytes

    try:
        source = read_bytes(original.input_path)  # a file, or an object of the artefact store
    except OSError as exc:
        raise StoreError(
            f"the input copy of run {original.id} is gone ({original.input_path}: "
            f"{exc.strerror or exc}); was it pruned?"
        ) from None
    notes: list[str] = []
    stored = dict((original.request or {}).get("options") or {})
    stored.pop("env", None)  # a queued run keeps them; a direct run only their names
    env_names = (original.request or {}).get("env_names") or []
    if env_names:
        notes.append(
            f"the original run had environment variables ({', '.join(env_names)}) whose values "
            "are not stored; give them again with --env"
        )
    if not stored and original.kernel_name:
        stored["kernel"] = original.kernel_name
    given_tags = dict(options.pop("tags", None) or {})
    merged = make_options(stored)
    merged.update(make_options(options))
    # the original's own tags; not its trigger's (a sweep, a build, the server's user): the
    # rerun's trigger is whoever reruns it
    tags = {k: v for k, v in original.tags.items() if k != SWEEP_TAG and not k.startswith("kiln.")}
    merged["tags"] = {**tags, **given_tags}
    cwd = merged.get("cwd")
    if cwd is not None and not Path(cwd).is_dir():
        notes.append(f"the original working directory {cwd} is gone: running in {Path.cwd()}")
        merged.pop("cwd")
    overrides = dict(parameters or {})
    request = RunRequest(
        notebook=Path(original.notebook_path),
        parameters={**original.parameters, **overrides},
        source=source,
        **merged,
    )
    prepared = prepare(request)  # refused now, before anything is said or run
    typed = {name: prepared.values.get(name) for name in overrides}
    request = replace(request, origin={"rerun_of": original.id, "overrides": typed})
    notebook = Path(original.notebook_path)
    if notebook.is_file() and hash_file(notebook).sha256 != original.notebook_sha256:
        notes.append(
            f"{notebook} has changed since the run; the rerun runs the stored copy (what ran then)"
        )
    return RerunPlan(
        original=original,
        request=request,
        overrides=typed,
        packages=_packages(store, original, prepared),
        inputs=_changed_inputs(original),
        git=_git_change(original, request, store.home),
        notes=notes,
    )


def _packages(store: RunStore, original: Run, prepared: Any) -> dict[str, list[Any]] | None:
    from kiln.capture import _kernel_executable
    from kiln.store.environments import get_environments

    before = get_environments(store, [original.environment_hash]).get(
        original.environment_hash or ""
    )
    if before is None:
        return None
    now: Environment = environment_of(
        _kernel_executable(prepared, prepared.engine_name), language=prepared.language
    )
    changes = package_changes(before.package_map, now.package_map)
    if before.version != now.version:
        changes["changed"].insert(0, ["python", before.version, now.version])
    return changes


def _changed_inputs(original: Run) -> list[dict[str, Any]]:
    changed = []
    for item in original.inputs:
        now = hash_file(str(item["path"]))
        if now.sha256 != item.get("sha256"):
            changed.append(
                {
                    "path": item["path"],
                    "before": item.get("sha256"),
                    "now": now.sha256,
                    "error": now.error,
                }
            )
    return changed


def _git_change(original: Run, request: RunRequest, home: Path) -> dict[str, Any] | None:
    from kiln.capture import _notebook_folder

    state = git_state(_notebook_folder(request), exclude=home)
    now = state.to_json() if state is not None else None
    before = original.git
    keys = ("commit", "dirty", "diff_sha256")
    if before is None and now is None:
        return None
    if before is not None and now is not None and all(before.get(k) == now.get(k) for k in keys):
        return None
    return {"before": before, "now": now}


# -- after the run ------------------------------------------------------------------------------


@dataclass
class RerunReport:
    """The rerun next to its original."""

    original: Run
    rerun: Run
    comparison: RunComparison
    #: the output notebooks compared with kiln verify's normalisation (None: one is missing)
    outputs: Comparison | None
    outputs_note: str | None = None

    @property
    def records_same(self) -> bool:
        return all(row.same for row in self.comparison.section("records"))

    def to_json(self) -> dict[str, Any]:
        records = {row.name: row.to_json() for row in self.comparison.section("records")}
        return {
            "original": self.original.id,
            "rerun": self.rerun.id,
            "states": [self.original.state.value, self.rerun.state.value],
            "records_same": self.records_same,
            "records": records,
            "outputs": self.outputs.to_json() if self.outputs is not None else None,
            "outputs_note": self.outputs_note,
        }


def rerun_report(store: RunStore, original: Run, new: Run) -> RerunReport:
    """Compare the rerun with the original: records and outputs (verify's normalisation)."""
    from kiln.store.environments import get_environments
    from kiln.testing.compare import compare_notebooks
    from kiln.testing.config import verify_settings
    from kiln.testing.normalize import Normalizer
    from kiln.tracking.compare import compare_runs

    envs = get_environments(store, [original.environment_hash, new.environment_hash])
    comparison = compare_runs([original, new], envs)
    outputs = None
    note = None
    from kiln.store.artifacts import exists, local_copy

    paths = [str(r.output_path) if r.output_path else None for r in (original, new)]
    missing = [p for p in paths if p is None or not exists(p)]
    if missing:
        note = f"output notebook {missing[0]} is missing: outputs not compared"
    else:
        settings = verify_settings(original.notebook_path)
        normalizer = Normalizer.build(
            settings.ignore, strict_images=settings.strict_images, source=settings.source
        )
        reached = (new.error or {}).get("cell_index") if not new.state.ok else None
        # outputs in the artefact store are compared from local copies
        with local_copy(str(paths[0])) as old, local_copy(str(paths[1])) as fresh:
            outputs = compare_notebooks(
                str(old), str(fresh), normalizer=normalizer, reached=reached
            )
    return RerunReport(original, new, comparison, outputs, note)
