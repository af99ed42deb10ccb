"""GRPO: Shao et al. 2024, "DeepSeekMath", sec. 4.1 and alg. 1, for discrete-action policies.

One iteration, in the paper's order::

    pick B tasks q; for each, sample G attempts o_1..o_G with pi_theta_old  (concurrently)
    score each attempt: r_i = its total reward
    outcome supervision (4.1.2): A_{i,t} = (r_i - mean(r)) / std(r) for every step t
    process supervision (4.1.3): r~ = step rewards normalized over the group,
                                 A_{i,t} = sum_{j >= t} r~_{i,j}
    for mu epochs: maximize J (eq. 3) with the KL to pi_ref (eq. 4), gradient clipped

No critic: the group is the baseline. Steps whose advantage is zero (groups
whose attempts all scored the same) are left out of the update. An optional
entropy bonus (``entropy_coef``, not in the paper) keeps the policy sampling
diverse attempts: once it is nearly deterministic, a group's attempts agree and
carry no signal.

Settings: the defaults suit any environment (CartPole-v1 reaches 500 in ~30
iterations). On the built-in suite a policy without a KL term turns nearly
deterministic early and stops learning; ``kl_coef=0.2, num_epochs=10`` (or
``advantage="process"`` with ``kl_coef=0.04, entropy_coef=0.01, num_epochs=10``)
keeps it exploring and ends higher on held-out tasks, at the price of a slower
CartPole, whose best policy is deterministic. ``advantage="process"`` needs step
rewards that differ between steps: with a constant reward per step every
advantage is 0 (a warning says so).

A *task* is whatever the reset options say: the suite picks one with
``{"task_index": i}`` (see :func:`suite_task_sampler`); for any other Gymnasium
environment the G attempts of a group share a reset seed, so they start from the
same state.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(f"{__name__} needs torch: pip install 'learnloop[train]' ({exc})") from exc

from learnloop.credit import discounted_returns, group_normalize
from learnloop.errors import ConfigError
from learnloop.train.config import GRPOConfig, linear_schedule
from learnloop.train.losses import approx_kl, clip_fraction, entropy_loss, grpo_loss
from learnloop.train.policies import MLPPolicy
from learnloop.train.rollout import EpisodeSummary, RolloutBatch, RolloutCollector

__all__ = ["GRPO", "TaskSampler", "grpo_advantages", "grpo_update", "suite_task_sampler"]

logger = logging.getLogger(__name__)

#: Picks the reset options of one task from a generator (None: share a seed instead).
TaskSampler = Callable[[np.random.Generator], Mapping[str, Any]]


def suite_task_sampler(env: gym.Env[Any, Any]) -> TaskSampler | None:
    """A sampler of ``{"task_index": i}`` over the env's split, for suite environments.

    Returns None when the environment has no task list (then groups share a seed).
    """
    inner = env.unwrapped
    suite, split = getattr(inner, "suite", None), getattr(inner, "split", None)
    if suite is None or split is None or not hasattr(suite, "tasks"):
        return None
    num_tasks = len(suite.tasks(split))

    def sample(rng: np.random.Generator) -> Mapping[str, Any]:
        return {"task_index": int(rng.integers(num_tasks))}

    return sample


def grpo_advantages(
    step_rewards: Sequence[np.ndarray],
    group_ids: Sequence[int],
    *,
    mode: str = "outcome",
) -> list[np.ndarray]:
    """Per-step advantages of each attempt, from its step rewards and its group.

    Args:
        step_rewards: attempt i's rewards r_{i,1..T_i}.
        group_ids: the group (task) of attempt i.
        mode: ``"outcome"`` (sec. 4.1.2): the group-normalized total reward on every
            step; ``"process"`` (sec. 4.1.3): step rewards normalized over all steps
            of the group's attempts, summed from t to the end.

    >>> [a.round(3).tolist() for a in grpo_advantages(
    ...     [np.array([1.0]), np.array([0.0, 0.0])], [0, 0])]
    [[1.0], [-1.0, -1.0]]
    """
    if len(step_rewards) != len(group_ids):
        raise ConfigError(
            f"one group id per attempt: {len(step_rewards)} attempts, {len(group_ids)} ids"
        )
    ids = np.asarray(group_ids)
    if mode == "outcome":
        totals = np.array([float(np.sum(r)) for r in step_rewards])
        normalized = group_normalize(totals, group_ids=ids)
        return [np.full(len(r), normalized[i]) for i, r in enumerate(step_rewards)]
    if mode == "process":
        flat = np.concatenate([np.asarray(r, np.float64) for r in step_rewards])
        flat_ids = np.concatenate([np.full(len(r), ids[i]) for i, r in enumerate(step_rewards)])
        normalized = group_normalize(flat, group_ids=flat_ids)
        out, start = [], 0
        for r in step_rewards:
            out.append(discounted_returns(normalized[start : start + len(r)], gamma=1.0))
            start += len(r)
        return out
    raise ConfigError(f"unknown GRPO advantage mode {mode!r}; use 'outcome' or 'process'")


def _step_advantages(batch: RolloutBatch, group_size: int, mode: str) -> np.ndarray:
    """(T, N) advantages for an episode-mode batch whose env i is in group i // G."""
    num_envs = batch.rewards.shape[1]
    per_env = [batch.rewards[batch.valid[:, i], i] for i in range(num_envs)]
    groups = [i // group_size for i in range(num_envs)]
    advantages = np.zeros_like(batch.rewards)
    for i, adv in enumerate(grpo_advantages(per_env, groups, mode=mode)):
        advantages[batch.valid[:, i], i] = adv
    return advantages


def grpo_update(
    policy: MLPPolicy,
    optimizer: torch.optim.Optimizer,
    batch: RolloutBatch,
    advantages: np.ndarray,
    config: GRPOConfig,
    *,
    reference: MLPPolicy | None,
    rng: np.random.Generator,
) -> dict[str, float]:
    """mu epochs of minibatch steps on the GRPO loss over steps with A != 0."""
    keep = batch.valid.reshape(-1) & (advantages.reshape(-1) != 0)
    metrics = {"train/active_fraction": float(keep.sum() / max(batch.valid.sum(), 1))}
    if not keep.any():
        return {**metrics, "train/policy_loss": 0.0, "train/approx_kl": 0.0, "train/updates": 0.0}
    obs = torch.from_numpy(batch.obs.reshape(-1, batch.obs.shape[-1])[keep])
    actions = torch.from_numpy(batch.actions.reshape(-1)[keep])
    masks = torch.from_numpy(batch.action_masks.reshape(-1, batch.action_masks.shape[-1])[keep])
    old_log_probs = torch.from_numpy(batch.log_probs.reshape(-1)[keep])
    adv = torch.from_numpy(advantages.reshape(-1)[keep].astype(np.float32))
    ref_log_probs = None
    if reference is not None and config.kl_coef > 0:
        with torch.no_grad():
            ref_log_probs, _, _ = reference.evaluate_actions(obs, actions, masks)
    size = obs.shape[0]
    minibatch = min(config.minibatch_size, size)
    sums = {"policy_loss": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0}
    updates = 0
    for _ in range(config.num_epochs):
        order = torch.from_numpy(rng.permutation(size))
        for start in range(0, size, minibatch):
            idx = order[start : start + minibatch]
            log_prob, entropy, _ = policy.evaluate_actions(obs[idx], actions[idx], masks[idx])
            policy_loss = grpo_loss(
                log_prob,
                old_log_probs[idx],
                adv[idx],
                clip_eps=config.clip_eps,
                ref_log_prob=None if ref_log_probs is None else ref_log_probs[idx],
                kl_coef=config.kl_coef,
            )
            loss = policy_loss
            if config.entropy_coef > 0.0:
                loss = loss + config.entropy_coef * entropy_loss(entropy)
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                sums["policy_loss"] += policy_loss.item()
                sums["approx_kl"] += approx_kl(log_prob, old_log_probs[idx]).item()
                sums["clip_fraction"] += clip_fraction(
                    log_prob, old_log_probs[idx], clip_eps=config.clip_eps
                ).item()
                sums["entropy"] += entropy.mean().item()
            updates += 1
    metrics.update({f"train/{k}": v / updates for k, v in sums.items()})
    metrics["train/updates"] = float(updates)
    return metrics


class GRPO:
    """The GRPO learner: groups of concurrent attempts per task, no critic.

    Args:
        policy: the policy to train (a value head, if any, is ignored).
        collector: ``group_size * tasks_per_iteration`` environments; environment i
            attempts task i // group_size.
        config: hyperparameters.
        num_iterations: the run's length (for the learning-rate schedule).
        task_sampler: reset options of a task (e.g. :func:`suite_task_sampler`); None
            gives each group a shared reset seed instead.
        seed: seeds task choice, sampling and minibatch order.
    """

    def __init__(
        self,
        policy: MLPPolicy,
        collector: RolloutCollector,
        config: GRPOConfig = GRPOConfig(),
        *,
        num_iterations: int,
        task_sampler: TaskSampler | None = None,
        seed: int = 0,
    ) -> None:
        if collector.num_envs != config.num_attempts:
            raise ConfigError(
                f"GRPO needs group_size x tasks_per_iteration = {config.num_attempts} "
                f"environments, the collector has {collector.num_envs}"
            )
        self.policy = policy
        self.collector = collector
        self.config = config
        self.num_iterations = num_iterations
        self.task_sampler = task_sampler
        self.reference = copy.deepcopy(policy).eval() if config.kl_coef > 0 else None
        if self.reference is not None:
            self.reference.requires_grad_(False)
        self.optimizer = torch.optim.Adam(
            policy.parameters(), lr=config.learning_rate, eps=config.adam_eps
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.env_steps = 0
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.recent_successes: deque[float] = deque(maxlen=100)
        self._warned_process = False

    def _reset_plan(self) -> tuple[list[int | None], list[Mapping[str, Any] | None]]:
        config = self.config
        seeds: list[int | None] = []
        options: list[Mapping[str, Any] | None] = []
        for _ in range(config.tasks_per_iteration):
            if self.task_sampler is not None:
                task = self.task_sampler(self.rng)
                seeds += [int(s) for s in self.rng.integers(2**31, size=config.group_size)]
                options += [task] * config.group_size
            else:
                shared = int(self.rng.integers(2**31))
                seeds += [shared] * config.group_size
                options += [None] * config.group_size
        return seeds, options

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """Collect one batch of groups and update; ``iteration`` counts from 0."""
        config = self.config
        lr = config.learning_rate
        if config.anneal_lr:
            lr = linear_schedule(config.learning_rate, iteration, self.num_iterations)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        seeds, options = self._reset_plan()
        started = time.perf_counter()
        self.policy.eval()
        batch = self.collector.collect_episodes(
            self.policy,
            seeds=seeds,
            options=options,
            max_steps=config.max_episode_steps,
            generator=self.generator,
        )
        rollout_s = time.perf_counter() - started
        advantages = _step_advantages(batch, config.group_size, config.advantage)
        started = time.perf_counter()
        self.policy.train()
        metrics = grpo_update(
            self.policy,
            self.optimizer,
            batch,
            advantages,
            config,
            reference=self.reference,
            rng=self.rng,
        )
        self.policy.update_obs_stats(torch.from_numpy(batch.obs[batch.valid]))
        update_s = time.perf_counter() - started
        if metrics["train/active_fraction"] == 0.0 and config.advantage == "process":
            self._warn_constant_step_rewards(batch)
        self.env_steps += batch.num_steps
        return {
            **metrics,
            **self._rollout_metrics(batch.episodes),
            "train/learning_rate": lr,
            "time/rollout_s": rollout_s,
            "time/update_s": update_s,
        }

    def _warn_constant_step_rewards(self, batch: RolloutBatch) -> None:
        """Say once why 'process' learns nothing where 'outcome' would (constant step rewards)."""
        if self._warned_process or not np.any(
            _step_advantages(batch, self.config.group_size, "outcome")
        ):
            return
        self._warned_process = True
        logger.warning(
            "GRPO advantage='process': every step reward in each group is the same (e.g. "
            "CartPole's +1 per step), so every advantage is 0 and nothing is learned, while "
            "the attempts' totals differ; use advantage='outcome' for this environment"
        )

    def _rollout_metrics(self, episodes: list[EpisodeSummary]) -> dict[str, float]:
        for episode in episodes:
            self.recent_returns.append(episode.total_reward)
            if episode.success is not None:
                self.recent_successes.append(float(episode.success))
        metrics = {
            "rollout/env_steps": float(self.env_steps),
            "rollout/episodes": float(len(episodes)),
            "rollout/episode_return_mean": float(np.mean([e.total_reward for e in episodes])),
            "rollout/return_last100": float(np.mean(self.recent_returns)),
        }
        if self.recent_successes:
            metrics["rollout/success_last100"] = float(np.mean(self.recent_successes))
        return metrics

    # --- checkpointing ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy_state": self.policy.state_dict(),
            "reference_state": None if self.reference is None else self.reference.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "rng": self.rng.bit_generator.state,
            "collector": self.collector.state_dict(),
            "env_steps": self.env_steps,
            "recent_returns": list(self.recent_returns),
            "recent_successes": list(self.recent_successes),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state["policy_state"])
        if self.reference is not None and state.get("reference_state") is not None:
            self.reference.load_state_dict(state["reference_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        self.collector.load_state_dict(state["collector"])
        self.env_steps = int(state["env_steps"])
        self.recent_returns = deque(state["recent_returns"], maxlen=100)
        self.recent_successes = deque(state["recent_successes"], maxlen=100)
