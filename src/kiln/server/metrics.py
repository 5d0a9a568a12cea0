"""``/metrics`` in Prometheus' format (prometheus-client), read from the history when scraped.

Runs are executed by worker processes, so what they did is read from the store at scrape
time: runs by state and notebook, queue depth and busy workers as gauges; the durations of
runs that ended since the server started feed a histogram as the scrapes find them. Endpoint
calls happen in the API process and are observed as they end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kiln.store import pages

if TYPE_CHECKING:
    from kiln.store.sql import RunStore

#: run durations: a trivial notebook on the fork engine (10 ms) to a long report (hours)
RUN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)
#: endpoint latency: the fork floor is ~10 ms
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ENDPOINT_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The server's registry; ``workers`` tells how many worker processes are alive."""

    def __init__(self, store: RunStore, workers: Callable[[], tuple[int, int]] | None = None):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.store = store
        self.workers = workers
        self.registry = CollectorRegistry()
        self.endpoint_latency = Histogram(
            "kiln_endpoint_latency_seconds",
            "time to answer a notebook endpoint call, by endpoint and HTTP status",
            ["endpoint", "status"],
            buckets=ENDPOINT_BUCKETS,
            registry=self.registry,
        )
        self.run_duration = Histogram(
            "kiln_run_duration_seconds",
            "duration of runs that ended since the server started, by notebook and state",
            ["notebook", "state"],
            buckets=RUN_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "kiln_http_requests",
            "HTTP requests answered, by method and status class",
            ["method", "status"],
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(self))
        self._since = datetime.now(timezone.utc)
        self._seen_at_mark: set[str] = set()
        self._lock = threading.Lock()

    def answered(self, method: str, status: int) -> None:
        """Count one HTTP answer. Labels stay few whatever clients send: methods outside
        the standard ones count as ``other``, statuses by class (``2xx``)."""
        shown = method if method in _METHODS else "other"
        self.requests.labels(shown, f"{status // 100}xx" if status else "none").inc()

    def follow_ended_runs(self) -> None:
        """Observe the durations of runs that ended since the last scrape."""
        with self._lock:
            ended = pages.ended_since(self.store, self._since)
            for run_id, state, notebook, duration, when in ended:
                if run_id in self._seen_at_mark and when == self._since:
                    continue
                if duration is not None:
                    self.run_duration.labels(notebook, state).observe(max(duration, 0.0))
                if when > self._since:
                    self._since, self._seen_at_mark = when, set()
                self._seen_at_mark.add(run_id)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.follow_ended_runs()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _StoreCollector:
    """Gauges read from the history at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # collected on demand only: no read at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        store = self.metrics.store
        runs = GaugeMetricFamily(
            "kiln_runs", "runs in the history, by state and notebook", labels=["state", "notebook"]
        )
        queued = running = 0
        for state, notebook, count in pages.counts_by_state_and_notebook(store):
            runs.add_metric([state, notebook], count)
            if state == "queued":
                queued += count
            elif state == "running":
                running += count
        yield runs
        yield GaugeMetricFamily("kiln_queue_depth", "runs waiting in the queue", value=queued)
        yield GaugeMetricFamily("kiln_runs_running", "runs running now", value=running)
        yield GaugeMetricFamily(
            "kiln_workers_busy",
            "workers running at least one run",
            value=pages.busy_workers(store),
        )
        if self.metrics.workers is not None:
            alive, wanted = self.metrics.workers()
            yield GaugeMetricFamily(
                "kiln_workers", "worker processes alive under this server", value=alive
            )
            yield GaugeMetricFamily(
                "kiln_workers_wanted", "worker processes this server keeps", value=wanted
            )
