"""What a running job sees: :class:`JobContext` (progress, spend, stop requests).

A runner calls :meth:`JobContext.report` once per iteration. The context writes
the iteration's metrics and the job's progress to the store, charges what the
job spent to the job and to its owner's monthly ledger, and answers with a
:class:`StopRequest` when the job must stop at this boundary:

* ``pause`` (someone paused it) and ``budget`` (a budget ran out) and
  ``shutdown`` (its worker is shutting down): save a checkpoint and return;
* ``cancel``: return at once, keeping what was already saved.

A heartbeat thread of the worker calls :meth:`JobContext.heartbeat` between
iterations too, so requests and a dead worker are noticed even when iterations
are long.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from learnloop.errors import JobError
from learnloop.jobs.budget import BudgetPolicy, Spend, exceeded
from learnloop.jobs.model import Job, JobStore, Request
from learnloop.store.base import Store

__all__ = ["JobContext", "JobStopped", "StopKind", "StopRequest", "json_safe"]

logger = logging.getLogger(__name__)


class StopKind(StrEnum):
    """Why a running job must stop at this iteration boundary."""

    PAUSE = "pause"
    CANCEL = "cancel"
    BUDGET = "budget"
    SHUTDOWN = "shutdown"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class StopRequest:
    """A stop the runner must carry out, with the reason in words."""

    kind: StopKind
    reason: str

    @property
    def keeps_checkpoint(self) -> bool:
        """True if the runner should write a checkpoint before it stops."""
        return self.kind in (StopKind.PAUSE, StopKind.BUDGET, StopKind.SHUTDOWN)


class JobStopped(Exception):
    """Raised inside a runner to unwind at once (cancel); carries the request."""

    def __init__(self, request: StopRequest) -> None:
        super().__init__(request.reason)
        self.request = request


def json_safe(value: Any) -> Any:
    """A JSON-storable copy: NaN and infinities become None, tuples lists, keys strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return json_safe(value.item())
    return str(value)


class JobContext:
    """The running job's link to the store; thread-safe.

    Args:
        jobs: the job store.
        job: the job as claimed.
        worker_id: the claiming worker.
        episodes: where the job records its episodes.
        budgets: owners' allowances and model prices.
        shutdown: set when the worker must stop (the job is requeued).
        clock: monotonic seconds, for wall time.
    """

    def __init__(
        self,
        jobs: JobStore,
        job: Job,
        worker_id: str,
        *,
        episodes: Store,
        budgets: BudgetPolicy = BudgetPolicy(),
        shutdown: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jobs = jobs
        self.job = job
        self.worker_id = worker_id
        self.episodes = episodes
        self.budgets = budgets
        self._shutdown = shutdown or threading.Event()
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._base = job.spend  # spent by earlier attempts
        self._cost = 0.0
        self._tokens_in = 0
        self._tokens_out = 0
        self._rollouts = 0
        self._charged = 0.0  # of self._cost, already on the owner's ledger
        self._requested: Request | None = job.requested
        self._owner_spent: float | None = None
        self._lost: str | None = None

    @property
    def output_dir(self) -> Path:
        """The job's folder (created on first use)."""
        path = Path(self.job.output_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def config(self) -> Mapping[str, Any]:
        return self.job.config

    # --- spend ------------------------------------------------------------------------

    def charge_tokens(self, model: str, *, tokens_in: int, tokens_out: int) -> float:
        """Count an LLM call's tokens; returns its cost in dollars (from the price table)."""
        cost = self.budgets.prices.cost(model, tokens_in=tokens_in, tokens_out=tokens_out)
        with self._lock:
            self._cost += cost
            self._tokens_in += tokens_in
            self._tokens_out += tokens_out
        return cost

    def add_rollouts(self, count: int) -> None:
        """Count ``count`` more episodes played."""
        with self._lock:
            self._rollouts += int(count)

    def spend(self) -> Spend:
        """What the job has spent so far, over all its attempts."""
        with self._lock:
            return self._base.plus(
                Spend(
                    cost_usd=self._cost,
                    tokens_in=self._tokens_in,
                    tokens_out=self._tokens_out,
                    wall_s=self._clock() - self._started,
                    rollouts=self._rollouts,
                )
            )

    def settle(self) -> None:
        """Put the dollars spent since the last call on the owner's monthly ledger."""
        with self._lock:
            delta = self._cost - self._charged
            self._charged = self._cost
        if delta > 0:
            self._owner_spent = self.jobs.charge_owner(self.job.owner, delta)
        elif self._owner_spent is None:
            self._owner_spent = self.jobs.owner_spent(self.job.owner)

    # --- progress and stops -----------------------------------------------------------

    def report(
        self,
        iteration: int,
        metrics: Mapping[str, Any],
        *,
        score: float | None = None,
        checkpoint: Mapping[str, Any] | None = None,
        total_iterations: int | None = None,
    ) -> StopRequest | None:
        """Store one finished iteration; returns a stop the runner must carry out, or None."""
        self.settle()
        try:
            job = self.jobs.record_iteration(
                self.job.id,
                self.worker_id,
                iteration=iteration,
                metrics=json_safe(metrics),
                score=score if score is None or math.isfinite(score) else None,
                checkpoint=json_safe(checkpoint) if checkpoint else None,
                total_iterations=total_iterations,
                spend=self.spend(),
            )
        except JobError as exc:
            self._lost = str(exc)
        else:
            with self._lock:
                self._requested = job.requested
        return self.stop_request()

    def heartbeat(self) -> None:
        """Tell the store the worker is alive, save the spend, pick up requests."""
        if self._lost is not None:
            return
        self.settle()
        try:
            job = self.jobs.heartbeat(
                self.job.id, self.worker_id, spend=self.spend().to_dict()
            )
        except JobError as exc:
            self._lost = str(exc)
            logger.warning("job %s: %s", self.job.id, exc)
            return
        with self._lock:
            self._requested = job.requested

    def stop_request(self) -> StopRequest | None:
        """The stop the job must carry out now, if any (cancel first, then budget...)."""
        if self._lost is not None:
            return StopRequest(StopKind.LOST, self._lost)
        with self._lock:
            requested = self._requested
        if requested is Request.CANCEL:
            return StopRequest(StopKind.CANCEL, "cancelled on request")
        reason = exceeded(self.spend(), self.job.budget)
        if reason is not None:
            return StopRequest(StopKind.BUDGET, reason)
        limit = self.budgets.limit_for(self.job.owner)
        if self._owner_spent is not None and self._owner_spent > limit:
            return StopRequest(
                StopKind.BUDGET,
                f"owner {self.job.owner!r} has spent ${self._owner_spent:.4f} this month, over "
                f"the monthly budget of ${limit:.2f}",
            )
        if requested is Request.PAUSE:
            return StopRequest(StopKind.PAUSE, "paused on request")
        if self._shutdown.is_set():
            return StopRequest(StopKind.SHUTDOWN, "its worker shut down")
        return None
