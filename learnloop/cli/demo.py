"""``learnloop demo``: the whole loop, offline, on the built-in suite."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from learnloop.cli.options import add_json_flag, print_json

__all__ = ["add_parser"]

_STAGES = ("record", "bandit", "apo", "rl", "ab")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole loop offline on the built-in suite and show it improving",
        description="Record a scripted agent on the built-in tool-use suite, then improve "
        "it: a bandit learns tool choice, prompt optimization improves an LLM agent on the "
        "embedded SmolLM2, PPO trains a policy, and an A/B test with staged rollout "
        "decides. Offline; writes to --output-dir.",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("runs/demo"),
        help="where results go (default runs/demo)",
    )
    parser.add_argument(
        "--store", metavar="URL", help="store URL (default: a fresh SQLite file in --output-dir)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the suite and learners (default 0)"
    )
    parser.add_argument(
        "--episodes", type=int, default=300, help="tasks the scripted agent attempts (default 300)"
    )
    parser.add_argument(
        "--decisions",
        type=int,
        default=3000,
        help="tool decisions the bandit learns from (default 3000)",
    )
    parser.add_argument(
        "--rl-iterations", type=int, default=40, help="PPO iterations of the rl stage (default 40)"
    )
    parser.add_argument(
        "--apo-budget-calls",
        type=int,
        default=400,
        help="model calls the prompt search may make (default 400)",
    )
    parser.add_argument(
        "--stages",
        default=",".join(_STAGES),
        help=f"comma-separated stages to run (default: {','.join(_STAGES)})",
    )
    add_json_flag(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from learnloop.demo import DemoConfig, run_demo

    config = DemoConfig(
        output_dir=args.output_dir,
        store_url=args.store,
        seed=args.seed,
        record_episodes=args.episodes,
        bandit_decisions=args.decisions,
        rl_iterations=args.rl_iterations,
        apo_budget_calls=args.apo_budget_calls,
        stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()),
    )
    if args.json:
        report = run_demo(config, say=lambda line: None)
        print_json({"store": report.store_url, "stages": report.stages})
    else:
        from rich.console import Console

        console = Console(highlight=False, markup=False, soft_wrap=True)
        report = run_demo(config, say=console.print)
        if "ab" in report.stages:
            _print_experiment(report.store_url, report.stages["ab"]["experiment"])
    return 0


def _print_experiment(store_url: str, name: str) -> None:
    """The A/B result table, as ``learnloop experiment status`` prints it."""
    from rich.console import Console

    from learnloop.cli.experiment import render_report
    from learnloop.experiments import Experiments
    from learnloop.store import open_store

    with open_store(store_url) as store:
        console = Console(soft_wrap=True, width=max(Console().width, 120))
        render_report(Experiments(store).status(name), console)
