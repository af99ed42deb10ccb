"""Held-out evaluation of a policy against the random baseline, and the run's plot.

For the built-in suite the held-out split is evaluated task by task (each
held-out task once, ``reset(options={"task_index": i})``); for any other
Gymnasium environment, ``num_episodes`` episodes from seeds disjoint from the
training seeds. Metrics:

* ``success_rate``: share of episodes whose final info says success (None when
  the environment never says);
* ``avg_reward``: mean total reward per episode;
* ``tool_accuracy``: share of decisions where the chosen tool was the task's best
  tool (None when the environment names no best tool).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(f"{__name__} needs torch: pip install 'learnloop[train]' ({exc})") from exc

from learnloop.train.policies import Policy
from learnloop.train.rollout import EpisodeSummary, RolloutCollector

__all__ = ["EvalPlan", "EvalResult", "evaluate_policy", "heldout_plan", "plot_curves", "summarize"]

logger = logging.getLogger(__name__)

#: Offset between training seeds and evaluation seeds, so held-out episodes differ.
EVAL_SEED_OFFSET = 1_000_003


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalResult:
    """Scores of one policy on the held-out episodes."""

    success_rate: float | None
    """Share of successful episodes, or None if the environment reports no success."""
    avg_reward: float
    """Mean total reward per episode."""
    tool_accuracy: float | None
    """Share of decisions that chose the best tool, or None if unknown."""
    num_episodes: int
    """Episodes evaluated."""

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "success_rate": self.success_rate,
            "avg_reward": self.avg_reward,
            "tool_accuracy": self.tool_accuracy,
            "num_episodes": self.num_episodes,
        }

    @property
    def score(self) -> float:
        """What "best" means for checkpoints: success rate if known, else average reward."""
        return self.success_rate if self.success_rate is not None else self.avg_reward


@dataclass(frozen=True, slots=True)
class EvalPlan:
    """The reset seed and options of each held-out episode."""

    seeds: tuple[int, ...]
    options: tuple[Mapping[str, Any] | None, ...]


def heldout_plan(env: gym.Env[Any, Any], num_episodes: int, *, seed: int = 0) -> EvalPlan:
    """Every held-out task once (suite environments), else ``num_episodes`` fresh seeds."""
    inner = env.unwrapped
    suite, split = getattr(inner, "suite", None), getattr(inner, "split", None)
    base = seed + EVAL_SEED_OFFSET
    if suite is not None and split is not None and hasattr(suite, "tasks"):
        count = len(suite.tasks(split))
        return EvalPlan(
            seeds=tuple(base + i for i in range(count)),
            options=tuple({"task_index": i} for i in range(count)),
        )
    return EvalPlan(
        seeds=tuple(base + i for i in range(num_episodes)), options=(None,) * num_episodes
    )


def summarize(episodes: Sequence[EpisodeSummary]) -> EvalResult:
    """Aggregate finished attempts into an :class:`EvalResult`."""
    if not episodes:
        return EvalResult(
            success_rate=None, avg_reward=float("nan"), tool_accuracy=None, num_episodes=0
        )
    known = [e.success for e in episodes if e.success is not None]
    decisions = sum(e.num_tool_decisions for e in episodes)
    correct = sum(e.num_correct_tools for e in episodes)
    return EvalResult(
        success_rate=float(np.mean(known)) if known else None,
        avg_reward=float(np.mean([e.total_reward for e in episodes])),
        tool_accuracy=correct / decisions if decisions else None,
        num_episodes=len(episodes),
    )


def evaluate_policy(
    policy: Policy,
    collector: RolloutCollector,
    plan: EvalPlan,
    *,
    greedy: bool = True,
    seed: int = 0,
    max_steps: int = 100_000,
) -> EvalResult:
    """Run ``policy`` on every episode of ``plan``, ``collector.num_envs`` at a time.

    Sampling (``greedy=False``) uses a generator seeded with ``seed``, so an
    evaluation never disturbs the training run's randomness.
    """
    generator = torch.Generator().manual_seed(seed)
    episodes: list[EpisodeSummary] = []
    width = collector.num_envs
    total = len(plan.seeds)
    was_training = getattr(policy, "training", False)
    if hasattr(policy, "eval"):
        policy.eval()
    try:
        for start in range(0, total, width):
            batch = collector.collect_episodes(
                policy,
                seeds=plan.seeds[start : start + width],
                options=plan.options[start : start + width],
                max_steps=max_steps,
                generator=generator,
                greedy=greedy,
            )
            episodes.extend(batch.episodes)
    finally:
        if was_training and hasattr(policy, "train"):
            policy.train()
    return summarize(episodes)


def plot_curves(
    history: Sequence[Mapping[str, Any]],
    evaluations: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
) -> None:
    """PNG of the training return and the held-out scores (policy vs baseline).

    ``history`` rows need ``iteration`` and ``rollout/episode_return_mean``;
    ``evaluations`` rows need ``iteration``, ``policy`` and ``baseline`` (each an
    :meth:`EvalResult.to_dict`). Needs matplotlib (extra ``train``).
    """
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError(
            f"plotting needs matplotlib: pip install 'learnloop[train]' ({exc})"
        ) from exc
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    rows = [r for r in history if "rollout/episode_return_mean" in r]
    left.plot(
        [r["iteration"] for r in rows],
        [r["rollout/episode_return_mean"] for r in rows],
        label="episode return (train)",
        alpha=0.6,
    )
    last100 = [r for r in history if "rollout/return_last100" in r]
    left.plot(
        [r["iteration"] for r in last100],
        [r["rollout/return_last100"] for r in last100],
        label="last-100 mean (train)",
    )
    left.set_xlabel("iteration")
    left.set_ylabel("return")
    left.set_title("training")
    left.legend()
    key = "success_rate"
    if evaluations and evaluations[0]["policy"].get(key) is None:
        key = "avg_reward"
    its = [e["iteration"] for e in evaluations]
    right.plot(its, [e["policy"][key] for e in evaluations], marker="o", label="policy")
    right.plot(
        its, [e["baseline"][key] for e in evaluations], linestyle="--", label="random baseline"
    )
    right.set_xlabel("iteration")
    right.set_ylabel(key.replace("_", " "))
    right.set_title("held-out")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
