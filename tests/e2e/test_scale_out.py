"""Scaling out on one machine standing in for several: PostgreSQL, Redis, worker processes.

* the replica of docs/scaling.md, run as written in two processes, records into
  one PostgreSQL store and learns into one Redis policy: the totals add up;
* 4 worker processes, each a WorkerPool, share one PostgreSQL job queue: 40 jobs
  each run exactly once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"

# One worker process: a pool that runs jobs in threads until the queue is empty;
# prints the ids of the jobs it claimed.
WORKER = """
import json, sys, time
from learnloop.jobs import JobStatus, JobStore, PoolConfig, ThreadLauncher, WorkerPool
from learnloop.store import open_store

store = open_store(sys.argv[1])
jobs = JobStore(store)
config = PoolConfig(max_workers=1, max_per_owner=100, poll_s=0.05, heartbeat_s=0.5,
                    stale_after_s=60.0)
pool = WorkerPool(jobs, ThreadLauncher(store, heartbeat_s=0.5), config)
claimed, deadline = [], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    claimed += pool.tick()
    if not pool.running and not jobs.list_jobs(status=JobStatus.QUEUED, limit=1):
        break
    time.sleep(0.02)
pool.stop(grace_s=10)
store.close()
print(json.dumps(claimed))
"""


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    from pg_service import postgres_url_for_tests

    url, server = postgres_url_for_tests()
    if server is not None:
        url = server.create_database("scale_out")
    try:
        yield url
    finally:
        if server is not None:
            server.stop()


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    from pg_service import drop_schemas, new_schema

    schema, url = new_schema(postgres_database)
    yield url
    drop_schemas(postgres_database, [schema])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        reason = "redis-server binary not found (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    redis = pytest.importorskip("redis")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_every_example_of_the_doc_compiles_and_imports_what_exists() -> None:
    import importlib

    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 3
    for block in blocks:
        compile(block, str(DOC), "exec")
        for module, names in re.findall(r"^from (\S+) import (.+)$", block, re.M):
            imported = importlib.import_module(module)
            for name in names.split(","):
                assert hasattr(imported, name.strip()), (module, name)


@pytest.mark.postgres
@pytest.mark.redis
def test_two_replicas_share_one_store_and_one_policy(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    script = tmp_path / "replica.py"
    script.write_text(blocks[0])
    from learnloop.store import open_store

    open_store(postgres_url).close()  # as `learnloop episodes stats` would: tables exist
    env = {**os.environ, "LEARNLOOP_STORE": postgres_url}
    replicas = [
        subprocess.Popen([sys.executable, str(script), redis_url, str(n)], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in (1, 2)
    ]
    printed = []
    for replica in replicas:
        out, err = replica.communicate(timeout=180)
        assert replica.returncode == 0, err
        printed.append(int(out.split()[-1]))
    assert max(printed) == 200 and min(printed) >= 100

    from learnloop.bandits.redis_state import RedisPolicyConfig, RedisPolicyState, connect_redis
    from learnloop.cli.main import main
    from learnloop.store import EpisodeQuery

    store = open_store(postgres_url)
    assert store.count_episodes() == 200
    for n in (1, 2):
        mine = store.query_episodes(EpisodeQuery(agent_id=f"replica-{n}"))
        assert len(mine) == 100 and all(len(e.steps) == 1 for e in mine)
    store.close()
    shared = RedisPolicyState(connect_redis(redis_url), RedisPolicyConfig(name="support-agent"))
    assert shared.num_updates() == 200
    shared.close()
    assert main(["episodes", "stats", "--store", postgres_url, "--agent", "replica-1",
                 "--json"]) == 0


@pytest.mark.postgres
@pytest.mark.slow
def test_four_worker_processes_run_forty_jobs_exactly_once(
    postgres_url: str, tmp_path: Path
) -> None:
    from learnloop.jobs import JobService, JobStatus, JobStore, default_runners
    from learnloop.store import open_store

    store = open_store(postgres_url)
    jobs = JobStore(store)
    service = JobService(jobs, default_runners(), jobs_dir=tmp_path / "jobs")
    config = {"decisions": 5, "iterations": 1, "record": True, "policy": "epsilon_greedy"}
    ids = [service.submit("bandit", config, owner=f"owner-{i % 4}").id for i in range(40)]
    started = time.monotonic()
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, postgres_url, "240"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    claimed: list[list[str]] = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
        claimed.append(json.loads(out.splitlines()[-1]))
    elapsed = time.monotonic() - started
    everything = [job for share in claimed for job in share]
    assert sorted(everything) == sorted(ids)  # every job claimed, none twice
    assert sum(1 for share in claimed if share) >= 2, claimed  # the work was shared
    runs: dict[str, int] = {}
    for episode in store.iter_episodes():
        job_id = episode.metadata.get("job_id")
        runs[job_id] = runs.get(job_id, 0) + 1
    for job_id in ids:
        job = jobs.get(job_id)
        assert job.status is JobStatus.COMPLETED and job.attempts == 1, job.to_dict()
        assert runs.get(job_id) == 5  # its 5 decisions, recorded once: the job ran once
    store.close()
    print(f"40 jobs on 4 worker processes: {elapsed:.1f} s, per process {list(map(len, claimed))}")
