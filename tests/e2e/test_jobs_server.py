"""End to end: ``learnloop serve`` as a real process, jobs in worker processes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")

from learnloop.server import RpcClient
from learnloop.server.testing import ServerProcess
from learnloop.store import SqliteStore

TOKEN = "e2e-token"
FINAL = ("completed", "failed", "cancelled", "budget_exceeded")


def wait_all(client: RpcClient, ids: list[str], statuses: tuple[str, ...],
             timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [client.call("training.get_status", job_id=i) for i in ids]
        if all(j["status"] in statuses for j in jobs):
            return jobs
        assert time.monotonic() < deadline, [(j["status"], j["iteration"]) for j in jobs]
        time.sleep(0.2)


def test_bandit_job_in_a_worker_process(tmp_path: Path) -> None:
    with ServerProcess(store=f"sqlite:///{tmp_path / 's.db'}", token=TOKEN,
                       jobs_dir=tmp_path / "jobs", log=tmp_path / "server.log",
                       args=["--workers", "1"]) as server:
        client = RpcClient(server.url, token=TOKEN)
        job_id = client.call("training.start_bandit",
                             config={"decisions": 200, "iterations": 2})["job_id"]
        (job,) = wait_all(client, [job_id], FINAL, timeout=60)
        assert job["status"] == "completed", job
        assert job["worker_id"].startswith(("vm-", "")) and job["attempts"] == 1
        evaluation = client.call("training.evaluate", job_id=job_id)  # a separate process
        assert evaluation["iteration"] == 2 and 0 <= evaluation["score"] <= 1
        assert "learnloop_jobs{status=\"completed\"} 1.0" in __import__(
            "urllib.request").request.urlopen(server.url + "/metrics").read().decode()


@pytest.mark.slow
def test_kill_9_of_the_server_during_4_jobs_then_all_resume(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 's.db'}"
    args = ["--workers", "4", "--max-per-owner", "4", "--heartbeat-s", "0.5",
            "--stale-after-s", "3"]
    config = {"run": {"env": "CartPole-v1", "iterations": 12, "checkpoint_every": 3,
                      "eval_every": 6, "eval_episodes": 2, "record": False},
              "algo": {"num_envs": 2, "num_steps": 32, "num_epochs": 2}}
    server = ServerProcess(store=store_url, token=TOKEN, jobs_dir=tmp_path / "jobs",
                           log=tmp_path / "server.log", args=args).start()
    try:
        client = RpcClient(server.url, token=TOKEN)
        ids = [client.call("training.start_ppo", config=config)["job_id"] for _ in range(4)]
        acknowledged = []
        deadline = time.monotonic() + 300
        while True:
            batch = [{"id": f"ep-{len(acknowledged)}-{i}", "task": "t", "status": "success",
                      "steps": [{"index": 0, "action": "a", "reward": 1.0}]} for i in range(5)]
            client.call("episodes.record", episodes=batch)
            acknowledged += [e["id"] for e in batch]
            jobs = [client.call("training.get_status", job_id=i) for i in ids]
            if all(j["status"] == "running" and j["checkpoints"] for j in jobs):
                break
            assert time.monotonic() < deadline, [(j["status"], j["iteration"]) for j in jobs]
            time.sleep(0.2)
        at_kill = {j["id"]: j["checkpoints"][-1]["iteration"] for j in jobs}
    finally:
        server.kill()
    with ServerProcess(store=store_url, token=TOKEN, jobs_dir=tmp_path / "jobs",
                       log=tmp_path / "server.log", args=args) as server:
        client = RpcClient(server.url, token=TOKEN)
        jobs = wait_all(client, ids, FINAL, timeout=600)
    for job in jobs:
        assert job["status"] == "completed", job
        assert job["attempts"] == 2 and job["iteration"] == 12
        summary = job["result"]["summary"]
        # resumed from the checkpoint it had when the server died (or a later one it
        # wrote before the kill landed)
        assert summary["resumed_from"] >= at_kill[job["id"]] > 0
        assert summary["iterations"] == 12
        assert job["registered"]["version"] >= 1
    store = SqliteStore(tmp_path / "s.db")
    try:
        stored = {e.id for e in store.iter_episodes()}
    finally:
        store.close()
    assert set(acknowledged) <= stored
    log = (tmp_path / "jobs" / ids[0] / "worker.log").read_text()
    assert "resumed from iteration" in log
    assert json.loads(json.dumps(jobs))  # plain JSON all the way
