"""Prometheus metrics of the server, in a registry of its own (no process-wide state).

Exposed at ``GET /metrics`` (text format 0.0.4):

* ``learnloop_rpc_requests_total{method, outcome}`` and
  ``learnloop_rpc_request_seconds{method}`` (latency histogram) per JSON-RPC call;
* ``learnloop_http_rejected_total{reason}``: bodies refused before dispatch
  (unauthorized, too large, bad JSON);
* ``learnloop_episodes_ingested_total`` and ``learnloop_steps_ingested_total``;
* read from the store at scrape time: ``learnloop_jobs{status}``, and for running
  jobs ``learnloop_job_iteration{job_id, type}``,
  ``learnloop_job_best_score{job_id, type}`` and ``learnloop_job_reward{job_id, type}``
  (the latest mean episode return or bandit reward).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from learnloop.jobs.model import JobStatus, JobStore

__all__ = ["ServerMetrics"]

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    10.0)
_REWARD_KEYS = ("rollout/episode_return_mean", "bandit/reward_mean")


def _require() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError(
            f"the server needs the 'server' extra: pip install 'learnloop[server]' ({exc})"
        ) from exc
    return prometheus_client


class _JobsCollector:
    """Reads job counts and running jobs' progress from the store at scrape time."""

    def __init__(self, jobs: JobStore, *, cache_s: float = 1.0) -> None:
        self._jobs = jobs
        self._cache_s = cache_s
        self._cached: tuple[float, list[Any]] | None = None

    def describe(self) -> list[Any]:
        # Without describe(), registering calls collect() once and would fill the cache
        # with the jobs of the server's first second.
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self._cache_s:
            yield from self._cached[1]
            return
        families: list[Any] = []
        try:
            counts = self._jobs.count_by_status()
            running = self._jobs.list_jobs(status=JobStatus.RUNNING)
        except Exception:  # a scrape must never crash the server
            logger.exception("could not read jobs for /metrics")
            return
        by_status = GaugeMetricFamily("learnloop_jobs", "Jobs by status", labels=["status"])
        for status, count in counts.items():
            by_status.add_metric([status.value], count)
        families.append(by_status)
        iteration = GaugeMetricFamily("learnloop_job_iteration",
                                      "Iterations done by each running job",
                                      labels=["job_id", "type"])
        best = GaugeMetricFamily("learnloop_job_best_score",
                                 "Best held-out score of each running job",
                                 labels=["job_id", "type"])
        reward = GaugeMetricFamily("learnloop_job_reward",
                                   "Latest mean training reward of each running job",
                                   labels=["job_id", "type"])
        for job in running:
            labels = [job.id, job.type]
            iteration.add_metric(labels, job.iteration)
            if job.best_score is not None:
                best.add_metric(labels, job.best_score)
            for key in _REWARD_KEYS:
                value = job.latest_metrics.get(key)
                if isinstance(value, (int, float)):
                    reward.add_metric(labels, float(value))
                    break
        families += [iteration, best, reward]
        self._cached = (now, families)
        yield from families


class ServerMetrics:
    """The server's counters and histograms, plus the store-backed job gauges."""

    def __init__(self, jobs: JobStore) -> None:
        prometheus = _require()
        self.registry = prometheus.CollectorRegistry(auto_describe=True)
        self.requests = prometheus.Counter(
            "learnloop_rpc_requests", "JSON-RPC calls by method and outcome",
            ["method", "outcome"], registry=self.registry,
        )
        self.latency = prometheus.Histogram(
            "learnloop_rpc_request_seconds", "Time to answer a JSON-RPC call",
            ["method"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.rejected = prometheus.Counter(
            "learnloop_http_rejected", "HTTP bodies refused before dispatch",
            ["reason"], registry=self.registry,
        )
        self.episodes = prometheus.Counter(
            "learnloop_episodes_ingested", "Episodes stored through episodes.record",
            registry=self.registry,
        )
        self.steps = prometheus.Counter(
            "learnloop_steps_ingested", "Steps stored through episodes.record",
            registry=self.registry,
        )
        self.registry.register(_JobsCollector(jobs))

    def observe(self, method: str, outcome: str, seconds: float) -> None:
        """Count one call (``outcome``: ``ok`` or the error code) and its latency."""
        self.requests.labels(method, outcome).inc()
        self.latency.labels(method).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        prometheus = _require()
        return prometheus.generate_latest(self.registry), prometheus.CONTENT_TYPE_LATEST
