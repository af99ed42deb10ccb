"""Baselines of the built-in tool-use suite on its held-out split.

Prints, for several suite seeds, the held-out task success and per-decision tool
accuracy of three policies:

* ``random``: a uniformly random tool;
* ``keyword``: the best fixed tool per keyword category (search / file_ops /
  execute / network / data / general), fitted on the train split from the true
  success probabilities;
* ``oracle``: the best tool for the sub-task's true type.

Run::

    .venv/bin/python benchmarks/baselines.py              # 5 seeds x 5 repeats
    .venv/bin/python benchmarks/baselines.py --seeds 0 1 2 --repeats 10 --json

Exits with status 1 if the oracle is not at least 40 points of held-out task
success above random (the suite would then be too easy to show learning).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np

from learnloop.envs import SuiteConfig, ToolUseSuite
from learnloop.envs.baselines import (
    PolicyScore,
    evaluate_policy,
    keyword_policy,
    oracle_policy,
    random_policy,
)

POLICIES = ("random", "keyword", "oracle")
MIN_GAP = 0.40


def run(seeds: Sequence[int], repeats: int, num_tasks: int) -> dict[str, list[PolicyScore]]:
    """Score every baseline on the held-out split of the suite of each seed."""
    scores: dict[str, list[PolicyScore]] = {name: [] for name in POLICIES}
    for seed in seeds:
        suite = ToolUseSuite(SuiteConfig(seed=seed, num_tasks=num_tasks))
        policies = {
            "random": random_policy(suite),
            "keyword": keyword_policy(suite, "train"),
            "oracle": oracle_policy(suite),
        }
        for offset, name in enumerate(POLICIES):
            rng = np.random.default_rng([seed, offset])
            scores[name].append(
                evaluate_policy(suite, policies[name], rng, split="heldout", repeats=repeats)
            )
    return scores


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def summarize(scores: dict[str, list[PolicyScore]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over seeds of each metric, per policy."""
    summary: dict[str, dict[str, float]] = {}
    for name, per_seed in scores.items():
        row: dict[str, float] = {}
        for metric in (
            "task_success",
            "expected_task_success",
            "decision_accuracy",
            "decision_success",
        ):
            mean, std = _mean_std([getattr(score, metric) for score in per_seed])
            row[metric] = mean
            row[metric + "_std"] = std
        summary[name] = row
    return summary


def print_table(summary: dict[str, dict[str, float]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("policy")
    table.add_column("held-out task success", justify="right")
    table.add_column("expected task success", justify="right")
    table.add_column("decision accuracy", justify="right")
    table.add_column("decision success prob.", justify="right")
    for name, row in summary.items():
        table.add_row(
            name,
            *(
                f"{100 * row[m]:5.1f}% ± {100 * row[m + '_std']:.1f}"
                for m in (
                    "task_success",
                    "expected_task_success",
                    "decision_accuracy",
                    "decision_success",
                )
            ),
        )
    Console().print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--repeats", type=int, default=5, help="attempts per held-out task")
    parser.add_argument("--num-tasks", type=int, default=1000, help="tasks per suite")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    scores = run(args.seeds, args.repeats, args.num_tasks)
    summary = summarize(scores)
    gap = summary["oracle"]["task_success"] - summary["random"]["task_success"]
    elapsed = time.perf_counter() - started
    heldout = scores["random"][0].num_tasks
    if args.json:
        print(
            json.dumps(
                {
                    "seeds": args.seeds,
                    "repeats": args.repeats,
                    "heldout_tasks": heldout,
                    "summary": summary,
                    "oracle_minus_random": gap,
                    "seconds": elapsed,
                },
                indent=2,
            )
        )
    else:
        print_table(
            summary,
            f"held-out baselines: seeds {args.seeds}, {heldout} held-out tasks x "
            f"{args.repeats} repeats (mean ± std over seeds)",
        )
        print(f"oracle - random held-out task success: {100 * gap:.1f} points ({elapsed:.1f} s)")
    if gap < MIN_GAP:
        print(f"FAIL: the gap is below {100 * MIN_GAP:.0f} points", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
