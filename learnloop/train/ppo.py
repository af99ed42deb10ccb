"""PPO with GAE: Schulman et al. 2017, "Proximal Policy Optimization Algorithms", alg. 1.

One iteration, in the paper's order::

    collect T steps in each of N environments with pi_theta_old      (RolloutCollector)
    compute A_1..A_T with GAE(gamma, lambda), R_t = A_t + V(s_t)     (credit.compute_gae)
    for K epochs, for minibatches of size M:
        L = -L^CLIP + c1 L^VF - c2 S[pi_theta]                        (losses)
        step Adam on L, gradient norm clipped; stop early if KL > target
    theta_old <- theta

Truncated episodes (time limits) are bootstrapped: the collector reports
V(final observation), added to the last reward as gamma V(s_final), so a time
limit is not mistaken for a terminal state (Pardo et al. 2018).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(f"{__name__} needs torch: pip install 'learnloop[train]' ({exc})") from exc

from learnloop.credit import compute_gae
from learnloop.train.config import PPOConfig, linear_schedule
from learnloop.train.losses import (
    approx_kl,
    clip_fraction,
    clipped_surrogate_loss,
    entropy_loss,
    normalize,
    value_loss,
)
from learnloop.train.policies import MLPPolicy
from learnloop.train.rollout import RolloutBatch, RolloutCollector

__all__ = ["PPO", "ppo_advantages", "ppo_update"]

logger = logging.getLogger(__name__)


def ppo_advantages(
    batch: RolloutBatch, *, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """GAE advantages and value targets of a rollout, each (T, N).

    Rewards of truncated steps get gamma V(s_final) added (the bootstrap a time
    limit needs); then :func:`learnloop.credit.compute_gae` with ``dones`` and the
    rollout's ``last_values``.
    """
    rewards = batch.rewards + gamma * batch.truncated_values
    return compute_gae(rewards, batch.values, batch.dones, batch.last_values, gamma=gamma, lam=lam)


def _explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    variance = float(np.var(returns))
    return float("nan") if variance == 0 else 1.0 - float(np.var(returns - values)) / variance


def ppo_update(
    policy: MLPPolicy,
    optimizer: torch.optim.Optimizer,
    batch: RolloutBatch,
    advantages: np.ndarray,
    returns: np.ndarray,
    config: PPOConfig,
    *,
    clip_eps: float,
    rng: np.random.Generator,
) -> dict[str, float]:
    """K epochs of minibatch Adam steps on the PPO loss; returns ``train/*`` metrics.

    Only valid transitions of ``batch`` are used. Minibatches are drawn by
    permuting with ``rng``; the epochs stop early once the approximate KL of a
    minibatch exceeds ``config.target_kl``.
    """
    valid = batch.valid.reshape(-1)
    obs = torch.from_numpy(batch.obs.reshape(-1, batch.obs.shape[-1])[valid])
    actions = torch.from_numpy(batch.actions.reshape(-1)[valid])
    masks = torch.from_numpy(batch.action_masks.reshape(-1, batch.action_masks.shape[-1])[valid])
    old_log_probs = torch.from_numpy(batch.log_probs.reshape(-1)[valid])
    old_values = torch.from_numpy(batch.values.reshape(-1)[valid])
    adv = torch.from_numpy(advantages.reshape(-1)[valid].astype(np.float32))
    ret = torch.from_numpy(returns.reshape(-1)[valid].astype(np.float32))
    size = obs.shape[0]
    minibatch = min(config.minibatch_size, size)
    sums = {
        "policy_loss": 0.0,
        "value_loss": 0.0,
        "entropy": 0.0,
        "approx_kl": 0.0,
        "clip_fraction": 0.0,
    }
    num_updates, epochs_run, stopped = 0, 0, False
    for _ in range(config.num_epochs):
        order = torch.from_numpy(rng.permutation(size))
        for start in range(0, size, minibatch):
            idx = order[start : start + minibatch]
            log_prob, entropy, values = policy.evaluate_actions(obs[idx], actions[idx], masks[idx])
            mb_adv = normalize(adv[idx]) if config.normalize_advantages else adv[idx]
            pg_loss = clipped_surrogate_loss(
                log_prob, old_log_probs[idx], mb_adv, clip_eps=clip_eps
            )
            loss = pg_loss + config.entropy_coef * entropy_loss(entropy)
            v_loss = torch.zeros(())
            if values is not None:
                v_loss = value_loss(
                    values, ret[idx], old_values=old_values[idx], clip_value=config.clip_value
                )
                loss = loss + config.value_coef * v_loss
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                kl = approx_kl(log_prob, old_log_probs[idx]).item()
                sums["policy_loss"] += pg_loss.item()
                sums["value_loss"] += v_loss.item()
                sums["entropy"] += entropy.mean().item()
                sums["approx_kl"] += kl
                sums["clip_fraction"] += clip_fraction(
                    log_prob, old_log_probs[idx], clip_eps=clip_eps
                ).item()
            num_updates += 1
            if config.target_kl is not None and kl > config.target_kl:
                stopped = True
                break
        epochs_run += 1
        if stopped:
            break
    metrics = {f"train/{k}": v / max(num_updates, 1) for k, v in sums.items()}
    metrics["train/epochs"] = float(epochs_run)
    metrics["train/early_stop"] = float(stopped)
    metrics["train/explained_variance"] = _explained_variance(
        batch.values.reshape(-1)[valid], returns.reshape(-1)[valid]
    )
    return metrics


class PPO:
    """The PPO learner: owns the optimizer and randomness, runs one iteration at a time.

    Args:
        policy: an actor-critic policy (``value_head=True``).
        collector: the N environments to learn from.
        config: hyperparameters.
        num_iterations: the run's length (for the learning-rate and clip schedules).
        seed: seeds minibatch shuffling and action sampling.
    """

    def __init__(
        self,
        policy: MLPPolicy,
        collector: RolloutCollector,
        config: PPOConfig = PPOConfig(),
        *,
        num_iterations: int,
        seed: int = 0,
    ) -> None:
        if policy.predict_values(torch.zeros(1, policy.obs_dim)) is None:
            from learnloop.errors import ConfigError

            raise ConfigError("PPO needs a policy with a value head; build it with value_head=True")
        self.policy = policy
        self.collector = collector
        self.config = config
        self.num_iterations = num_iterations
        self.optimizer = torch.optim.Adam(
            policy.parameters(), lr=config.learning_rate, eps=config.adam_eps
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.env_steps = 0
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.recent_successes: deque[float] = deque(maxlen=100)

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """Collect one rollout and update; ``iteration`` counts from 0."""
        config = self.config
        lr = config.learning_rate
        clip_eps = config.clip_eps
        if config.anneal_lr:
            lr = linear_schedule(config.learning_rate, iteration, self.num_iterations)
        if config.anneal_clip:
            clip_eps = max(linear_schedule(config.clip_eps, iteration, self.num_iterations), 1e-8)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        started = time.perf_counter()
        self.policy.eval()
        batch = self.collector.collect_steps(
            self.policy, config.num_steps, generator=self.generator
        )
        rollout_s = time.perf_counter() - started
        advantages, returns = ppo_advantages(batch, gamma=config.gamma, lam=config.lam)
        started = time.perf_counter()
        self.policy.train()
        metrics = ppo_update(
            self.policy,
            self.optimizer,
            batch,
            advantages,
            returns,
            config,
            clip_eps=clip_eps,
            rng=self.rng,
        )
        self.policy.update_obs_stats(torch.from_numpy(batch.obs))
        update_s = time.perf_counter() - started
        self.env_steps += batch.num_steps
        return {
            **metrics,
            **self._rollout_metrics(batch),
            "train/learning_rate": lr,
            "train/clip_eps": clip_eps,
            "time/rollout_s": rollout_s,
            "time/update_s": update_s,
        }

    def _rollout_metrics(self, batch: RolloutBatch) -> dict[str, float]:
        for episode in batch.episodes:
            self.recent_returns.append(episode.total_reward)
            if episode.success is not None:
                self.recent_successes.append(float(episode.success))
        metrics = {
            "rollout/env_steps": float(self.env_steps),
            "rollout/episodes": float(len(batch.episodes)),
            "rollout/step_reward_mean": float(batch.rewards[batch.valid].mean()),
        }
        if batch.episodes:
            metrics["rollout/episode_return_mean"] = float(
                np.mean([e.total_reward for e in batch.episodes])
            )
        if self.recent_returns:
            metrics["rollout/return_last100"] = float(np.mean(self.recent_returns))
        if self.recent_successes:
            metrics["rollout/success_last100"] = float(np.mean(self.recent_successes))
        return metrics

    # --- checkpointing ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy_state": self.policy.state_dict(),
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
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        self.collector.load_state_dict(state["collector"])
        self.env_steps = int(state["env_steps"])
        self.recent_returns = deque(state["recent_returns"], maxlen=100)
        self.recent_successes = deque(state["recent_successes"], maxlen=100)
