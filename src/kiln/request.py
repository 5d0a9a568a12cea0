"""What defines a run, and its validation before anything starts.

:class:`RunRequest` is what every trigger builds (CLI, API, sweeps, later the server and
schedules); :func:`prepare` checks it (notebook, parameters, kernel, engine, lint gate)
without starting anything and returns a :class:`Prepared` the runner executes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.notebook import read_bytes, sha256_bytes
from kiln.notebook.marks import remove_marks
from kiln.options import OPTION_NAMES, OptionError, RunOptions, make_options

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from kiln.parameters.schema import ParameterSchema
    from kiln.redact import Redactor


@dataclass(frozen=True, kw_only=True)
class RunRequest(RunOptions):
    """One run: a notebook, its parameters, where its output goes, and the run options.

    Build it with :meth:`build` (which applies the environment's and the project file's
    defaults and converts text such as ``"10m"``), or directly with typed values."""

    #: the notebook file to run (never modified)
    notebook: Path
    #: parameter values: plain data, or ``CliValue`` text to be coerced by the schema (Any:
    #: a value is any JSON-like data until the notebook's schema types it)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    #: where to write the output notebook (default: ``$KILN_HOME/runs/<id>/output.ipynb``)
    output: Path | None = None
    #: the notebook's bytes when they do not come from the file ``notebook`` (standard input,
    #: a URL, a queued run's stored copy); ``notebook`` then only names them
    source: bytes | None = None
    #: the pipeline build this run is a task of (recorded on the run, linking it to the build)
    build_id: str | None = None
    #: where the run comes from beyond its trigger, recorded with it (``kiln rerun``:
    #: ``{"rerun_of": id, "overrides": {...}}``)
    origin: Mapping[str, Any] | None = None
    #: the account that asked for the run (a server's caller), recorded with it
    submitted_by: str | None = None
    #: parameters whose values are secrets, by where they are read when the run starts
    #: (``{"api_key": "env:SALES_API_KEY"}``): the run gets the values; the history, the
    #: output notebook, the log and reports show ``***``
    secrets: Mapping[str, str] | None = None

    @functools.cached_property
    def notebook_label(self) -> str:
        """The notebook as recorded: its absolute path, or its name when ``source`` is given
        (``<stdin>``, a URL)."""
        if self.source is not None:
            return str(self.notebook)
        return str(Path(self.notebook).resolve())

    @functools.cached_property
    def run_cwd(self) -> Path:
        """Where the run executes: ``cwd``, else the notebook's folder (the working directory
        for a notebook given as ``source``)."""
        if self.cwd is not None:
            return Path(self.cwd)
        if self.source is not None:
            return Path.cwd()
        return Path(self.notebook_label).parent  # resolved once, for the label

    @property
    def run_cwd_resolved(self) -> Path:
        """:attr:`run_cwd` with symbolic links resolved (the notebook's folder is already)."""
        if self.cwd is None and self.source is None:
            return self.run_cwd
        return self.run_cwd.resolve()

    def to_json(self) -> dict[str, Any]:
        """What a queued run stores to be run later, elsewhere (not the notebook's bytes,
        kept once per content, nor the parameters, kept on the run row)."""
        options = {}
        for name in OPTION_NAMES:
            value = getattr(self, name)
            if value != RunOptions.__dataclass_fields__[name].default:
                options[name] = str(value) if isinstance(value, Path) else value
        data: dict[str, Any] = {
            "notebook": str(self.notebook),
            "output": str(self.output) if self.output is not None else None,
            "options": options,
        }
        if self.secrets:
            data["secrets"] = dict(self.secrets)  # where the values are read, never them
        return data

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], *, parameters: Mapping[str, Any], source: bytes | None
    ) -> RunRequest:
        """The request :meth:`to_json` stored (options checked again, as every request's)."""
        output = data.get("output")
        secrets = data.get("secrets")
        return cls(
            secrets=dict(secrets) if secrets else None,
            notebook=Path(str(data["notebook"])),
            parameters=dict(parameters),
            output=Path(output) if output else None,
            source=source,
            **make_options(dict(data.get("options") or {})),
        )

    @classmethod
    def build(
        cls,
        notebook: str | os.PathLike[str],
        *,
        parameters: Mapping[str, Any] | None = None,
        output: str | os.PathLike[str] | None = None,
        source: bytes | None = None,
        defaults: Mapping[str, Any] | None = None,
        **options: Any,  # Any: options as given (text or typed); make_options checks each
    ) -> RunRequest:
        """A request from loosely typed options (``timeout="10m"``, ``cwd="data"``).

        Precedence: ``options`` (flags, API arguments) over ``KILN_*`` environment variables
        over the ``run`` section of the ``kiln.yaml`` that governs the notebook. ``defaults``
        replaces the last two (callers that resolved them already). Raises
        :class:`kiln.options.OptionError` naming a bad option.
        """
        path = Path(notebook)
        if defaults is None:
            from kiln.project import find_project_file

            found = find_project_file(path.parent if source is None else Path.cwd())
            if found is None:  # the environment's alone (no file to read)
                from kiln.options import environment_defaults

                defaults = environment_defaults(os.environ)
            else:
                from kiln.project.file import project_at, run_defaults

                defaults = run_defaults(project_at(found))
        values = dict(defaults)
        given = make_options(options)
        if given.get("tags") is not None or values.get("tags") is not None:
            # tags add up: kiln.yaml's and KILN_TAGS, then the run's own (which win per key)
            given["tags"] = {**(values.get("tags") or {}), **(given.get("tags") or {})}
        values.update(given)
        return cls(
            notebook=path,
            parameters=dict(parameters or {}),
            output=Path(output) if output is not None else None,
            source=source,
            **values,
        )


@dataclass(kw_only=True)
class Prepared:
    """A validated request: everything decided about it before anything starts.

    The notebook's JSON, parameters and kernel are checked first (cheap: no nbformat), so the
    kernel can be launched at once; :meth:`complete` then does the full nbformat upgrade,
    validation and injection while the kernel boots.
    """

    request: RunRequest
    source_bytes: bytes
    sha256: str
    #: the notebook's JSON as read (nbformat 4; an older notebook is upgraded in ``notebook``)
    raw: dict[str, Any]
    schema: ParameterSchema
    values: dict[str, Any]
    kernel_name: str
    language: str
    warnings: list[str]
    engine_name: str = "kernel"
    imports: tuple[str, ...] = ()
    #: the notebook to execute, once :meth:`complete` has built it
    notebook: NotebookNode | None = None
    #: the parameters whose values are secrets (``request.secrets``)
    secret_names: tuple[str, ...] = ()
    #: masks their values (and secret formats) in what the run writes; None without secrets
    redactor: Redactor | None = None

    @property
    def public_values(self) -> dict[str, Any]:
        """The parameter values as recorded and shown: secrets as ``***``."""
        if not self.secret_names:
            return self.values
        from kiln.redact import MASK

        return {k: MASK if k in self.secret_names else v for k, v in self.values.items()}

    def complete(self) -> NotebookNode:
        """The notebook to execute: upgraded, validated, parameters injected, old marks gone."""
        if self.notebook is None:
            from kiln.notebook.io import to_v4
            from kiln.parameters import inject_parameters

            parsed = _PARSED.get(self.sha256)
            valid = parsed is not None and parsed.valid
            nb = to_v4(self.raw, path=str(self.request.notebook), validate=not valid)
            if parsed is not None:
                parsed.valid = True
            if self.values:  # like papermill: no values, no injected cell (an old one stays)
                nb = inject_parameters(  # nb is this run's own: no copy needed
                    nb, self.values, schema=self.schema, language=self.language, in_place=True
                ).notebook
            remove_marks(nb)
            self.notebook = nb
        return self.notebook


def prepare(request: RunRequest, *, engine_name: str | None = None) -> Prepared:
    """Validate a request without starting anything: raises NotebookError/ParameterError/...

    For nbformat 4 the schema is read from the raw JSON; the full nbformat validation waits
    for :meth:`Prepared.complete` (which the runner calls while the kernel boots).
    """
    from kiln.notebook.io import load_json, to_v4
    from kiln.parameters import infer_schema, resolve_parameters

    path = str(request.notebook)
    if request.output is not None and _same_file(request.output, request.notebook):
        raise OptionError(
            "output",
            f"{request.output} is the input notebook; Kiln never overwrites its input: choose "
            "another output path",
        )
    data = request.source if request.source is not None else read_bytes(request.notebook)
    sha = sha256_bytes(data)
    parsed = _PARSED.get(sha)
    if parsed is None or request.lint:
        raw = load_json(data, path=path)
        nb = to_v4(raw, path=path) if raw["nbformat"] != 4 or request.lint else None
        if nb is not None and request.lint:
            _lint_gate(nb, path)
        view = nb if nb is not None else raw
        schema = infer_schema(view, notebook=path)
        if nb is None:
            _remember(sha, _Parsed(raw, schema))
    else:  # the same bytes again (a sweep, a schedule): parsed and checked already
        raw, schema, nb, view = parsed.raw, parsed.schema, None, parsed.raw
    warnings: list[str] = []
    given = request.parameters
    secret_names: tuple[str, ...] = ()
    if request.secrets:
        from kiln.redact import secret_values

        # read now, before anything starts: a missing source fails the run here, named
        read = secret_values(request.secrets)
        given = {**given, **read}
        secret_names = tuple(read)
    values = resolve_parameters(
        schema,
        given,
        allow_unknown=request.allow_unknown,
        notebook=path,
        notices=warnings,
    )
    meta = view.get("metadata", {})
    kernel_name = request.kernel or meta.get("kernelspec", {}).get("name") or "python3"
    imports: list[str] = []
    if engine_name is None:
        from kiln.engines import choose_engine
        from kiln.engines.imports import notebook_imports
        from kiln.engines.kernel import kernel_spec

        spec = kernel_spec(kernel_name)
        language = str(spec.language or "python").lower()
        found = _SOURCES.get(sha)
        if found is None:  # the same notebook again (a sweep, a pipeline): read once
            cells = view.get("cells", [])
            found = _SOURCES[sha] = (
                tuple(notebook_imports(cells)),
                tuple("".join(c.get("source", "")) for c in cells if c.get("cell_type") == "code"),
            )
            if len(_SOURCES) > 32:
                _SOURCES.pop(next(iter(_SOURCES)))
        imports, sources = list(found[0]), list(found[1])
        engine_name, notice = choose_engine(
            request.engine, spec, imports, sources=sources, memory_limit=request.memory_limit
        )
        if notice:
            warnings.append(notice)
    else:
        language = schema.language or "python"
    language = (request.language or language).lower()
    if values:
        from kiln.parameters import get_translator

        get_translator(language)  # refuse a language without a translator now
    if values and schema.cell_index is None:
        warnings.append(
            f"{path} has no cell tagged 'parameters': the parameters were injected at the top"
        )
    # parameters annotated Secret in the notebook (`api_key: Secret`) are masked like those
    # read from a secret source
    declared = [p.name for p in schema if p.secret and p.name in values]
    if declared:
        secret_names = tuple(dict.fromkeys([*secret_names, *declared]))
    prepared = Prepared(
        request=request,
        source_bytes=data,
        sha256=sha,
        raw=raw,
        schema=schema,
        values=values,
        kernel_name=kernel_name,
        language=language,
        warnings=warnings,
        engine_name=engine_name,
        imports=tuple(imports),
        secret_names=secret_names,
    )
    if secret_names:
        from kiln.redact import Redactor

        prepared.redactor = Redactor(values[name] for name in secret_names)
    if nb is not None:
        prepared.complete()
    return prepared


@dataclass
class _Parsed:
    """What prepare learnt from one notebook's bytes (valid: passed nbformat validation)."""

    raw: dict[str, Any]
    schema: ParameterSchema
    valid: bool = False


#: by sha256 of the notebook bytes; a sweep prepares the same notebook once per set
_PARSED: dict[str, _Parsed] = {}
#: by sha256: the notebook's top-level imports and code sources (what choosing an engine reads)
_SOURCES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def _remember(sha: str, parsed: _Parsed) -> None:
    if len(_PARSED) >= 32:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[sha] = parsed


def _lint_gate(nb: NotebookNode, path: str) -> None:
    from kiln.errors import LintGateFailed
    from kiln.lint import errors_for_run_gate, load_lint_config

    config = load_lint_config(Path(path).resolve().parent)
    errors = errors_for_run_gate(nb, path, config)
    if errors:
        shown = "\n".join(f"  {f.location()}: {f.rule} {f.message}" for f in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise LintGateFailed(
            f"{path} has {len(errors)} lint error(s); not running it (the lint gate is on):\n"
            f"{shown}{more}\n"
            "Fix them, or ignore a rule in kiln.yaml (lint: {ignore: [ID]}).",
            findings=errors,
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
