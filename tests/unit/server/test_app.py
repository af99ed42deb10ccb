"""The JSON-RPC app in-process (Starlette's TestClient), jobs run by the counting runner."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from jobs.fakes import BUDGETS, CountingRunner, Gate, runners_with
from starlette.testclient import TestClient

from learnloop.jobs import PoolConfig
from learnloop.server import ServerConfig, create_app
from learnloop.store import SqliteStore

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Api:
    def __init__(self, client: TestClient, counting: CountingRunner, store: SqliteStore) -> None:
        self.client = client
        self.counting = counting
        self.store = store

    def raw(self, body: Any, headers: dict[str, str] | None = None) -> Any:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post("/rpc", content=content, headers=headers if headers is not None
                                else AUTH)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        answer = self.raw({"jsonrpc": "2.0", "method": method, "params": params, "id": 7})
        assert answer.status_code == 200
        body: dict[str, Any] = answer.json()
        assert body["jsonrpc"] == "2.0" and body["id"] == 7
        return body

    def ok(self, method: str, **params: Any) -> Any:
        body = self.call(method, **params)
        assert "result" in body, body
        return body["result"]

    def error(self, method: str, **params: Any) -> dict[str, Any]:
        body = self.call(method, **params)
        assert "error" in body, body
        error: dict[str, Any] = body["error"]
        return error

    def wait(self, job_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.ok("training.get_status", job_id=job_id)
            if job["status"] == status:
                return job
            assert time.monotonic() < deadline, job
            time.sleep(0.02)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    store = SqliteStore(tmp_path / "server.db")
    counting = CountingRunner()
    # the counting runner stands in for ppo so the tests need no torch
    runners = runners_with(counting).with_runner("ppo", counting)
    config = ServerConfig(
        token=TOKEN, jobs_dir=str(tmp_path / "jobs"), launcher="thread", max_body_bytes=64_000,
        pool=PoolConfig(poll_s=0.02, heartbeat_s=0.05, stale_after_s=0.5, budgets=BUDGETS),
    )
    app = create_app(config, store=store, runners=runners)
    with TestClient(app) as client:
        yield Api(client, counting, store)
    store.close()


def test_auth_is_required_and_checked(api: Api) -> None:
    body = {"jsonrpc": "2.0", "method": "training.list", "id": 1}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        answer = api.raw(body, headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["error"]["code"] == -32001
    assert api.raw(body).status_code == 200
    assert api.client.get("/healthz").json()["status"] == "ok"  # open by design


def test_transport_errors_are_json_rpc_errors(api: Api) -> None:
    bad_json = api.raw(b'{"jsonrpc": "2.0", "method": ')
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == -32700
    huge = api.raw(b"[" + b"1," * 40_000 + b"1]")
    assert huge.status_code == 413 and "larger than 64000 bytes" in huge.json()["error"]["message"]
    assert api.raw([]).json()["error"]["code"] == -32600
    envelope = api.raw({"jsonrpc": "1.0", "method": "training.list", "id": 3}).json()
    assert envelope["id"] == 3 and envelope["error"]["code"] == -32600
    assert "request.jsonrpc" in envelope["error"]["message"]
    unknown = api.error("training.fly")
    assert unknown["code"] == -32601 and "'training.fly'" in unknown["message"]


def test_params_are_validated_and_named(api: Api) -> None:
    wrong_type = api.error("training.get_status", job_id=12)
    assert wrong_type["code"] == -32602
    assert wrong_type["message"].startswith("params.job_id: Input should be a valid string")
    missing = api.error("training.get_status")
    assert missing["data"] == {"field": "params.job_id"}
    extra = api.error("training.list", colour="red")
    assert "params.colour" in extra["message"]
    bad_budget = api.error("training.start_bandit", config={}, budget={"max_cost_usd": -1})
    assert "params.budget.max_cost_usd" in bad_budget["message"]
    bad_config = api.error("training.start_bandit", config={"decisions": "many"})
    assert bad_config["code"] == -32602 and "config.decisions must be a number" in \
        bad_config["message"]
    assert api.error("training.get_status", job_id="nope")["code"] == -32002


def test_batches_and_notifications(api: Api) -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "training.list", "id": 1},
        {"jsonrpc": "2.0", "method": "training.list"},  # notification: no answer
        {"jsonrpc": "2.0", "method": "nope", "id": "b"},
        42,
    ]
    answers = api.raw(batch).json()
    assert [a.get("id") for a in answers] == [1, "b", None]
    assert "result" in answers[0] and answers[1]["error"]["code"] == -32601
    assert answers[2]["error"]["code"] == -32600
    only_notes = api.raw({"jsonrpc": "2.0", "method": "training.list"})
    assert only_notes.status_code == 204
    positional = api.raw({"jsonrpc": "2.0", "method": "training.get_status",
                          "params": ["nope"], "id": 9}).json()
    assert positional["error"]["code"] == -32002


def test_job_lifecycle_over_rpc(api: Api) -> None:
    gate = api.counting.events.setdefault("g", Gate())
    started = api.ok("training.start_ppo", config={"iterations": 3, "gate": "g"}, owner="ana")
    job_id = started["job_id"]
    assert started["status"] == "queued" and started["total_iterations"] == 3
    api.wait(job_id, "running")
    gate.set()
    deadline = time.monotonic() + 10
    while api.ok("training.get_status", job_id=job_id)["iteration"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    paused = api.ok("training.pause", job_id=job_id)  # the runner waits at iteration 2
    assert paused["requested"] == "pause" and "next iteration boundary" in paused["message"]
    gate.set()
    assert api.wait(job_id, "paused")["iteration"] == 2
    assert api.ok("training.resume", job_id=job_id)["status"] == "queued"
    gate.set()
    done = api.wait(job_id, "completed")
    assert done["iteration"] == 3 and done["registered"]["version"] == 1
    with_metrics = api.ok("training.get_status", job_id=job_id, metrics_limit=2)
    assert [m["iteration"] for m in with_metrics["metrics"]] == [2, 3]
    resume = api.error("training.resume", job_id=job_id)
    assert resume["code"] == -32003 and "completed and cannot be resumed" in resume["message"]
    cancel = api.error("training.cancel", job_id=job_id)
    assert cancel["code"] == -32003 and "already completed" in cancel["message"]
    evaluation = api.ok("training.evaluate", job_id=job_id, checkpoint="latest")
    assert evaluation == {"iteration": 3, "which": "latest", "score": 3.0}
    listed = api.ok("training.list", owner="ana")
    assert listed["total"] == 1 and listed["jobs"][0]["status"] == "completed"
    # the registry operations the CLI has are here too
    assert api.ok("registry.list")["resources"][0]["name"] == "counting-policy"
    version = api.ok("registry.get", name="counting-policy", ref="candidate")
    assert version["version"] == 1 and version["labels"]["candidate"] == 1
    label = api.ok("registry.set_label", name="counting-policy", label="production", version=1)
    assert label["version"] == 1


def test_cancel_queued_and_apo_not_available(api: Api) -> None:
    api.counting.events.setdefault("never", Gate())
    first = api.ok("training.start_ppo", config={"iterations": 2, "gate": "never"})
    queued = [api.ok("training.start_ppo", config={"iterations": 2, "gate": "never"}, owner=o)
              for o in ("x", "x")]
    listed = api.ok("training.list", status="queued")
    assert listed["total"] >= 1
    cancelled = api.ok("training.cancel", job_id=queued[-1]["job_id"])
    assert cancelled["status"] in ("cancelled", "running")
    apo = api.error("training.start_apo", config={"generations": 0})
    assert apo["code"] == -32602 and "generations must be >= 1" in apo["message"]
    for job in (first, *queued):
        api.ok("training.get_status", job_id=job["job_id"])
    refused = api.error("training.start_ppo", config={"iterations": 10, "tokens_in": 10**6},
                        budget={"max_cost_usd": 1.0})
    assert refused["code"] == -32005 and "estimated cost $10.0000" in refused["message"]
    for _ in range(10):
        api.counting.events["never"].set()
        time.sleep(0.02)


def test_episodes_record_is_durable_and_exportable(api: Api) -> None:
    episodes = [{"id": f"e{i}", "task": f"task {i}", "agent_id": "remote",
                 "status": "success", "started_at": float(i), "metadata": {"job_id": "j-1"},
                 "steps": [{"index": 0, "action": "call grep", "tool": "grep", "reward": 1.0}]}
                for i in range(5)]
    assert api.ok("episodes.record", episodes=episodes) == {"episodes": 5, "steps": 5,
                                                             "stored": 5}
    stored = api.store.get_episode("e3")  # committed before the answer came back
    assert stored.steps[0].tool == "grep" and stored.total_reward == 1.0
    appended = api.ok("episodes.record", steps=[{"episode_id": "e3", "step": {
        "index": 0, "action": "call sed", "reward": 0.5}}])
    assert appended["steps"] == 1
    assert [s.action for s in api.store.get_episode("e3").steps] == ["call grep", "call sed"]
    assert api.store.get_episode("e3").steps[1].index == 1
    missing = api.error("episodes.record", steps=[{"episode_id": "zz", "step": {
        "index": 0, "action": "x"}}])
    assert missing["code"] == -32002 and "'zz'" in missing["message"]
    bad = api.error("episodes.record", episodes=[{"id": "b", "task": "t", "steps": [
        {"index": 0, "action": "x", "confidence": 2}]}])
    assert bad["message"].startswith("params.episodes.0.steps.0.confidence")
    assert api.store.count_episodes() == 5  # nothing of the bad batch was written
    page = api.ok("training.export_trajectories", filter={"agent_id": "remote"}, limit=2)
    assert page["count"] == 2 and page["next_cursor"] == 2
    ids = [json.loads(line)["id"] for line in page["jsonl"].splitlines()]
    cursor = page["next_cursor"]
    while cursor is not None:
        page = api.ok("training.export_trajectories", filter={"agent_id": "remote"}, limit=2,
                      cursor=cursor)
        ids += [json.loads(line)["id"] for line in page["jsonl"].splitlines()]
        cursor = page["next_cursor"]
    assert ids == [f"e{i}" for i in range(5)]
    streamed = api.client.get("/export.jsonl", params={"agent_id": "remote"}, headers=AUTH)
    assert [json.loads(x)["id"] for x in streamed.text.splitlines()] == ids
    assert api.client.get("/export.jsonl").status_code == 401
    metrics = api.client.get("/metrics").text
    assert "learnloop_episodes_ingested_total 5.0" in metrics
    assert "learnloop_steps_ingested_total 6.0" in metrics


def test_export_of_a_job(api: Api) -> None:
    job = api.ok("training.start_ppo", config={"iterations": 1})
    api.wait(job["job_id"], "completed")
    api.ok("episodes.record", episodes=[{"id": "mine", "task": "t",
                                         "metadata": {"job_id": job["job_id"]}},
                                        {"id": "other", "task": "t"}])
    page = api.ok("training.export_trajectories", job_id=job["job_id"])
    assert [json.loads(x)["id"] for x in page["jsonl"].splitlines()] == ["mine"]
    assert api.error("training.export_trajectories", job_id="nope")["code"] == -32002


def test_experiments_methods(api: Api) -> None:
    from learnloop.registry import Registry

    registry = Registry(api.store)
    registry.register("planner", "Plan.")
    registry.register_candidate("planner", "Plan. Verify.", source="test")
    registry.set_label("planner", "production", 1)
    started = api.ok("experiments.start", name="ab", resource="planner", split=0.2, salt="s")
    assert started["status"] == "running" and started["traffic"] == 0.2
    assert api.ok("experiments.status", name="ab")["candidate"] == 2
    stopped = api.ok("experiments.stop", name="ab", winner="candidate", reason="test")
    assert stopped["status"] == "completed"
    assert registry.resolve("planner", "production") == 2
    rollout = api.ok("experiments.start", name="ro", resource="planner", baseline=1,
                     candidate=2, rollout=True,
                     rollout_policy={"stages": [0.5, 1.0], "min_samples_per_stage": 1,
                                     "min_duration_s": 0})
    assert rollout["traffic"] == 0.5
    decision = api.ok("experiments.step_rollout", name="ro")
    assert decision["action"] in ("hold", "advance", "complete")
    bad = api.error("experiments.start", name="x", resource="planner", split=1.5)
    assert bad["code"] == -32602 and "params.split" in bad["message"]
    bad = api.error("experiments.start", name="x", resource="planner", rollout=True,
                    rollout_policy={"stages": "fast"})
    assert bad["code"] == -32602
    assert api.error("experiments.status", name="none")["code"] == -32002


def test_openrpc_lists_every_method(api: Api) -> None:
    document = api.client.get("/openrpc.json").json()
    names = {m["name"] for m in document["methods"]}
    assert {"training.start_grpo", "training.start_ppo", "training.start_apo",
            "training.start_bandit", "training.get_status", "training.list", "training.cancel",
            "training.pause", "training.resume", "training.evaluate",
            "training.export_trajectories", "episodes.record", "registry.list", "registry.get",
            "registry.set_label", "experiments.start", "experiments.status", "experiments.stop",
            "experiments.step_rollout", "rpc.discover"} <= names
    status = next(m for m in document["methods"] if m["name"] == "training.get_status")
    assert {p["name"]: p["required"] for p in status["params"]} == {"job_id": True,
                                                                    "metrics_limit": False}
    assert api.ok("rpc.discover")["openrpc"] == "1.3.2"
    text = json.dumps(document)
    assert "#/$defs/" not in text and "#/components/schemas/" in text


def test_metrics_exposition(api: Api) -> None:
    api.ok("training.list")
    text = api.client.get("/metrics").text
    assert 'learnloop_jobs{status="queued"}' in text
    assert 'learnloop_rpc_requests_total{method="training.list",outcome="ok"}' in text
    assert "learnloop_rpc_request_seconds_bucket" in text


def test_fuzzed_requests_never_crash_the_server(api: Api) -> None:
    rng = random.Random(7)
    methods = ["training.get_status", "training.list", "training.start_bandit",
               "episodes.record", "training.pause", "registry.get", "x.y", ""]
    values: list[Any] = [None, True, -1, 2**70, 1.5, "", "a" * 300, [], {}, [1, {}],
                         {"job_id": None}, {"config": [1]}, float("inf")]
    count = 0
    for i in range(200):
        kind = i % 5
        headers = AUTH
        if kind == 0:
            body: Any = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
        elif kind == 1:
            body = {"jsonrpc": "2.0", "method": rng.choice(methods),
                    "params": rng.choice(values), "id": rng.choice([1, "x", None, [], 1.5])}
        elif kind == 2:
            params = {rng.choice(["job_id", "config", "episodes", "limit", "status", "name"]):
                      rng.choice(values) for _ in range(3)}
            body = {"jsonrpc": "2.0", "method": rng.choice(methods), "params": params, "id": i}
        elif kind == 3:
            body = {"jsonrpc": "2.0", "method": "training.list", "id": i}
            headers = {"Authorization": rng.choice(["", "Bearer", "Bearer x" * 10, "Token t"])}
        else:
            body = [rng.choice(values) for _ in range(rng.randrange(1, 4))]
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer = api.client.post("/rpc", content=content, headers=headers)
        assert answer.status_code in (200, 400, 401, 413), answer.text
        payload = answer.json()
        for item in payload if isinstance(payload, list) else [payload]:
            assert item["jsonrpc"] == "2.0"
            assert "result" in item or isinstance(item["error"]["code"], int)
        count += 1
    assert count == 200
    assert api.client.get("/healthz").status_code == 200
    assert "result" in api.call("training.list")
