"""Prompt optimization: the full loop on the embedded SmolLM2, and the search on the simulator.

``real`` (default): starts SmolLM2-135M-Instruct behind xllamacpp on 127.0.0.1 and
runs :func:`learnloop.prompts.optimizer.optimize_prompt` over the built-in suite
(suite seed 0, 14 tools): worked examples come from exploration episodes of the
suite's tools, candidates from the five operators and the model's own critique,
every candidate is scored by running the agent, and the best is checked against
the starting prompt on held-out sub-tasks (paired bootstrap 95% CI). Prints the
per-generation best training score, held-out success and tool accuracy of both
prompts with their intervals, LLM calls and wall time. Every call is recorded;
``--check-replay`` then reruns the whole optimization from the recording with no
server and checks that the final prompt and every score are identical.

``structures``: how much the agent's held-out success depends on the prompt: fixed
prompt structures built from the same explored worked examples (bare; tool
descriptions; one example per tool, shuffled, as chat turns or in the system
prompt; two per tool; eight), each run on the same held-out sub-tasks.

``simulator``: the search quality on the documented prompt-sensitive simulator
(:mod:`learnloop.prompts.simulator`, not a model): for 10 seeds, held-out success
of beam, evolution and random mutation at the same number of agent runs, as a
share of the simulator's known optimum.

    .venv/bin/python benchmarks/bench_apo.py                        # the real model
    .venv/bin/python benchmarks/bench_apo.py --check-replay --json
    .venv/bin/python benchmarks/bench_apo.py structures --heldout-size 80
    .venv/bin/python benchmarks/bench_apo.py simulator
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from learnloop.envs import SuiteConfig, ToolUseSuite
from learnloop.prompts import LocalModelConfig, LocalModelServer, RecordReplayClient
from learnloop.prompts.agent import AgentConfig, LLMToolAgent
from learnloop.prompts.mutations import MutationContext
from learnloop.prompts.optimizer import (
    APOConfig,
    APOResult,
    example_pool,
    heldout_subtasks,
    optimize_prompt,
    search_prompts,
    train_batch,
)
from learnloop.prompts.simulator import PromptSensitiveSimulator
from learnloop.prompts.template import PromptTemplate, WorkedExample


def real_config(args: argparse.Namespace) -> APOConfig:
    return APOConfig(
        generations=args.generations,
        population=args.population,
        batch_size=args.batch_size,
        heldout_size=args.heldout_size,
        rewrite_share=0.15,
        budget_calls=args.budget_calls,
        seed=args.seed,
    )


def comparable(result: APOResult) -> dict[str, Any]:
    summary = result.summary()
    summary.pop("elapsed_s")
    for report in summary["per_generation"]:
        report.pop("elapsed_s")
    summary["variants"] = [v.to_dict() for v in result.search.variants]
    return summary


def bench_real(args: argparse.Namespace) -> dict[str, Any]:
    config = real_config(args)
    suite = ToolUseSuite(SuiteConfig(seed=0))
    with tempfile.TemporaryDirectory() as folder:
        recording = Path(folder) / "calls.jsonl"
        started = time.perf_counter()
        with LocalModelServer(LocalModelConfig(num_slots=args.slots)) as server:
            with server.client() as client:
                live = RecordReplayClient(client, recording, mode="record")
                result = optimize_prompt(config, client=live, suite=suite)
        wall = time.perf_counter() - started
        report: dict[str, Any] = {"wall_s": wall, "config": repr(config), **result.summary()}
        report["best_prompt"] = result.best.render_text(dict(suite.tool_descriptions))
        if args.check_replay:
            replay_started = time.perf_counter()
            replayed = optimize_prompt(
                config, client=RecordReplayClient(None, recording, mode="replay"), suite=suite
            )
            report["replay_s"] = time.perf_counter() - replay_started
            report["replay_identical"] = comparable(replayed) == comparable(result)
    return report


def structures(pool: Sequence[WorkedExample], seed: int) -> dict[str, PromptTemplate]:
    """The fixed prompt structures compared by ``structures``."""
    first: dict[str, WorkedExample] = {}
    pairs: dict[str, list[WorkedExample]] = {}
    for example in pool:
        first.setdefault(example.tool, example)
        pairs.setdefault(example.tool, []).append(example)
    per_tool = list(first.values())
    shuffled = tuple(per_tool[i] for i in np.random.default_rng(seed).permutation(len(per_tool)))
    two = [v[:2] for v in pairs.values() if len(v) >= 2]
    interleaved = tuple(e for pair in zip(*two, strict=False) for e in pair)
    base = PromptTemplate()
    return {
        "bare (the default start)": base,
        "tool descriptions": PromptTemplate(show_tool_descriptions=True),
        "1 per tool, chat turns": PromptTemplate(examples=shuffled),
        "1 per tool, system prompt": PromptTemplate(examples=shuffled, example_placement="system"),
        "1 per tool, chat + descriptions": PromptTemplate(
            examples=shuffled, show_tool_descriptions=True
        ),
        "2 per tool, chat turns": PromptTemplate(examples=interleaved),
        "2 per tool, system prompt": PromptTemplate(
            examples=interleaved, example_placement="system"
        ),
        "8 examples, chat turns": PromptTemplate(examples=shuffled[:8]),
    }


def bench_structures(args: argparse.Namespace) -> dict[str, Any]:
    from learnloop.recorder import Recorder
    from learnloop.store import SqliteStore

    suite = ToolUseSuite(SuiteConfig(seed=0))
    heldout = heldout_subtasks(suite, args.heldout_size)
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(os.path.join(folder, "episodes.db"))
        with Recorder(store) as recorder:
            batch = train_batch(suite, args.batch_size, args.seed)
            pool = example_pool(APOConfig(seed=args.seed), suite, store, recorder, batch, heldout)
        store.close()
    rows = {}
    with LocalModelServer(LocalModelConfig(num_slots=args.slots)) as server:
        with server.client() as client:
            agent = LLMToolAgent(client, suite, AgentConfig(num_workers=2, seed=args.seed))
            for name, template in structures(pool, args.seed).items():
                started = time.perf_counter()
                evaluation = agent.evaluate(template, heldout)
                rows[name] = {
                    **evaluation.summary(),
                    "wall_s": time.perf_counter() - started,
                    "top_answers": collections.Counter(
                        a.chosen for a in evaluation.attempts
                    ).most_common(3),
                }
    return {"num_heldout": len(heldout), "num_examples": len(pool), "rows": rows}


def bench_simulator(runs: int, seeds: int) -> dict[str, Any]:
    suite = ToolUseSuite(SuiteConfig(seed=0, num_tasks=600))
    start = PromptTemplate(
        instructions=("You choose the tool for a task.", "Use web_search to search the public web.")
    )
    heldout = heldout_subtasks(suite, 0)
    rows = []
    for seed in range(seeds):
        batch = train_batch(suite, 48, seed)
        texts = {s.text for s in batch}
        pool = [
            WorkedExample(task=s.text, tool=s.best_tool)
            for s in train_batch(suite, 10**9, seed + 1)
            if s.text not in texts
        ][:150]
        simulator = PromptSensitiveSimulator(suite, seed=seed)
        optimum = simulator.evaluate(simulator.optimum(pool), heldout).success
        row: dict[str, Any] = {"seed": seed, "optimum": optimum}
        for selection in ("beam", "evolution", "random"):
            config = APOConfig(
                generations=10**6,
                selection=selection,
                budget_agent_runs=runs,
                seed=seed,
                rewrite_share=0.0,
            )
            context = MutationContext(
                rng=np.random.default_rng(seed), tools=dict(suite.tool_descriptions), examples=pool
            )
            found = search_prompts(config, simulator, batch, start, context)
            row[selection] = simulator.evaluate(found.best.template, heldout).success / optimum
        rows.append(row)
    return {
        "agent_runs": runs,
        "rows": rows,
        "beam_min_share": min(r["beam"] for r in rows),
        "beam_beats_random": sum(r["beam"] > r["random"] for r in rows),
        "evolution_beats_random": sum(r["evolution"] > r["random"] for r in rows),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "what", nargs="?", default="real", choices=["real", "structures", "simulator"]
    )
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=36)
    parser.add_argument("--heldout-size", type=int, default=160)
    parser.add_argument("--budget-calls", type=int, default=1000, help="LLM calls of the search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slots", type=int, default=2, help="llama.cpp slots of the server")
    parser.add_argument("--check-replay", action="store_true")
    parser.add_argument("--runs", type=int, default=4000, help="simulator: agent runs per search")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    if args.what == "simulator":
        report = bench_simulator(args.runs, 10)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"share of the optimum's held-out success at {args.runs} agent runs")
            print(f"{'seed':>4} {'beam':>6} {'evolution':>9} {'random':>6}")
            for row in report["rows"]:
                print(
                    f"{row['seed']:>4} {row['beam']:>6.2f} {row['evolution']:>9.2f} "
                    f"{row['random']:>6.2f}"
                )
            print(
                f"beam >= {report['beam_min_share']:.2f} of the optimum; beats random in "
                f"{report['beam_beats_random']}/10 seeds (evolution "
                f"{report['evolution_beats_random']}/10)"
            )
        return 0

    if args.what == "structures":
        report = bench_structures(args)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(
                f"{report['num_heldout']} held-out sub-tasks, 14 tools, worked examples from "
                f"{report['num_examples']} explored tasks"
            )
            print(f"{'prompt':<34} {'success':>8} {'accuracy':>8} {'s':>5}  top answers")
            for name, row in report["rows"].items():
                print(
                    f"{name:<34} {row['success']:>8.3f} {row['accuracy']:>8.3f} "
                    f"{row['wall_s']:>5.0f}  {row['top_answers']}"
                )
        return 0

    report = bench_real(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{'gen':>3} {'children':>8} {'best train success':>18} {'LLM calls':>9} {'s':>6}")
        for row in report["per_generation"]:
            print(
                f"{row['generation']:>3} {row['num_children']:>8} "
                f"{row['best_train_success']:>18.3f} {row['llm_calls']:>9} "
                f"{row['elapsed_s']:>6.0f}"
            )
        for name in ("baseline", "optimized"):
            score = report[name]
            print(
                f"{name:>9}: held-out success {score['success']['mean']:.3f} "
                f"[{score['success']['ci_low']:.3f}, {score['success']['ci_high']:.3f}], "
                f"tool accuracy {score['accuracy']['mean']:.3f} "
                f"[{score['accuracy']['ci_low']:.3f}, {score['accuracy']['ci_high']:.3f}]"
            )
        diff, acc = report["difference"], report["accuracy_difference"]
        print(
            f"difference: success {diff['difference']:+.3f} [{diff['ci_low']:+.3f}, "
            f"{diff['ci_high']:+.3f}], accuracy {acc['difference']:+.3f} "
            f"[{acc['ci_low']:+.3f}, {acc['ci_high']:+.3f}]; {report['verdict']}"
        )
        print(
            f"{report['llm_calls']} LLM calls ({report['search_llm_calls']} in the search), "
            f"{report['llm_tokens']} tokens, wall {report['wall_s']:.0f} s"
        )
        if "replay_identical" in report:
            print(
                f"replay without the server: {report['replay_s']:.1f} s, "
                f"{'identical' if report['replay_identical'] else 'DIFFERENT'}"
            )
        print("\nbest prompt of the search:\n" + report["best_prompt"])
    return 0 if report.get("replay_identical", True) else 1


if __name__ == "__main__":
    sys.exit(main())
