"""Workers: a pool that claims queued jobs, runs each one, heartbeats, and recovers.

:class:`WorkerPool` runs in the server process (one thread). Each tick it

1. reaps workers that ended: a job still ``running`` under a worker that exited
   (crash, ``kill -9``) is requeued at once to resume from its latest checkpoint;
2. kills workers that ignored a cancel for ``cancel_grace_s`` and marks the job
   ``cancelled`` (what was saved is kept);
3. requeues jobs of any *other* worker whose heartbeat is older than
   ``stale_after_s`` (a server that died with its workers: its jobs resume on the
   next server; this pool's own live workers are never requeued, even while a slow
   start delays their first heartbeat);
4. claims queued jobs (oldest first) up to ``max_workers`` running here and
   ``max_per_owner`` running per owner across the store, refusing a job whose
   owner has used up the monthly budget.

Each job runs in its own worker *process* (:class:`ProcessLauncher`, the
default: training is CPU-bound Python, and a separate process keeps the server
responsive and can be killed) or in a thread (:class:`ThreadLauncher`, for
tests and embedding). Worker processes die with the server (Linux
``PR_SET_PDEATHSIG``), so a killed server never leaves orphans writing to the
store.

A worker process is ``python -m learnloop.jobs run --store URL --job ID
--worker-id W``; ``python -m learnloop.jobs evaluate --store URL --job ID``
evaluates a job's checkpoint and prints the result as JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from learnloop.errors import ConfigError, JobError, LearnloopError
from learnloop.jobs.budget import BudgetPolicy
from learnloop.jobs.context import JobContext, JobStopped, StopKind, StopRequest
from learnloop.jobs.model import Job, JobStatus, JobStore, _set_status
from learnloop.jobs.runners import Runners, default_runners
from learnloop.store.base import Store

__all__ = [
    "DEFAULT_RUNNERS_FACTORY",
    "Launcher",
    "PoolConfig",
    "ProcessLauncher",
    "ThreadLauncher",
    "WorkerHandle",
    "WorkerPool",
    "run_job",
]

logger = logging.getLogger(__name__)

#: Dotted path of the function a worker process calls to get its runners.
DEFAULT_RUNNERS_FACTORY = "learnloop.jobs.runners:default_runners"


# --- running one job --------------------------------------------------------------------


def _heartbeat_loop(ctx: JobContext, every_s: float, done: threading.Event) -> None:
    while not done.wait(every_s):
        try:
            ctx.heartbeat()
        except Exception:  # a busy store must not kill the job; the next beat retries
            logger.exception("heartbeat of job %s failed", ctx.job.id)


def run_job(
    store: Store,
    job_id: str,
    worker_id: str,
    runners: Runners,
    *,
    budgets: BudgetPolicy = BudgetPolicy(),
    heartbeat_s: float = 2.0,
    shutdown: threading.Event | None = None,
) -> JobStatus | None:
    """Run a job claimed by ``worker_id`` to its next status; returns that status.

    Returns None if the job is not running for this worker (nothing is done). A
    runner's exception marks the job ``failed`` with the traceback (process
    boundary: broad except).
    """
    jobs = JobStore(store)
    job = jobs.get(job_id)
    if job.status is not JobStatus.RUNNING or job.worker_id != worker_id:
        logger.warning("job %s is %s for %s; %s does not run it", job_id, job.status.value,
                       job.worker_id, worker_id)
        return None
    ctx = JobContext(jobs, job, worker_id, episodes=store, budgets=budgets, shutdown=shutdown)
    done = threading.Event()
    beat = threading.Thread(target=_heartbeat_loop, args=(ctx, heartbeat_s, done),
                            name=f"heartbeat-{job_id}", daemon=True)
    beat.start()
    result: Mapping[str, Any] = {}
    request: StopRequest | None = None
    failure: dict[str, Any] | None = None
    try:
        result = runners.get(job.type).run(ctx)
        if result.get("stopped_at") is not None:
            request = ctx.stop_request() or StopRequest(StopKind.PAUSE, "stopped by its runner")
    except JobStopped as exc:
        request = exc.request
    except Exception as exc:  # process boundary: record the traceback, fail the job
        logger.exception("job %s failed", job_id)
        failure = {"message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    finally:
        done.set()
        beat.join()
    return _finish(jobs, ctx, result, request, failure)


def _finish(
    jobs: JobStore,
    ctx: JobContext,
    result: Mapping[str, Any],
    request: StopRequest | None,
    failure: dict[str, Any] | None,
) -> JobStatus | None:
    job, worker_id = ctx.job, ctx.worker_id
    if request is not None and request.kind is StopKind.LOST:
        logger.warning("job %s: %s", job.id, request.reason)
        return None
    try:
        ctx.settle()
    except LearnloopError:
        logger.exception("could not charge the spend of job %s", job.id)
    registered = None
    if failure is None and request is None and result.get("checkpoint"):
        registered = _register(jobs, job, result)
    if failure is not None:
        target, reason = JobStatus.FAILED, failure["message"]
    elif request is None:
        target, reason = JobStatus.COMPLETED, None
    else:
        target = {
            StopKind.PAUSE: JobStatus.PAUSED,
            StopKind.CANCEL: JobStatus.CANCELLED,
            StopKind.BUDGET: JobStatus.BUDGET_EXCEEDED,
            StopKind.SHUTDOWN: JobStatus.QUEUED,
        }[request.kind]
        reason = request.reason
    spend = ctx.spend().to_dict()
    latest = result.get("latest_checkpoint")

    def change(data: dict[str, Any]) -> None:
        if data["status"] != JobStatus.RUNNING.value or data.get("worker_id") != worker_id:
            raise JobError(f"job {job.id} is no longer running for {worker_id}")
        _set_status(data, target, reason, jobs.now())
        data["spend"] = spend
        if failure is not None:
            data["error"] = failure
        if target is JobStatus.COMPLETED:
            data["result"] = _plain(result)
            data["registered"] = registered
            # A job killed after its last checkpoint but before reporting that
            # iteration resumes with nothing left to run: take the final iteration
            # from the run's own summary rather than from the last report.
            final = (result.get("summary") or {}).get("iterations")
            if isinstance(final, int) and final > int(data.get("iteration") or 0):
                data["iteration"] = final
        if latest and all(c["path"] != latest["path"] for c in data.get("checkpoints") or ()):
            data["checkpoints"] = [*(data.get("checkpoints") or ()), _plain(latest)][-20:]

    try:
        jobs.update(job.id, change)
    except JobError as exc:
        logger.warning("%s; result not written", exc)
        return None
    logger.info("job %s -> %s%s", job.id, target.value, f" ({reason})" if reason else "")
    return target


def _plain(value: Any) -> Any:
    from learnloop.jobs.context import json_safe

    return json_safe(value)


def _register(jobs: JobStore, job: Job, result: Mapping[str, Any]) -> dict[str, Any] | None:
    from learnloop.registry import Registry

    name = result.get("register_as") or f"{job.type}-policy"
    try:
        version = Registry(jobs.store).register_candidate(
            str(name), str(result["checkpoint"]), source=f"job:{job.id}", kind="checkpoint",
            author=job.owner, metadata={"job_id": job.id, "job_type": job.type,
                                        "best_score": job.best_score},
        )
    except LearnloopError as exc:  # the job did complete; registration is reported
        logger.warning("job %s: could not register its checkpoint: %s", job.id, exc)
        return {"name": name, "version": None, "error": str(exc)}
    return {"name": version.name, "version": version.version}


# --- launchers --------------------------------------------------------------------------


class WorkerHandle(Protocol):
    """One running worker."""

    def alive(self) -> bool: ...

    def exit_code(self) -> int | None: ...

    def terminate(self) -> None:
        """Ask it to stop at the next iteration boundary (the job is requeued)."""
        ...

    def kill(self) -> None:
        """Stop it now."""
        ...


class Launcher(Protocol):
    """Starts a worker for a claimed job."""

    def launch(self, job: Job, worker_id: str) -> WorkerHandle: ...


class _ThreadHandle:
    def __init__(self, thread: threading.Thread, shutdown: threading.Event) -> None:
        self.thread = thread
        self.shutdown = shutdown

    def alive(self) -> bool:
        return self.thread.is_alive()

    def exit_code(self) -> int | None:
        return None if self.thread.is_alive() else 0

    def terminate(self) -> None:
        self.shutdown.set()

    def kill(self) -> None:  # a thread cannot be killed: stop at the next boundary
        self.shutdown.set()


class ThreadLauncher:
    """Runs each job in a thread of this process (tests, embedding, light jobs)."""

    def __init__(
        self,
        store: Store,
        runners: Runners | None = None,
        *,
        budgets: BudgetPolicy = BudgetPolicy(),
        heartbeat_s: float = 2.0,
    ) -> None:
        self._store = store
        self._runners = runners or default_runners()
        self._budgets = budgets
        self._heartbeat_s = heartbeat_s

    def launch(self, job: Job, worker_id: str) -> WorkerHandle:
        shutdown = threading.Event()
        thread = threading.Thread(
            target=run_job,
            args=(self._store, job.id, worker_id, self._runners),
            kwargs={"budgets": self._budgets, "heartbeat_s": self._heartbeat_s,
                    "shutdown": shutdown},
            name=f"job-{job.id}",
            daemon=True,
        )
        thread.start()
        return _ThreadHandle(thread, shutdown)


class _ProcessHandle:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_code(self) -> int | None:
        return self.process.poll()

    def terminate(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()


class ProcessLauncher:
    """Runs each job in its own ``python -m learnloop.jobs run`` process.

    The worker's output goes to ``worker.log`` in the job's folder.
    """

    def __init__(
        self,
        store_url: str,
        *,
        budgets: BudgetPolicy = BudgetPolicy(),
        heartbeat_s: float = 2.0,
        runners_factory: str = DEFAULT_RUNNERS_FACTORY,
        python: str = sys.executable,
    ) -> None:
        self._store_url = store_url
        self._budgets = budgets
        self._heartbeat_s = heartbeat_s
        self._runners_factory = runners_factory
        self._python = python

    def command(self, job: Job, worker_id: str) -> list[str]:
        return [
            self._python, "-m", "learnloop.jobs", "run",
            "--store", self._store_url, "--job", job.id, "--worker-id", worker_id,
            "--heartbeat-s", str(self._heartbeat_s),
            "--budgets", json.dumps(self._budgets.to_dict()),
            "--runners", self._runners_factory,
        ]

    def launch(self, job: Job, worker_id: str) -> WorkerHandle:
        folder = Path(job.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "worker.log").open("ab") as log:
            process = subprocess.Popen(
                self.command(job, worker_id), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, close_fds=True,
            )
        return _ProcessHandle(process)


# --- the pool ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolConfig:
    """Concurrency, liveness and recovery settings of a :class:`WorkerPool`."""

    max_workers: int = 2
    """Jobs run at once by this pool (this server)."""
    max_per_owner: int = 2
    """Jobs of one owner running at once, across every worker on the store."""
    poll_s: float = 0.5
    """Seconds between looks at the queue (a submission wakes the pool at once)."""
    heartbeat_s: float = 2.0
    """Seconds between a running job's heartbeats."""
    stale_after_s: float = 30.0
    """A running job without a heartbeat for this long is requeued (its worker died)."""
    max_attempts: int = 3
    """Claims of one job before a dying worker fails it instead of requeueing it."""
    cancel_grace_s: float = 10.0
    """Seconds a worker has to honour a cancel before it is killed."""
    shutdown_grace_s: float = 30.0
    """Seconds workers have to checkpoint and requeue their jobs when the pool stops."""
    budgets: BudgetPolicy = field(default_factory=BudgetPolicy)
    """Owners' monthly allowances and model prices."""

    def __post_init__(self) -> None:
        if self.max_workers < 0 or self.max_per_owner < 1 or self.max_attempts < 1:
            raise ConfigError(
                f"PoolConfig needs max_workers >= 0, max_per_owner >= 1, max_attempts >= 1; "
                f"got {self.max_workers}, {self.max_per_owner}, {self.max_attempts}"
            )
        for name in ("poll_s", "heartbeat_s", "stale_after_s", "cancel_grace_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"PoolConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.stale_after_s <= 2 * self.heartbeat_s:
            raise ConfigError(
                f"PoolConfig.stale_after_s ({self.stale_after_s}) must exceed two heartbeats "
                f"({2 * self.heartbeat_s} s), or live jobs would be requeued"
            )


class WorkerPool:
    """Claims and runs queued jobs (see the module docstring).

    Args:
        jobs: the job store.
        launcher: starts a worker per job.
        config: limits and timings.
        clock: monotonic seconds (cancel grace periods).
    """

    def __init__(
        self,
        jobs: JobStore,
        launcher: Launcher,
        config: PoolConfig = PoolConfig(),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jobs = jobs
        self.launcher = launcher
        self.config = config
        self._clock = clock
        self.pool_id = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self._workers: dict[str, tuple[str, WorkerHandle]] = {}  # worker id -> (job, handle)
        self._cancel_seen: dict[str, float] = {}
        self._count = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> dict[str, str]:
        """Worker id -> job id of the workers alive here."""
        with self._lock:
            return {w: job for w, (job, _) in self._workers.items()}

    def start(self) -> None:
        """Run :meth:`tick` every ``poll_s`` in a background thread."""
        if self._thread is not None:
            raise JobError("the worker pool is already started")
        self._thread = threading.Thread(target=self._loop, name="worker-pool", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the queue now (after a submission or a resume)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # the pool must outlive a bad tick (busy store, ...)
                logger.exception("worker pool tick failed")
            self._wake.wait(self.config.poll_s)
            self._wake.clear()

    def tick(self) -> list[str]:
        """One round of reap, cancel, recover and claim; returns the job ids claimed."""
        self._reap()
        self._enforce_cancels()
        with self._lock:
            alive = frozenset(w for w, (_, h) in self._workers.items() if h.alive())
        self.jobs.requeue_stale(
            stale_after_s=self.config.stale_after_s,
            max_attempts=self.config.max_attempts,
            alive_workers=alive,
        )
        if self._stopping.is_set():
            return []
        return self._claim()

    def _reap(self) -> None:
        with self._lock:
            ended = [(w, j, h) for w, (j, h) in self._workers.items() if not h.alive()]
            for worker_id, _, _ in ended:
                del self._workers[worker_id]
        for worker_id, job_id, handle in ended:
            self._cancel_seen.pop(worker_id, None)
            job = self.jobs.get(job_id)
            if job.status is JobStatus.RUNNING and job.worker_id == worker_id:
                reason = f"worker {worker_id} exited (code {handle.exit_code()}) mid-job"
                try:
                    job = self.jobs.release(job_id, worker_id,
                                            max_attempts=self.config.max_attempts, reason=reason)
                except JobError:
                    continue
                logger.warning("job %s: %s -> %s", job_id, reason, job.status.value)

    def _enforce_cancels(self) -> None:
        now = self._clock()
        for worker_id, (job_id, handle) in list(self._workers.items()):
            job = self.jobs.get(job_id)
            if job.requested is None or job.requested.value != "cancel":
                continue
            first = self._cancel_seen.setdefault(worker_id, now)
            if now - first < self.config.cancel_grace_s:
                continue
            handle.kill()
            try:
                self.jobs.update(job_id, _cancel_killed(worker_id, self.jobs.now()))
            except JobError:
                pass
            logger.warning("job %s ignored its cancel for %.0f s; worker killed", job_id,
                           now - first)

    def _claim(self) -> list[str]:
        claimed: list[str] = []
        with self._lock:
            free = self.config.max_workers - len(self._workers)
        if free <= 0:
            return claimed
        queued = self.jobs.list_jobs(status=JobStatus.QUEUED, limit=200)
        if not queued:
            return claimed
        per_owner: dict[str, int] = {}
        for job in self.jobs.list_jobs(status=JobStatus.RUNNING):
            per_owner[job.owner] = per_owner.get(job.owner, 0) + 1
        budgets = self.config.budgets
        for job in queued:
            if free <= 0:
                break
            if per_owner.get(job.owner, 0) >= self.config.max_per_owner:
                continue
            spent, limit = self.jobs.owner_spent(job.owner), budgets.limit_for(job.owner)
            if spent >= limit:
                reason = (f"owner {job.owner!r} has spent ${spent:.2f} of the ${limit:.2f} "
                          "monthly budget; wait for next month or raise the budget")
                try:
                    self.jobs.transition(job.id, JobStatus.BUDGET_EXCEEDED, reason=reason)
                except JobError:
                    pass
                continue
            with self._lock:
                self._count += 1
                worker_id = f"{self.pool_id}-{self._count}"
            running = self.jobs.claim(job.id, worker_id)
            if running is None:
                continue  # another worker won the compare-and-set
            handle = self.launcher.launch(running, worker_id)
            with self._lock:
                self._workers[worker_id] = (job.id, handle)
            per_owner[job.owner] = per_owner.get(job.owner, 0) + 1
            free -= 1
            claimed.append(job.id)
        return claimed

    def stop(self, *, grace_s: float | None = None) -> None:
        """Stop claiming; ask workers to checkpoint and requeue; kill those that do not."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        with self._lock:
            handles = [h for _, h in self._workers.values()]
        for handle in handles:
            handle.terminate()
        deadline = time.monotonic() + grace
        while any(h.alive() for h in handles) and time.monotonic() < deadline:
            time.sleep(0.05)
        for handle in handles:
            if handle.alive():
                handle.kill()
        self._reap()


def _cancel_killed(worker_id: str, now: float) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        if data["status"] != JobStatus.RUNNING.value or data.get("worker_id") != worker_id:
            raise JobError("changed meanwhile")
        _set_status(data, JobStatus.CANCELLED,
                    "cancelled (worker killed after the grace period)", now)

    return change


# --- worker process entry point ---------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies (no orphan workers after a server crash)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:
        logger.warning("could not set the parent-death signal; orphans are possible")


def load_factory(path: str) -> Callable[[], Runners]:
    """Import ``module:function`` (the runners factory of a worker process)."""
    module, _, name = path.partition(":")
    if not module or not name:
        raise ConfigError(f"runners factory {path!r} must look like 'package.module:function'")
    factory: Callable[[], Runners] = getattr(importlib.import_module(module), name)
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a worker process (``run``) or of an evaluation (``evaluate``)."""
    parser = argparse.ArgumentParser(prog="python -m learnloop.jobs")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one claimed job")
    run.add_argument("--worker-id", required=True)
    run.add_argument("--heartbeat-s", type=float, default=2.0)
    run.add_argument("--budgets", default="{}", help="BudgetPolicy as JSON")
    evaluate = commands.add_parser("evaluate", help="evaluate a job's checkpoint; prints JSON")
    evaluate.add_argument("--which", choices=("best", "latest"), default="best")
    for sub in (run, evaluate):
        sub.add_argument("--store", required=True)
        sub.add_argument("--job", required=True)
        sub.add_argument("--runners", default=DEFAULT_RUNNERS_FACTORY)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from learnloop.store import open_store

    runners = load_factory(args.runners)()
    store = open_store(args.store)
    try:
        if args.command == "evaluate":
            return _evaluate_main(store, runners, args.job, args.which)
        _die_with_parent()
        shutdown = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: shutdown.set())
        status = run_job(store, args.job, args.worker_id, runners,
                         budgets=BudgetPolicy.from_dict(json.loads(args.budgets)),
                         heartbeat_s=args.heartbeat_s, shutdown=shutdown)
        logger.info("worker %s done: job %s -> %s", args.worker_id, args.job,
                    status.value if status else "not ours")
        return 0
    finally:
        store.close()


def _evaluate_main(store: Store, runners: Runners, job_id: str, which: str) -> int:
    jobs = JobStore(store)
    try:
        job = jobs.get(job_id)
        result = dict(runners.get(job.type).evaluate(job, which=which))  # type: ignore[arg-type]
        jobs.add_evaluation(job_id, {**result, "source": "training.evaluate"})
    except LearnloopError as exc:
        print(json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}}))
        return 1
    from learnloop.jobs.context import json_safe

    print(json.dumps({"result": json_safe(result)}))
    return 0


if __name__ == "__main__":  # pragma: no cover - process entry
    raise SystemExit(main())
