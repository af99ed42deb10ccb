"""Hyperparameters of the policy learners: one frozen config per algorithm, plus the run.

These classes import nothing heavy (no torch), so the command line can build its
flags from them at once: every field's one-line docstring is its ``--help`` text.

>>> PPOConfig(num_envs=4, num_steps=64).batch_size
256
>>> GRPOConfig(group_size=8, tasks_per_iteration=4).num_attempts
32
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from learnloop.errors import ConfigError

__all__ = ["GRPOConfig", "PPOConfig", "PolicyConfig", "RunConfig", "check_env_id"]


def _check_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ConfigError(f"{owner}.{name} must be > 0, got {value!r}; pass a positive value")


def _check_unit(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{owner}.{name} must lie in [0, 1], got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyConfig:
    """Shape of the MLP policy (actor and critic are separate networks)."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of both the actor and the critic."""
    activation: Literal["tanh", "relu"] = "tanh"
    """Non-linearity between hidden layers."""
    normalize_obs: bool = False
    """Standardize observations with running mean and variance kept in the policy."""

    def __post_init__(self) -> None:
        if not self.hidden_sizes or any(int(h) <= 0 for h in self.hidden_sizes):
            raise ConfigError(
                f"PolicyConfig.hidden_sizes must be positive widths, got {self.hidden_sizes!r}; "
                "e.g. (64, 64)"
            )
        if self.activation not in ("tanh", "relu"):
            raise ConfigError(
                f"PolicyConfig.activation must be 'tanh' or 'relu', got {self.activation!r}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class PPOConfig:
    """Proximal Policy Optimization with GAE (Schulman et al. 2017, arXiv:1707.06347)."""

    num_envs: int = 8
    """Environments stepped in lockstep with one batched forward pass."""
    num_steps: int = 32
    """Steps per environment in one rollout (batch = num_envs x num_steps)."""
    num_epochs: int = 20
    """Passes over each rollout batch."""
    minibatch_size: int = 256
    """Transitions per gradient step (capped at the batch size)."""
    learning_rate: float = 1e-3
    """Adam step size at the first iteration."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to zero over the run's iterations."""
    gamma: float = 0.98
    """Discount factor."""
    lam: float = 0.8
    """GAE lambda (bias/variance trade-off of the advantage estimate)."""
    clip_eps: float = 0.2
    """Clip range of the probability ratio (epsilon of the clipped objective)."""
    anneal_clip: bool = True
    """Decay the clip range linearly to zero with the learning rate schedule."""
    clip_value: float | None = None
    """Clip range of the value update around the old value (None: unclipped)."""
    value_coef: float = 0.5
    """Weight of the value loss."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    target_kl: float | None = None
    """Stop the epochs of an update once the approximate KL exceeds this (None: never)."""
    normalize_advantages: bool = True
    """Standardize advantages within each minibatch."""
    adam_eps: float = 1e-5
    """Epsilon of Adam."""

    def __post_init__(self) -> None:
        _check_positive(
            "PPOConfig",
            num_envs=self.num_envs,
            num_steps=self.num_steps,
            num_epochs=self.num_epochs,
            minibatch_size=self.minibatch_size,
            learning_rate=self.learning_rate,
            max_grad_norm=self.max_grad_norm,
            adam_eps=self.adam_eps,
        )
        _check_unit("PPOConfig", gamma=self.gamma, lam=self.lam)
        if not 0.0 < self.clip_eps < 1.0:
            raise ConfigError(f"PPOConfig.clip_eps must lie in (0, 1), got {self.clip_eps!r}")
        if self.clip_value is not None and not self.clip_value > 0:
            raise ConfigError(f"PPOConfig.clip_value must be > 0 or None, got {self.clip_value!r}")
        if self.target_kl is not None and not self.target_kl > 0:
            raise ConfigError(f"PPOConfig.target_kl must be > 0 or None, got {self.target_kl!r}")
        if self.value_coef < 0 or self.entropy_coef < 0:
            raise ConfigError(
                "PPOConfig.value_coef and entropy_coef must be >= 0, got "
                f"{self.value_coef!r} and {self.entropy_coef!r}"
            )

    @property
    def batch_size(self) -> int:
        """Transitions per rollout."""
        return self.num_envs * self.num_steps


@dataclass(frozen=True, slots=True, kw_only=True)
class GRPOConfig:
    """Group Relative Policy Optimization (Shao et al. 2024, arXiv:2402.03300, sec. 4.1)."""

    group_size: int = 8
    """Attempts G at the same task, collected concurrently."""
    tasks_per_iteration: int = 8
    """Tasks (groups) per iteration."""
    num_epochs: int = 4
    """Passes over each batch (mu in the paper)."""
    minibatch_size: int = 256
    """Steps per gradient step (capped at the batch size)."""
    learning_rate: float = 1e-3
    """Adam step size at the first iteration."""
    anneal_lr: bool = False
    """Decay the learning rate linearly to zero over the run's iterations."""
    clip_eps: float = 0.2
    """Clip range of the probability ratio."""
    kl_coef: float = 0.0
    """Weight beta of the KL penalty to the reference (initial) policy; 0 turns it off."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (keeps sampling diverse enough for groups to differ)."""
    advantage: Literal["outcome", "process"] = "outcome"
    """'outcome': normalized episode reward on each step; 'process': normalized rewards to go."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    max_episode_steps: int = 1000
    """Stop an attempt after this many steps (it counts as truncated)."""
    adam_eps: float = 1e-5
    """Epsilon of Adam."""

    def __post_init__(self) -> None:
        _check_positive(
            "GRPOConfig",
            tasks_per_iteration=self.tasks_per_iteration,
            num_epochs=self.num_epochs,
            minibatch_size=self.minibatch_size,
            learning_rate=self.learning_rate,
            max_grad_norm=self.max_grad_norm,
            max_episode_steps=self.max_episode_steps,
            adam_eps=self.adam_eps,
        )
        if self.group_size < 2:
            raise ConfigError(
                f"GRPOConfig.group_size must be >= 2 (advantages are relative to the group), "
                f"got {self.group_size!r}"
            )
        if not 0.0 < self.clip_eps < 1.0:
            raise ConfigError(f"GRPOConfig.clip_eps must lie in (0, 1), got {self.clip_eps!r}")
        if self.kl_coef < 0 or self.entropy_coef < 0:
            raise ConfigError(
                "GRPOConfig.kl_coef and entropy_coef must be >= 0, got "
                f"{self.kl_coef!r} and {self.entropy_coef!r}"
            )
        if self.advantage not in ("outcome", "process"):
            raise ConfigError(
                f"GRPOConfig.advantage must be 'outcome' or 'process', got {self.advantage!r}"
            )

    @property
    def num_attempts(self) -> int:
        """Episodes per iteration (tasks x group size)."""
        return self.group_size * self.tasks_per_iteration


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """What to train on, for how long, and where results and checkpoints go."""

    env: str = "learnloop/ToolUse-v0"
    """Gymnasium environment id with a discrete action space (default: the built-in suite)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of gymnasium.make, as JSON, e.g. '{"map_name": "8x8"}'."""
    iterations: int = 100
    """Training iterations (one rollout and one update each)."""
    output_dir: str = "runs/rl"
    """Folder for checkpoints, metrics, the summary and the plot."""
    seed: int = 0
    """Seed of everything random in the run (policy init, sampling, environments)."""
    checkpoint_every: int = 10
    """Save a checkpoint every this many iterations (and at the end)."""
    eval_every: int = 10
    """Evaluate on held-out tasks every this many iterations (and at the end)."""
    eval_episodes: int = 20
    """Held-out episodes per evaluation (the suite evaluates each held-out task once)."""
    time_limit: int | None = None
    """Cut episodes after this many steps (Gymnasium's TimeLimit; they end as truncated).
    Unset (None): the environment's own limit, or 1,000 steps for one that has none."""
    keep_best: int = 5
    """Checkpoints kept by evaluation score, besides the latest."""
    resume: bool = False
    """Continue from the latest valid checkpoint in the output folder."""
    store: str | None = None
    """Store URL for the recorded episodes (default: sqlite in the output folder)."""
    record: bool = True
    """Record every training attempt as an episode in the store."""
    num_threads: int = 1
    """torch intra-op threads (1 was fastest for small models on a busy 2-core machine)."""
    executor: Literal["lockstep", "local", "ray"] = "lockstep"
    """Where rollouts run: lockstep (one process, PPO and GRPO); local or ray (GRPO: one
    task per attempt, the same episodes either way)."""
    ray_address: str | None = None
    """Ray cluster to join with --executor ray ("auto": the one started by `ray start`
    here); none: start Ray in this process."""

    def __post_init__(self) -> None:
        if self.executor not in ("lockstep", "local", "ray"):
            raise ConfigError(
                f"RunConfig.executor must be lockstep, local or ray, got {self.executor!r}"
            )
        _check_positive(
            "RunConfig",
            iterations=self.iterations,
            checkpoint_every=self.checkpoint_every,
            eval_every=self.eval_every,
            eval_episodes=self.eval_episodes,
            num_threads=self.num_threads,
        )
        limit = self.time_limit
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ConfigError(
                f"RunConfig.time_limit must be an int >= 1 (steps) or unset, got {limit!r}"
            )
        _check_env_kwargs(self.env_kwargs)
        if self.keep_best < 0:
            raise ConfigError(f"RunConfig.keep_best must be >= 0, got {self.keep_best!r}")
        if not self.env:
            raise ConfigError("RunConfig.env is empty; pass a Gymnasium id such as CartPole-v1")


#: make_envs arguments that env_kwargs may not set (they have flags of their own).
_RESERVED_ENV_KWARGS = ("split", "time_limit", "max_episode_steps")


def _check_env_kwargs(kwargs: Any) -> None:
    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        raise ConfigError(
            f"RunConfig.env_kwargs must be an object of gymnasium.make arguments, got "
            f'{kwargs!r:.80}; e.g. {{"map_name": "8x8"}}'
        )
    reserved = sorted(set(kwargs) & set(_RESERVED_ENV_KWARGS))
    if reserved:
        raise ConfigError(
            f"RunConfig.env_kwargs may not set {reserved}: use --time-limit for the episode "
            "length; the run chooses the suite's split"
        )
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"RunConfig.env_kwargs must hold JSON values (they are saved with the run), "
            f"got {kwargs!r:.80}: {exc}"
        ) from None


def check_env_id(env_id: str) -> None:
    """Raise ConfigError unless ``env_id`` is a registered Gymnasium id (suite ids included).

    Checks the registry only (cheap, no torch, builds nothing), so a job server can
    refuse a mistyped id when the job is submitted rather than when it runs.
    """
    import gymnasium as gym

    import learnloop.envs  # registers the suite's ids with Gymnasium

    if env_id in gym.registry:
        return
    try:  # Gymnasium knows the near misses: "v3 is deprecated, use Taxi-v4", typos
        gym.spec(env_id)
        hint = ""
    except gym.error.Error as exc:
        hint = f" ({exc})"
    raise ConfigError(
        f"unknown Gymnasium environment {env_id!r}{hint}; use a registered id such as "
        f"CartPole-v1 or {learnloop.envs.ENV_ID}"
    )


def linear_schedule(start: float, iteration: int, num_iterations: int) -> float:
    """``start`` decayed linearly: ``start * (1 - iteration / num_iterations)``.

    ``iteration`` counts from 0, so the first update uses ``start``.
    """
    fraction = 1.0 - iteration / max(num_iterations, 1)
    return start * max(fraction, 0.0) if math.isfinite(start) else start
