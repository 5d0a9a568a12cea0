"""Sweeps and batches: one notebook, many parameter sets, N runs at a time.

::

    grid  (name -> list of values: their cartesian product; or a list of sets)
      -> parameter_sets() / load_grid()        the sets, in a stable order
      -> plan_sweep(request, sets, output=)    every set validated (the runner's ``prepare``);
                                               one bad set refuses the whole sweep, naming it
      -> arun_sweep(plan, runner=, jobs=N)     each set a normal recorded run, N at a time in
                                               one event loop (one Runner: warm engines shared)
      -> SweepResult                           items in set order: the Run, or why none exists

One failed run does not stop the others. SIGINT/SIGTERM cancel every running run (each is
recorded ``cancelled``); the sets not started yet are never run and never recorded. The
command line is ``kiln run NB --sweep grid.yaml -j N``; the Python API is :func:`kiln.sweep`.

The package is ``kiln.sweeps`` (plural) on purpose: a submodule named ``kiln.sweep`` would
replace the function ``kiln.sweep`` on the package as soon as it was imported.
"""

from kiln.sweeps.execute import (
    SetDone,
    SetEvent,
    SweepEvent,
    SweepObserver,
    SweepResult,
    arun_sweep,
    plan_and_run_sweep,
    run_sweep,
)
from kiln.sweeps.plan import (
    MAX_SETS,
    ParameterSet,
    SweepItem,
    SweepPlan,
    load_grid,
    parameter_sets,
    plan_sweep,
)

__all__ = [
    "MAX_SETS",
    "ParameterSet",
    "SetDone",
    "SetEvent",
    "SweepEvent",
    "SweepItem",
    "SweepObserver",
    "SweepPlan",
    "SweepResult",
    "arun_sweep",
    "load_grid",
    "parameter_sets",
    "plan_and_run_sweep",
    "plan_sweep",
    "run_sweep",
]
