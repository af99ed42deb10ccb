"""Training jobs as documents: the :class:`Job` record, its statuses, and :class:`JobStore`.

A job is one document in the ``jobs`` collection of any
:class:`~learnloop.store.DocumentStore`, keyed by its id. Every change is a
compare-and-set on that document, so two workers (threads, processes or
machines on one store) never both claim a job: a claim is the CAS from
``queued`` to ``running``.

Statuses and the transitions allowed between them::

    queued ──claim──▶ running ──▶ completed | failed | cancelled | budget_exceeded
      │  ▲              │  │
      │  └──requeue─────┘  └──pause (at an iteration boundary, after a checkpoint)──┐
      ├──pause──▶ paused ◀──────────────────────────────────────────────────────────┘
      │             │ └──resume──▶ queued (continues from the latest checkpoint)
      └──cancel──▶ cancelled ◀── (from paused too)

A pause or cancel of a *running* job is a request (``requested`` in the
document) that the job's worker carries out at the next iteration boundary; the
document stays ``running`` until then. Finished jobs (completed, failed,
cancelled, budget_exceeded) never change again.

Per-iteration metrics live in their own documents (collection ``job_metrics``,
key ``<job id>/<sequence>``) so the status document stays small; the job keeps
only its latest metrics and a bounded list of checkpoints. Owners' monthly
spend is a ledger document per owner and month (collection ``job_spend``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NewType, TypeVar

from learnloop.errors import ConflictError, InvalidInputError, JobError, NotFoundError
from learnloop.jobs.budget import Budget, Spend, month_key
from learnloop.store.base import DocumentStore

__all__ = [
    "FINAL_STATUSES",
    "JOBS",
    "JOB_METRICS",
    "JOB_SPEND",
    "JOB_TYPES",
    "Job",
    "JobId",
    "JobStatus",
    "JobStore",
    "Request",
    "check_transition",
    "new_job_id",
]

logger = logging.getLogger(__name__)

JobId = NewType("JobId", str)

JOBS = "jobs"
JOB_METRICS = "job_metrics"
JOB_SPEND = "job_spend"

#: The job types the server knows (each needs a runner to run).
JOB_TYPES: tuple[str, ...] = ("grpo", "ppo", "apo", "bandit")

#: How many checkpoints a job document lists at most (the newest are kept).
MAX_LISTED_CHECKPOINTS = 20

R = TypeVar("R")


class JobStatus(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXCEEDED = "budget_exceeded"

    @property
    def is_final(self) -> bool:
        """True once the job can never change again."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.BUDGET_EXCEEDED}
)


class Request(StrEnum):
    """What a running job's worker is asked to do at the next iteration boundary."""

    PAUSE = "pause"
    CANCEL = "cancel"


_ALLOWED: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset(
        {
            JobStatus.RUNNING,
            JobStatus.PAUSED,
            JobStatus.CANCELLED,
            JobStatus.BUDGET_EXCEEDED,
            JobStatus.FAILED,
        }
    ),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.QUEUED,
            JobStatus.PAUSED,
            JobStatus.COMPLETED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.BUDGET_EXCEEDED,
        }
    ),
    JobStatus.PAUSED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    **{status: frozenset() for status in FINAL_STATUSES},
}

_FIX: Mapping[JobStatus, str] = {
    JobStatus.QUEUED: "pause, cancel or resume only apply to jobs that can still change",
    JobStatus.RUNNING: "wait for it to stop, or cancel it",
    JobStatus.PAUSED: "resume it first (training.resume)",
    JobStatus.COMPLETED: "start a new job instead",
    JobStatus.FAILED: "start a new job instead (its checkpoints are kept in its output folder)",
    JobStatus.CANCELLED: "start a new job instead",
    JobStatus.BUDGET_EXCEEDED: "start a new job with a larger budget",
}


def check_transition(job_id: str, current: JobStatus, target: JobStatus) -> None:
    """Raise JobError if a job may not go from ``current`` to ``target``."""
    if target not in _ALLOWED[current]:
        raise JobError(
            f"job {job_id} is {current.value} and cannot become {target.value}; "
            f"{_FIX[current]}"
        )


def new_job_id(now: float | None = None) -> JobId:
    """A unique id that sorts by creation time (``job-<ms>-<monotonic ns>-<random>``, hex).

    Ids made by one process within the same millisecond still sort in creation order.
    """
    millis = int((time.time() if now is None else now) * 1000)
    tick = time.monotonic_ns() & 0xFFFFFFFFFFFF
    return JobId(f"job-{millis:012x}-{tick:012x}{secrets.token_hex(2)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One training job, as stored (see the module docstring)."""

    id: JobId
    """Unique id, sortable by creation time."""
    type: str
    """Job type: one of :data:`JOB_TYPES` (or a type registered with a runner)."""
    config: Mapping[str, Any]
    """The runner's config, as validated at submission."""
    owner: str
    """Who the job belongs to (budgets and concurrency limits are per owner)."""
    status: JobStatus
    """Current status."""
    output_dir: str
    """Folder of the job's checkpoints and outputs."""
    created_at: float
    """Unix time of submission."""
    requested: Request | None = None
    """A pause or cancel the worker has yet to carry out."""
    status_reason: str | None = None
    """Why the job has its status, in words (for budget_exceeded, failed, requeues)."""
    iteration: int = 0
    """Iterations done."""
    total_iterations: int | None = None
    """Iterations the job will run, if known."""
    best_score: float | None = None
    """Best held-out evaluation score so far."""
    latest_score: float | None = None
    """Latest held-out evaluation score."""
    latest_metrics: Mapping[str, Any] = field(default_factory=dict)
    """Metrics of the latest iteration (the full history is in ``job_metrics``)."""
    num_metrics: int = 0
    """How many metrics documents the job has written."""
    budget: Budget = field(default_factory=Budget)
    """What the job may spend."""
    spend: Spend = field(default_factory=Spend)
    """What the job has spent, over all its attempts."""
    checkpoints: tuple[Mapping[str, Any], ...] = ()
    """The newest checkpoints written: ``{"iteration", "path", "score"}``."""
    error: Mapping[str, Any] | None = None
    """``{"message", "traceback"}`` of the failure, for failed jobs."""
    result: Mapping[str, Any] | None = None
    """The runner's summary of a completed job."""
    registered: Mapping[str, Any] | None = None
    """The registry version its best checkpoint was registered as."""
    worker_id: str | None = None
    """The worker running (or that last ran) the job."""
    attempts: int = 0
    """How many times a worker has claimed the job."""
    started_at: float | None = None
    """Unix time of the first claim."""
    finished_at: float | None = None
    """Unix time it reached a final status."""
    heartbeat_at: float | None = None
    """Unix time of the running worker's latest heartbeat."""
    updated_at: float | None = None
    """Unix time of the latest change."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "config": dict(self.config),
            "owner": self.owner,
            "status": self.status.value,
            "output_dir": self.output_dir,
            "created_at": self.created_at,
            "requested": self.requested.value if self.requested else None,
            "status_reason": self.status_reason,
            "iteration": self.iteration,
            "total_iterations": self.total_iterations,
            "best_score": self.best_score,
            "latest_score": self.latest_score,
            "latest_metrics": dict(self.latest_metrics),
            "num_metrics": self.num_metrics,
            "budget": self.budget.to_dict(),
            "spend": self.spend.to_dict(),
            "checkpoints": [dict(c) for c in self.checkpoints],
            "error": dict(self.error) if self.error else None,
            "result": dict(self.result) if self.result else None,
            "registered": dict(self.registered) if self.registered else None,
            "worker_id": self.worker_id,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "heartbeat_at": self.heartbeat_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        try:
            return cls(
                id=JobId(data["id"]),
                type=data["type"],
                config=data.get("config") or {},
                owner=data["owner"],
                status=JobStatus(data["status"]),
                output_dir=data["output_dir"],
                created_at=float(data["created_at"]),
                requested=Request(data["requested"]) if data.get("requested") else None,
                status_reason=data.get("status_reason"),
                iteration=int(data.get("iteration", 0)),
                total_iterations=data.get("total_iterations"),
                best_score=data.get("best_score"),
                latest_score=data.get("latest_score"),
                latest_metrics=data.get("latest_metrics") or {},
                num_metrics=int(data.get("num_metrics", 0)),
                budget=Budget.from_dict(data.get("budget")),
                spend=Spend.from_dict(data.get("spend")),
                checkpoints=tuple(data.get("checkpoints") or ()),
                error=data.get("error"),
                result=data.get("result"),
                registered=data.get("registered"),
                worker_id=data.get("worker_id"),
                attempts=int(data.get("attempts", 0)),
                started_at=data.get("started_at"),
                finished_at=data.get("finished_at"),
                heartbeat_at=data.get("heartbeat_at"),
                updated_at=data.get("updated_at"),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidInputError(
                f"stored job {data.get('id')!r} is malformed ({exc!r}); it was not written by "
                "this version of learnloop"
            ) from None


class JobStore:
    """Jobs, their metrics and the owners' spend ledger on a :class:`DocumentStore`.

    Args:
        store: where the documents live.
        clock: the current Unix time (inject a fake one in tests).
        max_attempts: compare-and-set retries before an update gives up.
    """

    def __init__(
        self,
        store: DocumentStore,
        *,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 200,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_attempts = max_attempts

    @property
    def store(self) -> DocumentStore:
        return self._store

    def now(self) -> float:
        return self._clock()

    # --- create and read --------------------------------------------------------------

    def create(
        self,
        job_type: str,
        config: Mapping[str, Any],
        *,
        owner: str,
        output_dir: str,
        budget: Budget = Budget(),
        total_iterations: int | None = None,
        job_id: JobId | None = None,
    ) -> Job:
        """Queue a new job; raises ConflictError if ``job_id`` is taken."""
        now = self._clock()
        job = Job(
            id=job_id or new_job_id(now),
            type=job_type,
            config=dict(config),
            owner=owner,
            status=JobStatus.QUEUED,
            output_dir=output_dir,
            created_at=now,
            total_iterations=total_iterations,
            budget=budget,
            updated_at=now,
        )
        self._store.put_document(JOBS, job.id, job.to_dict(), expected_revision=0)
        logger.info("queued %s job %s for %s", job_type, job.id, owner)
        return job

    def get(self, job_id: str) -> Job:
        """The job; raises NotFoundError naming the id."""
        doc = self._store.get_document(JOBS, job_id)
        if doc is None:
            raise NotFoundError(
                f"no job with id {job_id!r}; list jobs with training.list or 'learnloop jobs list'"
            )
        return Job.from_dict(doc.data)

    def get_data(self, job_id: str) -> dict[str, Any]:
        """The job's stored data as plain JSON (no conversion); raises NotFoundError."""
        doc = self._store.get_document(JOBS, job_id)
        if doc is None:
            self.get(job_id)  # raises NotFoundError
        assert doc is not None
        return doc.data

    def list_jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        owner: str | None = None,
        job_type: str | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        """Jobs ordered by id (= creation time), optionally filtered."""
        where: dict[str, str] = {}
        if status is not None:
            where["status"] = JobStatus(status).value
        if owner is not None:
            where["owner"] = owner
        if job_type is not None:
            where["type"] = job_type
        docs = self._store.list_documents(JOBS, where=where or None, limit=limit)
        return [Job.from_dict(d.data) for d in docs]

    def count_by_status(self) -> dict[JobStatus, int]:
        """How many jobs have each status."""
        counts = dict.fromkeys(JobStatus, 0)
        for doc in self._store.list_documents(JOBS):
            counts[JobStatus(doc.data["status"])] += 1
        return counts

    # --- updates ----------------------------------------------------------------------

    def update(self, job_id: str, change: Callable[[dict[str, Any]], R]) -> tuple[Job, R]:
        """Apply ``change`` to the job's data and write it with compare-and-set.

        ``change`` mutates the dict in place and may raise to abort (nothing is
        written); it is called again on a fresh copy after a conflict.
        """
        for _ in range(self._max_attempts):
            doc = self._store.get_document(JOBS, job_id)
            if doc is None:
                self.get(job_id)  # raises NotFoundError
            assert doc is not None
            data = dict(doc.data)
            outcome = change(data)
            data["updated_at"] = self._clock()
            try:
                stored = self._store.put_document(
                    JOBS, job_id, data, expected_revision=doc.revision
                )
            except ConflictError:
                continue
            return Job.from_dict(stored.data), outcome
        raise ConflictError(
            f"job {job_id} kept changing under {self._max_attempts} attempts to update it; retry"
        )

    def transition(
        self, job_id: str, target: JobStatus, *, reason: str | None = None, **fields: Any
    ) -> Job:
        """Move a job to ``target`` (validated), setting ``fields`` too."""

        def change(data: dict[str, Any]) -> None:
            check_transition(job_id, JobStatus(data["status"]), target)
            _set_status(data, target, reason, self._clock())
            data.update(fields)

        return self.update(job_id, change)[0]

    def claim(self, job_id: str, worker_id: str) -> Job | None:
        """Move a queued job to running for ``worker_id``; None if it is no longer queued."""
        now = self._clock()

        def change(data: dict[str, Any]) -> bool:
            if data["status"] != JobStatus.QUEUED.value:
                return False
            _set_status(data, JobStatus.RUNNING, None, now)
            data["worker_id"] = worker_id
            data["heartbeat_at"] = now
            data["attempts"] = int(data.get("attempts", 0)) + 1
            data["requested"] = None
            if data.get("started_at") is None:
                data["started_at"] = now
            return True

        for _ in range(self._max_attempts):
            doc = self._store.get_document(JOBS, job_id)
            if doc is None or doc.data["status"] != JobStatus.QUEUED.value:
                return None
            data = dict(doc.data)
            change(data)
            data["updated_at"] = now
            try:
                stored = self._store.put_document(
                    JOBS, job_id, data, expected_revision=doc.revision
                )
            except ConflictError:
                continue
            logger.info("worker %s claimed job %s", worker_id, job_id)
            return Job.from_dict(stored.data)
        return None

    def pause(self, job_id: str) -> Job:
        """Pause: a queued job at once, a running one at its next iteration boundary."""

        def change(data: dict[str, Any]) -> None:
            status = JobStatus(data["status"])
            if status is JobStatus.RUNNING:
                if data.get("requested") == Request.CANCEL.value:
                    raise JobError(f"job {job_id} is being cancelled; it cannot be paused")
                data["requested"] = Request.PAUSE.value
            elif status is not JobStatus.PAUSED:  # pausing a paused job is a no-op
                check_transition(job_id, status, JobStatus.PAUSED)
                _set_status(data, JobStatus.PAUSED, "paused before it started", self._clock())

        return self.update(job_id, change)[0]

    def resume(self, job_id: str) -> Job:
        """Requeue a paused job (it continues from its latest checkpoint).

        A running job with a pending pause request just loses the request.
        """

        def change(data: dict[str, Any]) -> None:
            status = JobStatus(data["status"])
            if status is JobStatus.RUNNING and data.get("requested") == Request.PAUSE.value:
                data["requested"] = None
                return
            if status in (JobStatus.QUEUED, JobStatus.RUNNING):
                raise JobError(f"job {job_id} is {status.value}, not paused; nothing to resume")
            if status.is_final:
                raise JobError(
                    f"job {job_id} is {status.value} and cannot be resumed; {_FIX[status]}"
                )
            _set_status(data, JobStatus.QUEUED, "resumed", self._clock())

        return self.update(job_id, change)[0]

    def cancel(self, job_id: str) -> Job:
        """Cancel: a queued or paused job at once, a running one at its next boundary."""

        def change(data: dict[str, Any]) -> None:
            status = JobStatus(data["status"])
            if status.is_final:
                raise JobError(
                    f"job {job_id} is already {status.value}; only queued, running or paused "
                    "jobs can be cancelled"
                )
            if status is JobStatus.RUNNING:
                data["requested"] = Request.CANCEL.value
            else:
                _set_status(data, JobStatus.CANCELLED, "cancelled", self._clock())

        return self.update(job_id, change)[0]

    def heartbeat(self, job_id: str, worker_id: str, **fields: Any) -> Job:
        """Record that ``worker_id`` is alive on the job; returns the job (with requests).

        Raises:
            JobError: the job is no longer running for this worker (it was requeued
                and maybe claimed by another one); the worker must stop.
        """
        now = self._clock()

        def change(data: dict[str, Any]) -> None:
            if data["status"] != JobStatus.RUNNING.value or data.get("worker_id") != worker_id:
                raise JobError(
                    f"job {job_id} is {data['status']} for worker {data.get('worker_id')}, "
                    f"not running for {worker_id}; this worker must stop"
                )
            data["heartbeat_at"] = now
            data.update(fields)

        return self.update(job_id, change)[0]

    def requeue_stale(
        self,
        *,
        stale_after_s: float,
        max_attempts: int,
        alive_workers: frozenset[str] = frozenset(),
    ) -> list[JobId]:
        """Requeue running jobs whose heartbeat is older than ``stale_after_s``.

        Jobs of ``alive_workers`` (workers the caller knows are alive, e.g. its own
        child processes still starting up) are left alone. A job that has already
        been claimed ``max_attempts`` times fails instead. Returns the ids that were
        requeued or failed.
        """
        now = self._clock()
        touched: list[JobId] = []
        for job in self.list_jobs(status=JobStatus.RUNNING):
            if job.worker_id in alive_workers:
                continue
            beat = job.heartbeat_at or job.updated_at or job.created_at
            if now - beat <= stale_after_s:
                continue
            try:
                self.update(job.id, _requeue(job.heartbeat_at, now, stale_after_s, max_attempts))
            except JobError:
                continue  # it changed meanwhile (finished, or heartbeat came in)
            touched.append(job.id)
        return touched

    def release(self, job_id: str, worker_id: str, *, max_attempts: int, reason: str) -> Job:
        """Requeue a running job whose worker ended without finishing it."""

        def change(data: dict[str, Any]) -> None:
            if data["status"] != JobStatus.RUNNING.value or data.get("worker_id") != worker_id:
                raise JobError(f"job {job_id} is no longer running for {worker_id}")
            _requeue_data(data, self._clock(), reason, max_attempts)

        return self.update(job_id, change)[0]

    # --- metrics and checkpoints ------------------------------------------------------

    def record_iteration(
        self,
        job_id: str,
        worker_id: str,
        *,
        iteration: int,
        metrics: Mapping[str, Any],
        score: float | None = None,
        checkpoint: Mapping[str, Any] | None = None,
        total_iterations: int | None = None,
        spend: Spend | None = None,
        kind: str = "train",
    ) -> Job:
        """Store one iteration's metrics and update the job's progress (and heartbeat)."""
        now = self._clock()

        def change(data: dict[str, Any]) -> int:
            if data["status"] != JobStatus.RUNNING.value or data.get("worker_id") != worker_id:
                raise JobError(
                    f"job {job_id} is {data['status']} for worker {data.get('worker_id')}, "
                    f"not running for {worker_id}; this worker must stop"
                )
            sequence = int(data.get("num_metrics", 0))
            data["num_metrics"] = sequence + 1
            data["iteration"] = iteration
            data["latest_metrics"] = dict(metrics)
            data["heartbeat_at"] = now
            if total_iterations is not None:
                data["total_iterations"] = total_iterations
            if score is not None:
                data["latest_score"] = score
                best = data.get("best_score")
                data["best_score"] = score if best is None else max(best, score)
            if checkpoint is not None:
                listed = [
                    c for c in data.get("checkpoints") or () if c["path"] != checkpoint["path"]
                ]
                data["checkpoints"] = [*listed, dict(checkpoint)][-MAX_LISTED_CHECKPOINTS:]
            if spend is not None:
                data["spend"] = spend.to_dict()
            return sequence

        job, sequence = self.update(job_id, change)
        self.add_metrics(job_id, sequence, iteration=iteration, metrics=metrics, kind=kind)
        return job

    def add_metrics(
        self,
        job_id: str,
        sequence: int,
        *,
        iteration: int,
        metrics: Mapping[str, Any],
        kind: str = "train",
    ) -> None:
        """Write one metrics document (``kind``: ``train`` or ``eval``)."""
        self._store.put_document(
            JOB_METRICS,
            f"{job_id}/{sequence:08d}",
            {
                "job_id": job_id,
                "iteration": iteration,
                "kind": kind,
                "at": self._clock(),
                "metrics": dict(metrics),
            },
        )

    def add_evaluation(self, job_id: str, result: Mapping[str, Any]) -> None:
        """Store an on-demand evaluation of a job (any status) as an ``eval`` metrics row."""

        def change(data: dict[str, Any]) -> tuple[int, int]:
            sequence = int(data.get("num_metrics", 0))
            data["num_metrics"] = sequence + 1
            return sequence, int(data.get("iteration", 0))

        _, (sequence, iteration) = self.update(job_id, change)
        self.add_metrics(job_id, sequence, iteration=iteration, metrics=result, kind="eval")

    def metrics(self, job_id: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The job's metrics rows, oldest first (the last ``limit`` if given)."""
        docs = self._store.list_documents(JOB_METRICS, prefix=f"{job_id}/")
        rows = [d.data for d in docs if d.data.get("job_id") == job_id]
        return rows[-limit:] if limit else rows

    # --- spend ------------------------------------------------------------------------

    def owner_spent(self, owner: str, month: str | None = None) -> float:
        """Dollars ``owner``'s jobs have spent in ``month`` (``YYYY-MM``, default: now)."""
        month = month or month_key(self._clock())
        doc = self._store.get_document(JOB_SPEND, f"{owner}/{month}")
        return float(doc.data["cost_usd"]) if doc else 0.0

    def charge_owner(self, owner: str, cost_usd: float) -> float:
        """Add ``cost_usd`` to the owner's ledger of this month; returns the new total."""
        if cost_usd < 0:
            raise InvalidInputError(f"a charge must be >= 0 dollars, got {cost_usd!r}")
        month = month_key(self._clock())
        key = f"{owner}/{month}"
        for _ in range(self._max_attempts):
            doc = self._store.get_document(JOB_SPEND, key)
            total = (float(doc.data["cost_usd"]) if doc else 0.0) + cost_usd
            data = {"owner": owner, "month": month, "cost_usd": total}
            try:
                self._store.put_document(
                    JOB_SPEND, key, data, expected_revision=doc.revision if doc else 0
                )
            except ConflictError:
                continue
            return total
        raise ConflictError(f"could not charge owner {owner!r}: too many concurrent writers")


def _set_status(data: dict[str, Any], target: JobStatus, reason: str | None, now: float) -> None:
    data["status"] = target.value
    data["status_reason"] = reason
    if target.is_final:
        data["finished_at"] = now
        data["requested"] = None
    if target in (JobStatus.QUEUED, JobStatus.PAUSED):
        data["requested"] = None


def _requeue_data(data: dict[str, Any], now: float, reason: str, max_attempts: int) -> None:
    if int(data.get("attempts", 0)) >= max_attempts:
        _set_status(data, JobStatus.FAILED, f"{reason}; gave up after {max_attempts} attempts", now)
        data["error"] = {"message": data["status_reason"], "traceback": None}
        return
    if data.get("requested") == Request.CANCEL.value:
        _set_status(data, JobStatus.CANCELLED, f"{reason}; it was being cancelled", now)
        return
    paused = data.get("requested") == Request.PAUSE.value
    target = JobStatus.PAUSED if paused else JobStatus.QUEUED
    _set_status(data, target, f"{reason}; {'paused' if paused else 'requeued'} to resume "
                "from its latest checkpoint", now)


def _requeue(
    seen_heartbeat: float | None, now: float, stale_after_s: float, max_attempts: int
) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        if data["status"] != JobStatus.RUNNING.value or data.get("heartbeat_at") != seen_heartbeat:
            raise JobError("changed meanwhile")
        reason = (
            f"worker {data.get('worker_id')} sent no heartbeat for more than {stale_after_s:g} s"
        )
        _requeue_data(data, now, reason, max_attempts)
        logger.warning("job %s: %s", data["id"], data["status_reason"])

    return change
