"""``learnloop train ppo|grpo``: train an MLP policy with PPO or GRPO on CPU.

Trains on the built-in tool-use suite (default) or any Gymnasium environment with
a discrete action space (``--env CartPole-v1``), evaluates on held-out tasks
against the random baseline every ``--eval-every`` iterations, checkpoints every
``--checkpoint-every`` iterations (``--resume`` continues from the latest), and
writes metrics, a summary, ``curves.png`` and ``policy.pt`` to ``--output-dir``.
Every flag below comes from PPOConfig/GRPOConfig, PolicyConfig and RunConfig in
learnloop.train.config. ``grpo --policy lm --model tiny|smollm2|PATH`` trains a
language-model policy instead (see learnloop.cli.train_lm).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]

_HELP = {
    "ppo": "train a policy with PPO and GAE (any discrete Gymnasium env or the suite)",
    "grpo": "train a policy with GRPO (groups of attempts per task, no critic)",
}


def add_parser(subparsers: Any) -> None:
    """Register ``ppo`` and ``grpo``; calling it again is a no-op (idempotent)."""
    from learnloop.cli.flags import add_config_flags
    from learnloop.train.config import GRPOConfig, PolicyConfig, PPOConfig, RunConfig

    existing = getattr(subparsers, "choices", None) or {}
    for name, algo_cls in (("ppo", PPOConfig), ("grpo", GRPOConfig)):
        if name in existing:
            continue
        parser = subparsers.add_parser(
            name,
            help=_HELP[name],
            description=f"{_HELP[name]}.\n\n{__doc__.split(chr(10), 2)[2]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_config_flags(parser.add_argument_group("run"), RunConfig, prefix="run")
        add_config_flags(parser.add_argument_group(name), algo_cls, prefix="algo")
        add_config_flags(parser.add_argument_group("policy"), PolicyConfig, prefix="policy")
        if name == "grpo":
            from learnloop.cli.train_lm import add_lm_flags

            add_lm_flags(parser)
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")
        parser.add_argument(
            "--no-progress", action="store_true", help="hide the progress bar (stderr)"
        )
        parser.set_defaults(handler=run, rl_algorithm=name)


def _format(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _table(result: Any) -> Any:
    from rich.table import Table

    table = Table(title=f"held-out evaluation ({result.env})")
    for column in (
        "iteration",
        "success",
        "avg reward",
        "tool acc.",
        "baseline success",
        "baseline reward",
        "baseline tool acc.",
    ):
        table.add_column(column, justify="right")
    for row in result.evaluations:
        policy, baseline = row["policy"], row["baseline"] or {}
        table.add_row(
            str(row["iteration"]),
            _format(policy["success_rate"]),
            _format(policy["avg_reward"]),
            _format(policy["tool_accuracy"]),
            _format(baseline.get("success_rate")),
            _format(baseline.get("avg_reward")),
            _format(baseline.get("tool_accuracy")),
        )
    return table


def run(args: argparse.Namespace) -> int:
    import os

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from learnloop.cli.flags import config_from_args
    from learnloop.cli.options import print_json
    from learnloop.train import require_torch
    from learnloop.train.config import GRPOConfig, PolicyConfig, PPOConfig, RunConfig

    require_torch()
    from learnloop.train.run import make_envs, refuse_earlier_run, train

    algorithm = args.rl_algorithm
    if getattr(args, "policy", "mlp") == "lm":
        from learnloop.cli.train_lm import run_lm

        return run_lm(args)
    run_config: RunConfig = config_from_args(RunConfig, args, prefix="run")
    algo_cls = PPOConfig if algorithm == "ppo" else GRPOConfig
    algo_config = config_from_args(algo_cls, args, prefix="algo")
    policy_config: PolicyConfig = config_from_args(PolicyConfig, args, prefix="policy")
    # A wrong id, argument or missing package, or a folder holding another run, fails
    # here, before the output folder and its episode store are created or touched.
    for env in make_envs(
        run_config.env, 1, time_limit=run_config.time_limit, **run_config.env_kwargs
    ):
        env.close()
    refuse_earlier_run(run_config)
    os.makedirs(run_config.output_dir, exist_ok=True)

    recorder = store = None
    if run_config.record:
        from learnloop.recorder import Recorder
        from learnloop.store import open_store

        url = run_config.store or "sqlite:///" + os.path.abspath(
            os.path.join(run_config.output_dir, "episodes.db")
        )
        store = open_store(url)
        recorder = Recorder(store)

    console = Console(stderr=True)
    progress = Progress(
        TextColumn(f"[bold]{algorithm}[/] {run_config.env}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=args.no_progress or not console.is_terminal,
    )

    try:
        with progress:
            task = progress.add_task("train", total=run_config.iterations, status="")

            def on_iteration(done: int, metrics: Any) -> None:
                status = f"return {metrics.get('rollout/return_last100', float('nan')):.2f}"
                if "eval/success_rate" in metrics and metrics["eval/success_rate"] is not None:
                    status += f"  held-out success {metrics['eval/success_rate']:.2f}"
                progress.update(task, completed=done, status=status)

            result = train(
                algorithm,
                run_config,
                algo_config,
                policy_config,
                recorder=recorder,
                on_iteration=on_iteration,
            )
    finally:
        if recorder is not None:
            recorder.close()
        if store is not None:
            store.close()

    summary = result.summary()
    if args.json:
        print_json(summary)
        return 0
    out = Console()
    if result.evaluations:
        out.print(_table(result))
    out.print(
        f"{algorithm} on {result.env}: {result.iterations} iterations, {result.env_steps} env "
        f"steps, {result.elapsed_s:.1f} s; last-100 return {_format(summary['return_last100'])}; "
        f"results in {result.output_dir}"
    )
    return 0
