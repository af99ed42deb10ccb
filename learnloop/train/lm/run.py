"""A language-model GRPO run on the built-in suite: load, warm-start, train, evaluate, save.

:func:`train_lm` is what ``learnloop train grpo --policy lm`` runs:

1. load the model (:func:`~learnloop.train.lm.model.load_language_model`);
2. score it on held-out tasks (greedy), before anything trains;
3. warm-start: supervised steps on the successful episodes of the store, after
   recording random-tool exploration episodes when the store has too few;
4. GRPO through :class:`~learnloop.train.run.TrainingRun` (checkpoints, resume,
   held-out evaluation against the random baseline, metrics, plot);
5. save the trained model as a standalone folder (``model/``), which
   ``learnloop serve-policy --model`` and ``LMConfig(model=...)`` load.

The scores before training and after the warm-start are written to
``warm_start.json`` next to ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnloop.envs.suite import SuiteConfig, Task, ToolUseSuite
from learnloop.errors import ConfigError
from learnloop.train.config import GRPOConfig, RunConfig
from learnloop.train.evaluation import EvalResult
from learnloop.train.lm.config import LMConfig, LMGRPOConfig
from learnloop.train.lm.conversation import SuiteChat, evaluate_chat
from learnloop.train.lm.grpo_lm import (
    LMGRPO,
    record_exploration,
    successful_demonstrations,
    warm_start,
)
from learnloop.train.lm.model import load_language_model
from learnloop.train.policies import RandomPolicy
from learnloop.train.run import RunResult, TrainingRun, refuse_earlier_run

__all__ = ["LMRunResult", "random_tool_baseline", "train_lm"]

logger = logging.getLogger(__name__)

#: Successful episodes the warm-start wants before it records exploration.
MIN_DEMONSTRATIONS = 100


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LMRunResult:
    """The training run's result plus the scores before training and after the warm-start."""

    run: RunResult
    """Iterations, history, evaluations (see :class:`~learnloop.train.run.RunResult`)."""
    initial: Mapping[str, Any]
    """Held-out scores of the model as loaded."""
    warm_start: Mapping[str, Any] | None
    """Held-out scores after the warm-start (None when it did not run)."""
    warm_start_s: float
    """Seconds spent on the warm-start (exploration included)."""
    model_dir: str
    """Folder of the trained model (``LMConfig(model=...)`` loads it)."""

    def summary(self) -> dict[str, Any]:
        return {
            **self.run.summary(),
            "initial": dict(self.initial),
            "warm_start": None if self.warm_start is None else dict(self.warm_start),
            "warm_start_s": self.warm_start_s,
            "model_dir": self.model_dir,
        }


def random_tool_baseline(
    suite: ToolUseSuite, tasks: Sequence[Task], *, seed: int = 0
) -> EvalResult:
    """Held-out scores of uniformly random tool choices (tool outcomes drawn from ``seed``)."""
    rng = np.random.default_rng(seed)
    choice = np.random.default_rng(seed + 1)
    successes, hits, decisions = 0, 0, 0
    for task in tasks:
        ok = True
        for subtask in task.subtasks:
            tool = suite.tools[int(choice.integers(len(suite.tools)))]
            decisions += 1
            hits += int(tool == subtask.best_tool)
            if not suite.execute(subtask, tool, rng).success:
                ok = False
                break
        successes += int(ok)
    rate = successes / max(len(tasks), 1)
    return EvalResult(
        success_rate=rate,
        avg_reward=rate,
        tool_accuracy=hits / max(decisions, 1),
        num_episodes=len(tasks),
    )


def _eval_result(metrics: Mapping[str, Any]) -> EvalResult:
    return EvalResult(
        success_rate=float(metrics["success_rate"]),
        avg_reward=float(metrics["success_rate"]),
        tool_accuracy=float(metrics["tool_accuracy"]),
        num_episodes=int(metrics["num_episodes"]),
    )


def _demonstrations(
    chat: SuiteChat, store: Any, recorder: Any, config: LMGRPOConfig, seed: int
) -> list[Any]:
    traces = successful_demonstrations(store, chat)
    if len(traces) < MIN_DEMONSTRATIONS and config.exploration_episodes > 0:
        logger.info(
            "the store has %d successful episodes; recording %d exploration episodes",
            len(traces),
            config.exploration_episodes,
        )
        record_exploration(
            chat.suite, recorder, config.exploration_episodes, seed=seed, policy=config.exploration
        )
        traces = successful_demonstrations(store, chat)
    return traces


def train_lm(
    run_config: RunConfig,
    grpo_config: GRPOConfig,
    lm_config: LMConfig,
    config: LMGRPOConfig,
    *,
    store: Any,
    recorder: Any,
    suite: ToolUseSuite | None = None,
    on_iteration: Callable[[int, Mapping[str, Any]], None] | None = None,
) -> LMRunResult:
    """Load, warm-start and train a language-model policy on the suite (module docstring).

    Args:
        run_config: iterations, output folder, cadences, resume, seed, threads.
        grpo_config: the GRPO hyperparameters (group size, learning rate, clip, KL...).
        lm_config: which model, LoRA or full fine-tuning.
        config: sampling, constraint, credit, warm-start and evaluation settings.
        store: where successful episodes are read for the warm-start.
        recorder: writes exploration and training episodes into ``store``.
        suite: the suite (default: ``SuiteConfig(seed=run_config.seed)``).
        on_iteration: called after every iteration with its metrics.
    """
    if not run_config.env.startswith("learnloop/ToolUse"):
        raise ConfigError(
            f"language-model policies train on the built-in suite, got env {run_config.env!r}; "
            "drop --env or pass learnloop/ToolUse-v0"
        )
    refuse_earlier_run(run_config)  # before minutes of loading, warm-start and evaluation
    torch.set_num_threads(run_config.num_threads)
    torch.manual_seed(run_config.seed)
    suite = suite if suite is not None else ToolUseSuite(SuiteConfig(seed=run_config.seed))
    output = Path(run_config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    lm = load_language_model(dataclasses.replace(lm_config, seed=run_config.seed))
    chat = SuiteChat(
        suite,
        lm,
        prompt=None if config.prompt == "auto" else config.prompt,
        constrained=config.constrained,
        example_seed=run_config.seed,
    )
    heldout = suite.heldout_tasks[: config.eval_tasks]
    seed = run_config.seed

    def score() -> dict[str, Any]:
        return evaluate_chat(chat, heldout, constrained=config.constrained, seed=seed)

    initial = score()
    logger.info("held-out before training: %s", initial)
    resuming = run_config.resume and any((output / "checkpoints").glob("ckpt-*.json"))
    after_sft: dict[str, Any] | None = None
    started = time.perf_counter()
    if config.sft_steps > 0 and not resuming:
        traces = _demonstrations(chat, store, recorder, config, seed)
        losses = warm_start(
            lm,
            traces,
            steps=config.sft_steps,
            learning_rate=config.sft_learning_rate,
            batch_size=config.sft_batch_size,
            seed=seed,
        )
        after_sft = {**score(), "demonstrations": len(traces), "final_loss": losses[-1]}
        logger.info("held-out after warm-start: %s", after_sft)
    warm_s = time.perf_counter() - started
    settings = {
        "run": dataclasses.asdict(run_config),
        "grpo": dataclasses.asdict(grpo_config),
        "lm": dataclasses.asdict(lm_config),
        "lm_grpo": dataclasses.asdict(config),
    }
    learner = LMGRPO(
        chat,
        grpo_config,
        config,
        num_iterations=run_config.iterations,
        seed=seed,
        recorder=recorder if run_config.record else None,
        lm_settings=settings["lm"],
    )

    def evaluator(candidate: Any) -> EvalResult:
        if isinstance(candidate, RandomPolicy):
            return random_tool_baseline(suite, heldout, seed=seed)
        return _eval_result(score())

    run = TrainingRun(
        learner,  # type: ignore[arg-type]  # Learner.policy is typed MLPPolicy; LMPolicy has its methods
        run_config,
        evaluator=evaluator,
        algorithm="grpo-lm",
        settings=settings,
    )
    result = run.run(on_iteration)
    model_dir = lm.save(output / "model")
    lm_result = LMRunResult(
        run=result,
        initial=initial,
        warm_start=after_sft,
        warm_start_s=warm_s,
        model_dir=str(model_dir),
    )
    (output / "warm_start.json").write_text(
        json.dumps({"initial": initial, "warm_start": after_sft, "warm_start_s": warm_s}, indent=1)
    )
    return lm_result
