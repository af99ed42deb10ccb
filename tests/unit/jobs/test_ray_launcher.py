"""Job workers as Ray actors: the pool runs real jobs through them, stop requeues."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from learnloop.errors import ConfigError
from learnloop.jobs import JobService, JobStatus, JobStore, PoolConfig, WorkerPool, default_runners
from learnloop.jobs.ray_launcher import RayConnection, RayLauncher
from learnloop.store import SqliteStore


def wait_for(check: Callable[[], bool], timeout: float, tick: Callable[[], object]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        tick()
        time.sleep(0.05)


def test_relative_sqlite_paths_are_refused_before_ray_starts() -> None:
    for url in ("sqlite:///jobs.db", "jobs.db"):
        with pytest.raises(ConfigError, match="relative SQLite path"):
            RayLauncher(url)


def test_connection_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="num_cpus"):
        RayConnection(num_cpus=0)
    with pytest.raises(ConfigError, match="address is empty"):
        RayConnection(address="")


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RayLauncher, Path]]:
    if not os.environ.get("CI"):
        pytest.importorskip("ray", reason="ray is not installed: pip install 'learnloop[ray]'")
    path = tmp_path_factory.mktemp("ray-jobs") / "jobs.db"
    SqliteStore(path).close()  # schema created once, before the actors open it
    launcher = RayLauncher(f"sqlite:///{path}", heartbeat_s=0.2,
                           connection=RayConnection(num_cpus=2, log_to_driver=False))
    yield launcher, path
    launcher.close()


@pytest.mark.ray
@pytest.mark.slow
def test_pool_runs_jobs_in_ray_actors_and_stop_requeues(launcher, tmp_path: Path) -> None:
    ray_launcher, path = launcher
    store = SqliteStore(path)
    jobs = JobStore(store)
    config = PoolConfig(max_workers=2, max_per_owner=10, poll_s=0.05, heartbeat_s=0.2,
                        stale_after_s=5.0)
    pool = WorkerPool(jobs, ray_launcher, config)
    service = JobService(jobs, default_runners(), jobs_dir=tmp_path / "jobs")
    quick = [service.submit("bandit", {"decisions": 40, "iterations": 2, "record": True,
                                       "policy": "epsilon_greedy"}, owner="ana")
             for _ in range(3)]
    wait_for(lambda: all(jobs.get(j.id).status is JobStatus.COMPLETED for j in quick), 120,
             pool.tick)
    for job in quick:
        done = jobs.get(job.id)
        assert done.attempts == 1 and done.iteration == 2
        assert done.worker_id is not None and done.worker_id.startswith(pool.pool_id)
        # each run recorded its 40 decisions once, from the actor's own connection
        recorded = [e for e in store.query_episodes() if e.metadata.get("job_id") == job.id]
        assert len(recorded) == 40
    wait_for(lambda: not pool.running, 30, pool.tick)  # finished actors are reaped

    long = service.submit("bandit", {"decisions": 200_000, "iterations": 200,
                                     "policy": "epsilon_greedy"}, owner="ana")
    wait_for(lambda: jobs.get(long.id).iteration >= 1, 120, pool.tick)
    pool.stop(grace_s=60)  # terminate: the actor checkpoints and hands the job back
    stopped = jobs.get(long.id)
    assert stopped.status is JobStatus.QUEUED and 1 <= stopped.iteration < 200
    assert stopped.checkpoints and not pool.running
    store.close()
