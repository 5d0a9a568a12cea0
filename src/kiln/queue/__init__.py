"""The durable run queue: submit a run now, a worker runs it through the one runner later.

::

    run = submit(RunRequest.build("report.ipynb", parameters={"region": "EU"}))
    run.state                              # 'queued': committed before anyone is told the id
    await Worker(concurrency=2).run()      # claims, runs, renews leases, drains on SIGTERM

Submission validates everything a run would (notebook, parameters, kernel, engine) and stores
the request (``RunRequest.to_json``) on the row and the notebook's bytes once per content, so
the worker runs exactly what was submitted, even if the file changed since. The queue itself
is the runs table (:mod:`kiln.store.queue`). ``kiln run --queue``, ``kiln worker``, ``kiln
queue`` and the server (later the scheduler) all use this module.
"""

from __future__ import annotations

from kiln.queue.submit import submit
from kiln.queue.worker import Worker

__all__ = ["Worker", "submit"]
