"""Weight-level learning for small policies on CPU: PPO with GAE, and GRPO (extra ``train``).

Configs (:class:`PPOConfig`, :class:`GRPOConfig`, :class:`PolicyConfig`,
:class:`RunConfig`) import without torch; everything else needs the ``train``
extra (``pip install 'learnloop[train]'``) and is loaded on first use.

    >>> from learnloop.train import PPOConfig
    >>> PPOConfig().batch_size
    256
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from learnloop.train.config import GRPOConfig, PolicyConfig, PPOConfig, RunConfig

if TYPE_CHECKING:
    from learnloop.train.checkpoints import CheckpointInfo, CheckpointManager
    from learnloop.train.evaluation import EvalResult, evaluate_policy, heldout_plan
    from learnloop.train.grpo import GRPO, grpo_advantages
    from learnloop.train.policies import MLPPolicy, Policy, PolicyOutput, RandomPolicy, load_policy
    from learnloop.train.ppo import PPO, ppo_advantages
    from learnloop.train.rollout import EpisodeSummary, RolloutBatch, RolloutCollector
    from learnloop.train.run import RunResult, TrainingRun, make_envs, train

__all__ = [
    "GRPO",
    "PPO",
    "CheckpointInfo",
    "CheckpointManager",
    "EpisodeSummary",
    "EvalResult",
    "GRPOConfig",
    "MLPPolicy",
    "PPOConfig",
    "Policy",
    "PolicyConfig",
    "PolicyOutput",
    "RandomPolicy",
    "RolloutBatch",
    "RolloutCollector",
    "RunConfig",
    "RunResult",
    "TrainingRun",
    "evaluate_policy",
    "grpo_advantages",
    "heldout_plan",
    "load_policy",
    "make_envs",
    "ppo_advantages",
    "train",
]

#: public name -> module that defines it (imported lazily: these need torch).
_LAZY = {
    "CheckpointInfo": "checkpoints",
    "CheckpointManager": "checkpoints",
    "EvalResult": "evaluation",
    "evaluate_policy": "evaluation",
    "heldout_plan": "evaluation",
    "GRPO": "grpo",
    "grpo_advantages": "grpo",
    "MLPPolicy": "policies",
    "Policy": "policies",
    "PolicyOutput": "policies",
    "RandomPolicy": "policies",
    "load_policy": "policies",
    "PPO": "ppo",
    "ppo_advantages": "ppo",
    "EpisodeSummary": "rollout",
    "RolloutBatch": "rollout",
    "RolloutCollector": "rollout",
    "RunResult": "run",
    "TrainingRun": "run",
    "make_envs": "run",
    "train": "run",
}


def require_torch() -> Any:
    """Import torch, or raise ImportError naming the ``train`` extra."""
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise ImportError(
            "learnloop.train needs torch: pip install 'learnloop[train]' "
            f"(CPU build: torch==2.13.0) ({exc})"
        ) from exc


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'learnloop.train' has no attribute {name!r}")
    require_torch()
    return getattr(importlib.import_module(f"learnloop.train.{module}"), name)
