from __future__ import annotations

import threading
from pathlib import Path

import pytest

from learnloop.errors import JobError, NotFoundError
from learnloop.jobs.model import (
    FINAL_STATUSES,
    JOB_METRICS,
    JobStatus,
    JobStore,
    Request,
    check_transition,
    new_job_id,
)
from learnloop.store import SqliteStore


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def jobs(sqlite_store: SqliteStore, clock: Clock) -> JobStore:
    return JobStore(sqlite_store, clock=clock)


def _job(jobs: JobStore, owner: str = "ana") -> str:
    return jobs.create("ppo", {"run": {}}, owner=owner, output_dir="/tmp/x", total_iterations=5).id


def test_ids_sort_by_creation_time() -> None:
    assert new_job_id(1.0) < new_job_id(2.0)


def test_final_statuses_allow_no_transition() -> None:
    for status in FINAL_STATUSES:
        for target in JobStatus:
            with pytest.raises(JobError, match=f"is {status.value} and cannot become"):
                check_transition("j", status, target)
    check_transition("j", JobStatus.PAUSED, JobStatus.QUEUED)
    with pytest.raises(JobError, match="resume it first"):
        check_transition("j", JobStatus.PAUSED, JobStatus.RUNNING)


def test_create_get_list(jobs: JobStore) -> None:
    first, second = _job(jobs, "ana"), _job(jobs, "bo")
    assert jobs.get(first).status is JobStatus.QUEUED
    assert [j.id for j in jobs.list_jobs()] == sorted([first, second])
    assert [j.id for j in jobs.list_jobs(owner="bo")] == [second]
    assert jobs.list_jobs(status="running") == []
    with pytest.raises(NotFoundError, match="no job with id 'nope'"):
        jobs.get("nope")
    assert jobs.count_by_status()[JobStatus.QUEUED] == 2


def test_claim_is_exclusive_across_threads(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    setup = SqliteStore(path)
    ids = [_job(JobStore(setup)) for _ in range(20)]
    wins: dict[str, list[str]] = {i: [] for i in ids}
    lock = threading.Lock()

    def worker(name: str) -> None:
        store = SqliteStore(path)  # its own connection pool, as another process would have
        mine = JobStore(store)
        for job_id in ids:
            if mine.claim(job_id, name) is not None:
                with lock:
                    wins[job_id].append(name)
        store.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(winners) == 1 for winners in wins.values()), wins
    final = JobStore(setup)
    assert all(final.get(i).worker_id == wins[i][0] and final.get(i).attempts == 1 for i in ids)
    setup.close()


def test_pause_resume_cancel_of_a_queued_job(jobs: JobStore) -> None:
    job_id = _job(jobs)
    assert jobs.pause(job_id).status is JobStatus.PAUSED
    assert jobs.claim(job_id, "w") is None  # paused jobs are not claimable
    assert jobs.resume(job_id).status is JobStatus.QUEUED
    assert jobs.cancel(job_id).status is JobStatus.CANCELLED
    with pytest.raises(JobError, match="already cancelled; only queued, running or paused"):
        jobs.cancel(job_id)
    with pytest.raises(JobError, match="cannot be resumed"):
        jobs.resume(job_id)


def test_running_jobs_get_requests(jobs: JobStore) -> None:
    job_id = _job(jobs)
    jobs.claim(job_id, "w")
    paused = jobs.pause(job_id)
    assert paused.status is JobStatus.RUNNING and paused.requested is Request.PAUSE
    assert jobs.resume(job_id).requested is None  # withdrawn before the worker saw it
    assert jobs.cancel(job_id).requested is Request.CANCEL
    with pytest.raises(JobError, match="being cancelled"):
        jobs.pause(job_id)
    with pytest.raises(JobError, match="not paused"):
        jobs.resume(job_id)


def test_completed_job_cannot_resume_or_cancel(jobs: JobStore) -> None:
    job_id = _job(jobs)
    jobs.claim(job_id, "w")
    done = jobs.transition(job_id, JobStatus.COMPLETED)
    assert done.finished_at is not None
    with pytest.raises(JobError, match="completed and cannot be resumed; start a new job"):
        jobs.resume(job_id)
    with pytest.raises(JobError, match="already completed"):
        jobs.cancel(job_id)
    with pytest.raises(JobError, match="cannot become running"):
        jobs.transition(job_id, JobStatus.RUNNING)


def test_heartbeat_of_a_foreign_worker_is_refused(jobs: JobStore) -> None:
    job_id = _job(jobs)
    jobs.claim(job_id, "w1")
    assert jobs.heartbeat(job_id, "w1").worker_id == "w1"
    with pytest.raises(JobError, match="this worker must stop"):
        jobs.heartbeat(job_id, "w2")


def test_stale_jobs_are_requeued_then_failed(jobs: JobStore, clock: Clock) -> None:
    job_id = _job(jobs)
    jobs.claim(job_id, "w1")
    clock.now += 5
    assert jobs.requeue_stale(stale_after_s=10, max_attempts=2) == []
    clock.now += 10
    assert jobs.requeue_stale(stale_after_s=10, max_attempts=2) == [job_id]
    job = jobs.get(job_id)
    assert job.status is JobStatus.QUEUED and "no heartbeat for more than 10 s" in job.status_reason
    jobs.claim(job_id, "w2")
    clock.now += 11
    jobs.requeue_stale(stale_after_s=10, max_attempts=2)
    job = jobs.get(job_id)
    assert job.status is JobStatus.FAILED and job.attempts == 2
    assert "gave up after 2 attempts" in job.error["message"]  # type: ignore[index]


def test_stale_job_with_a_pause_request_becomes_paused(jobs: JobStore, clock: Clock) -> None:
    job_id = _job(jobs)
    jobs.claim(job_id, "w1")
    jobs.pause(job_id)
    clock.now += 100
    jobs.requeue_stale(stale_after_s=10, max_attempts=3)
    assert jobs.get(job_id).status is JobStatus.PAUSED


def test_record_iteration_keeps_the_status_document_small(jobs: JobStore) -> None:
    job_id = _job(jobs)
    jobs.claim(job_id, "w")
    for i in range(1, 31):
        jobs.record_iteration(job_id, "w", iteration=i, metrics={"loss": 1.0 / i},
                              score=float(i % 7),
                              checkpoint={"iteration": i, "path": f"/c/{i}", "score": None})
    job = jobs.get(job_id)
    assert job.iteration == 30 and job.best_score == 6.0 and job.latest_score == 2.0
    assert len(job.checkpoints) == 20 and job.checkpoints[-1]["path"] == "/c/30"
    assert job.latest_metrics == {"loss": 1.0 / 30}
    rows = jobs.metrics(job_id)
    assert [r["iteration"] for r in rows] == list(range(1, 31))
    assert [r["iteration"] for r in jobs.metrics(job_id, limit=2)] == [29, 30]
    assert len(jobs.store.list_documents(JOB_METRICS)) == 30
    with pytest.raises(JobError):
        jobs.record_iteration(job_id, "other", iteration=31, metrics={})


def test_owner_ledger_is_per_month(jobs: JobStore, clock: Clock) -> None:
    assert jobs.owner_spent("ana") == 0.0
    assert jobs.charge_owner("ana", 1.5) == 1.5
    assert jobs.charge_owner("ana", 0.25) == 1.75
    assert jobs.owner_spent("bo") == 0.0
    clock.now += 40 * 86400  # next month
    assert jobs.owner_spent("ana") == 0.0
    assert jobs.owner_spent("ana", "2023-11") == 1.75


def test_live_workers_are_not_requeued_while_starting(jobs: JobStore, clock: Clock) -> None:
    job_id = _job(jobs)
    jobs.claim(job_id, "slow-starter")
    clock.now += 100
    assert jobs.requeue_stale(stale_after_s=10, max_attempts=3,
                              alive_workers=frozenset({"slow-starter"})) == []
    assert jobs.requeue_stale(stale_after_s=10, max_attempts=3) == [job_id]
