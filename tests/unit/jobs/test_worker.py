"""The pool with in-process workers and a counting runner (no torch)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from learnloop.jobs import (
    Budget,
    BudgetPolicy,
    BudgetRefusedError,
    JobService,
    JobStatus,
    JobStore,
    PoolConfig,
    ThreadLauncher,
    WorkerPool,
)
from learnloop.registry import Registry
from learnloop.store import SqliteStore

from .fakes import BUDGETS, PRICES, CountingRunner, Gate, runners_with


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


class Rig:
    def __init__(self, store: SqliteStore, tmp: Path, *, budgets: BudgetPolicy = BUDGETS,
                 **pool: float) -> None:
        self.counting = CountingRunner()
        runners = runners_with(self.counting)
        self.jobs = JobStore(store)
        config = PoolConfig(**{"poll_s": 0.02, "heartbeat_s": 0.05, "stale_after_s": 0.5,
                               "budgets": budgets, **pool})  # type: ignore[arg-type]
        self.pool = WorkerPool(self.jobs, ThreadLauncher(store, runners, budgets=budgets,
                                                         heartbeat_s=0.05), config)
        self.service = JobService(self.jobs, runners, jobs_dir=tmp / "jobs", budgets=budgets,
                                  on_submit=self.pool.wake)

    def gate(self, name: str) -> Gate:
        return self.counting.events.setdefault(name, Gate())

    def status(self, job_id: str) -> JobStatus:
        return self.jobs.get(job_id).status


@pytest.fixture
def rig(sqlite_store: SqliteStore, tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(sqlite_store, tmp_path)
    rig.pool.start()
    yield rig
    rig.pool.stop(grace_s=2)


def test_job_runs_to_completion_and_registers_its_checkpoint(rig: Rig) -> None:
    job = rig.service.submit("count", {"iterations": 3}, owner="ana")
    wait_for(lambda: rig.status(job.id) is JobStatus.COMPLETED)
    done = rig.jobs.get(job.id)
    assert (done.iteration, done.total_iterations, done.best_score) == (3, 3, 3.0)
    assert done.spend.rollouts == 3 and done.attempts == 1
    assert [r["metrics"]["reward"] for r in rig.jobs.metrics(job.id)] == [1.0, 2.0, 3.0]
    assert done.registered == {"name": "counting-policy", "version": 1}
    version = Registry(rig.jobs.store).get("counting-policy", "candidate")
    assert version.kind == "checkpoint" and version.content.endswith("ckpt-000003.json")
    assert version.source == f"job:{job.id}"


def test_failure_keeps_the_traceback(rig: Rig) -> None:
    job = rig.service.submit("count", {"iterations": 3, "fail_at": 2})
    wait_for(lambda: rig.status(job.id) is JobStatus.FAILED)
    failed = rig.jobs.get(job.id)
    assert failed.error["message"] == "RuntimeError: boom at iteration 2"  # type: ignore[index]
    assert "Traceback" in failed.error["traceback"]  # type: ignore[index]
    assert failed.iteration == 1


def test_pause_stops_at_a_boundary_and_resume_continues(rig: Rig) -> None:
    gate = rig.gate("g")
    job = rig.service.submit("count", {"iterations": 4, "gate": "g"})
    wait_for(lambda: rig.status(job.id) is JobStatus.RUNNING)
    gate.set()
    wait_for(lambda: rig.jobs.get(job.id).iteration == 1)
    rig.service.pause(job.id)
    gate.set()  # iteration 2 runs, then the worker sees the request
    wait_for(lambda: rig.status(job.id) is JobStatus.PAUSED)
    assert rig.jobs.get(job.id).iteration == 2
    rig.service.resume(job.id)
    for _ in range(2):
        wait_for(lambda: rig.status(job.id) is JobStatus.RUNNING)
        gate.set()
        time.sleep(0.05)
    wait_for(lambda: rig.status(job.id) is JobStatus.COMPLETED)
    assert rig.counting.started == [(job.id, 0), (job.id, 2)]  # resumed from its checkpoint
    assert rig.jobs.get(job.id).attempts == 2


def test_cancel_of_a_running_job_keeps_what_was_saved(rig: Rig) -> None:
    gate = rig.gate("c")
    job = rig.service.submit("count", {"iterations": 5, "gate": "c"})
    wait_for(lambda: rig.status(job.id) is JobStatus.RUNNING)
    gate.set()
    wait_for(lambda: rig.jobs.get(job.id).iteration == 1)
    assert rig.service.cancel(job.id).status is JobStatus.RUNNING  # a request, for now
    gate.set()
    wait_for(lambda: rig.status(job.id) is JobStatus.CANCELLED)
    cancelled = rig.jobs.get(job.id)
    assert cancelled.iteration == 2
    assert Path(cancelled.checkpoints[-1]["path"]).exists()


def test_job_budget_stops_the_job_with_its_checkpoint(rig: Rig) -> None:
    # each iteration: 100k in * $1/M + 100k out * $3/M = $0.40; the budget allows 2.5 of them
    job = rig.service.submit("count", {"iterations": 10, "tokens_in": 100_000,
                                       "tokens_out": 100_000},
                             budget=Budget(max_cost_usd=100.0, max_rollouts=3))
    wait_for(lambda: rig.status(job.id) is JobStatus.BUDGET_EXCEEDED)
    stopped = rig.jobs.get(job.id)
    assert stopped.iteration == 4 and stopped.spend.rollouts == 4
    assert "4 rollouts exceed the job budget of 3" in stopped.status_reason  # type: ignore[operator]
    assert stopped.spend.cost_usd == pytest.approx(1.6)
    assert rig.jobs.owner_spent("default") == pytest.approx(1.6)
    assert Path(stopped.checkpoints[-1]["path"]).exists()


def test_preflight_refuses_what_the_estimate_says_is_too_much(rig: Rig) -> None:
    with pytest.raises(BudgetRefusedError, match=r"estimated cost \$4.0000 exceeds"):
        rig.service.submit("count", {"iterations": 10, "tokens_in": 100_000,
                                     "tokens_out": 100_000}, budget=Budget(max_cost_usd=1.0))
    assert rig.jobs.list_jobs() == []


def test_owner_monthly_budget(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    budgets = BudgetPolicy(owner_monthly_usd=1.0, prices=PRICES)
    rig = Rig(sqlite_store, tmp_path, budgets=budgets)
    rig.pool.start()
    try:
        with pytest.raises(BudgetRefusedError, match="owner 'ana' has spent"):
            rig.service.submit("count", {"iterations": 10, "tokens_in": 200_000}, owner="ana")
        # an estimate of $0 passes and spends nothing; a $0.15-an-iteration job is stopped
        job = rig.service.submit("count", {"iterations": 10, "tokens_in": 0}, owner="ana")
        rig.jobs.charge_owner("ana", 0.9)
        wait_for(lambda: rig.status(job.id).is_final)
        assert rig.status(job.id) is JobStatus.COMPLETED  # spent nothing: not stopped
        spender = rig.service.submit("count", {"iterations": 5, "tokens_out": 50_000},
                                     owner="bo")
        rig.jobs.charge_owner("bo", 0.9)
        wait_for(lambda: rig.status(spender.id).is_final)
        stopped = rig.jobs.get(spender.id)
        assert stopped.status is JobStatus.BUDGET_EXCEEDED and stopped.iteration == 1
        assert "over the monthly budget of $1.00" in stopped.status_reason  # type: ignore[operator]
        with pytest.raises(BudgetRefusedError, match=r"owner 'bo' has spent \$1.05"):
            rig.service.submit("count", {"iterations": 1}, owner="bo")
    finally:
        rig.pool.stop(grace_s=2)
    # the owner's month can run out between submission and claim: refused at claim time
    late = rig.service.submit("count", {"iterations": 1}, owner="cy")
    rig.jobs.charge_owner("cy", 1.0)
    idle = WorkerPool(rig.jobs, rig.pool.launcher, rig.pool.config)
    assert idle.tick() == []
    refused = rig.jobs.get(late.id)
    assert refused.status is JobStatus.BUDGET_EXCEEDED and refused.attempts == 0


def test_concurrency_limits(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    rig = Rig(sqlite_store, tmp_path, max_workers=3, max_per_owner=2)
    gate = rig.gate("hold")
    ids = [rig.service.submit("count", {"iterations": 1, "gate": "hold"}, owner=o).id
           for o in ("ana", "ana", "ana", "bo", "bo")]
    assert rig.pool.tick() == [ids[0], ids[1], ids[3]]  # ana capped at 2, server at 3
    assert rig.pool.tick() == []
    for _ in range(10):
        gate.set()
        time.sleep(0.02)
    wait_for(lambda: all(rig.status(i) is JobStatus.COMPLETED for i in (ids[0], ids[1], ids[3])))
    assert sorted(rig.pool.tick()) == sorted([ids[2], ids[4]])
    for _ in range(10):
        gate.set()
        time.sleep(0.02)
    wait_for(lambda: all(rig.status(i) is JobStatus.COMPLETED for i in ids))
    rig.pool.stop(grace_s=1)


def test_job_of_a_dead_worker_is_requeued_and_resumes(rig: Rig) -> None:
    job = rig.service.submit("count", {"iterations": 3}, owner="ana")
    rig.pool.stop(grace_s=1)  # nobody here runs it; another "worker" claims it and dies
    jobs = rig.jobs
    jobs.claim(job.id, "ghost")
    folder = Path(job.output_dir) / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "ckpt-000002.json").write_text(json.dumps({"iteration": 2}))
    fresh = WorkerPool(jobs, rig.pool.launcher, rig.pool.config)
    fresh.start()
    try:
        wait_for(lambda: rig.status(job.id) is JobStatus.COMPLETED)
    finally:
        fresh.stop(grace_s=1)
    assert rig.counting.started == [(job.id, 2)]
    assert rig.jobs.get(job.id).attempts == 2


def test_shutdown_requeues_running_jobs(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    rig = Rig(sqlite_store, tmp_path)
    rig.pool.start()
    job = rig.service.submit("count", {"iterations": 1000, "sleep_s": 0.01})
    wait_for(lambda: rig.jobs.get(job.id).iteration >= 2)
    rig.pool.stop(grace_s=5)
    stopped = rig.jobs.get(job.id)
    assert stopped.status is JobStatus.QUEUED and "shut down" in stopped.status_reason  # type: ignore[operator]
