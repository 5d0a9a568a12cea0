"""The queue takes only what was submitted to it."""

from __future__ import annotations

import os
from collections.abc import Callable

from kiln.store import RunStore
from kiln.store import queue as runs_queue
from kiln.store.records import Run


def test_a_direct_runs_queued_row_is_never_claimed(
    store: RunStore, make_run: Callable[..., Run]
) -> None:
    # `kiln run` and endpoint calls commit their row `queued` while the engine starts; a
    # worker that claimed it would end it `failed` under the running run (regression)
    direct = make_run(state="queued")
    request = {"notebook": "nb.ipynb", "options": {}}
    # a direct run keeps its request for kiln rerun; its owner marks it as not the queue's
    rerunnable = make_run(state="queued", request=request, owner_pid=os.getpid())
    submitted = make_run(state="queued", request=request)
    claimed = runs_queue.claim(store, "w1", lease=30)
    assert claimed is not None and claimed.id == submitted.id
    assert runs_queue.claim(store, "w1", lease=30) is None
    assert store.get_run_exact(direct.id).state == "queued"
    assert store.get_run_exact(rerunnable.id).state == "queued"
