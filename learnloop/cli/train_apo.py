"""``learnloop train apo``: optimize the LLM agent's prompt by re-running the agent.

Candidates come from the five mutation operators and from the model's critique of
failed attempts; each is scored by running the agent on the same training batch
(successive halving stops weak ones early); the best is checked against the
starting prompt on held-out sub-tasks and kept only if the gain is significant.
The model is the embedded SmolLM2-135M-Instruct unless --llm-base-url names an
OpenAI-compatible server. Writes best_prompt.txt, all_variants.json and
optimization_summary.json to --output-dir and, when the gain is significant,
registers the prompt as the 'candidate' version in the store's registry.
--record-calls FILE saves every model call; --replay-calls FILE reruns from such
a file without any model (the same prompts and scores).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run", "run_all"]


def add_parser(subparsers: Any) -> None:
    """Register ``apo`` and ``all``; calling it again is a no-op (idempotent)."""
    existing = getattr(subparsers, "choices", None) or {}
    if "apo" not in existing:
        _add_apo(
            subparsers.add_parser(
                "apo",
                help="optimize the LLM agent's prompt (mutations + LLM critique, re-running "
                "the agent)",
                description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        )
    if "all" not in existing:
        parser = subparsers.add_parser(
            "all",
            help="apo, then ppo, into OUTPUT_DIR/apo and OUTPUT_DIR/rl",
            description="Run 'train apo' with the flags below into OUTPUT_DIR/apo, then "
            "'train ppo' (defaults, --rl-iterations, the same --seed) into OUTPUT_DIR/rl.",
        )
        _add_apo(parser)
        parser.add_argument(
            "--rl-iterations", type=int, default=100, help="PPO iterations (default: 100)"
        )
        parser.set_defaults(handler=run_all)


def _add_apo(parser: argparse.ArgumentParser) -> None:
    from learnloop.cli.flags import add_config_flags
    from learnloop.prompts.optimizer import APOConfig

    add_config_flags(parser.add_argument_group("search"), APOConfig, prefix="apo")
    parser.add_argument("--output-dir", default=".", help="where the three result files go")
    parser.add_argument(
        "--store",
        default=None,
        help="store URL for episodes, examples and the registry (default: sqlite in --output-dir)",
    )
    parser.add_argument(
        "--llm-base-url",
        default="",
        help="OpenAI-compatible server URL ending in /v1 (default: the embedded SmolLM2)",
    )
    parser.add_argument("--llm-model", default="", help="model name on that server")
    calls = parser.add_mutually_exclusive_group()
    calls.add_argument("--record-calls", default=None, help="save every model call to this JSONL")
    calls.add_argument(
        "--replay-calls", default=None, help="answer every model call from this JSONL (no model)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def _table(result: Any) -> Any:
    from rich.table import Table

    table = Table(title="held-out check (same sub-tasks for both prompts)")
    for column in ("prompt", "success [95% CI]", "tool accuracy [95% CI]", "mean reward"):
        table.add_column(column, justify="right")
    for name, score in (("starting", result.baseline), ("optimized", result.optimized)):
        table.add_row(
            name,
            f"{score.success.mean:.3f} [{score.success.low:.3f}, {score.success.high:.3f}]",
            f"{score.accuracy.mean:.3f} [{score.accuracy.low:.3f}, {score.accuracy.high:.3f}]",
            f"{score.mean_reward:.3f}",
        )
    diff = result.difference
    table.add_row(
        "difference",
        f"{diff.difference:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]",
        f"{result.accuracy_difference.difference:+.3f} [{result.accuracy_difference.low:+.3f}, "
        f"{result.accuracy_difference.high:+.3f}]",
        "",
    )
    return table


def run(args: argparse.Namespace) -> int:
    import contextlib
    import os

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from learnloop.cli.flags import config_from_args
    from learnloop.cli.options import print_json
    from learnloop.envs import SuiteConfig, ToolUseSuite
    from learnloop.prompts import LLMEndpointConfig, RecordReplayClient, open_llm_client
    from learnloop.prompts.optimizer import APOConfig, optimize_prompt
    from learnloop.store import open_store

    config: APOConfig = config_from_args(APOConfig, args, prefix="apo")
    os.makedirs(args.output_dir, exist_ok=True)
    url = args.store or "sqlite:///" + os.path.abspath(os.path.join(args.output_dir, "episodes.db"))
    suite = ToolUseSuite(SuiteConfig(seed=config.suite_seed))
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]apo[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=args.no_progress or not console.is_terminal,
    )
    with contextlib.ExitStack() as stack:
        store = open_store(url)
        stack.callback(store.close)
        if args.replay_calls:
            client: Any = RecordReplayClient(None, args.replay_calls, mode="replay")
        else:
            endpoint = LLMEndpointConfig(base_url=args.llm_base_url, model=args.llm_model)
            client = stack.enter_context(open_llm_client(endpoint))
            if args.record_calls:
                client = RecordReplayClient(client, args.record_calls, mode="record")
        stack.enter_context(progress)
        bar = progress.add_task("generations", total=config.generations, status="")

        def on_generation(report: Any) -> None:
            progress.update(
                bar,
                completed=report.generation,
                status=f"best train success {report.best_train_success:.3f}, "
                f"{report.llm_calls} LLM calls",
            )

        result = optimize_prompt(
            config, client=client, suite=suite, store=store, progress=on_generation
        )
    result.write(args.output_dir, dict(suite.tool_descriptions))
    if args.json:
        print_json(result.summary())
        return 0
    out = Console()
    out.print(_table(result))
    verdict = (
        f"optimized prompt is better: {result.improvement_points:+.1f} points held-out success"
        if result.significant
        else "no significant held-out gain: kept the starting prompt"
    )
    registered = (
        f"; registered as {config.prompt_name} v{result.registered_version} (candidate)"
        if result.registered_version is not None
        else ""
    )
    out.print(
        f"{verdict}{registered}. {len(result.search.generations)} generations, "
        f"{len(result.search.variants)} prompts, {result.llm_calls} LLM calls, "
        f"{result.llm_tokens} tokens, {result.elapsed_s:.1f} s; results in {args.output_dir}"
    )
    return 0


def run_all(args: argparse.Namespace) -> int:
    """``train all``: apo into OUTPUT_DIR/apo, then ppo into OUTPUT_DIR/rl."""
    import os

    from learnloop.cli.main import main
    from learnloop.errors import ConfigError
    from learnloop.train.checkpoints import CheckpointManager

    root = args.output_dir
    rl_checkpoints = os.path.join(root, "rl", "checkpoints")
    if CheckpointManager.found_in(rl_checkpoints):  # refused now, not after the apo stage
        raise ConfigError(
            f"{rl_checkpoints} holds checkpoints of an earlier run; train into another "
            "--output-dir (or delete that folder) to start over"
        )
    args.output_dir = os.path.join(root, "apo")
    code = run(args)
    if code != 0:
        return code
    argv = [
        "train",
        "ppo",
        "--output-dir",
        os.path.join(root, "rl"),
        "--iterations",
        str(args.rl_iterations),
        "--seed",
        str(getattr(args, "apo.seed", 0)),
    ]
    if args.json:
        argv.append("--json")
    if args.no_progress:
        argv.append("--no-progress")
    return main(argv)
