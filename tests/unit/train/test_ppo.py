"""PPO: advantages by hand, an update that learns, CartPole improving, suite smoke run."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from learnloop.errors import ConfigError  # noqa: E402
from learnloop.train.config import PPOConfig, RunConfig  # noqa: E402
from learnloop.train.policies import MLPPolicy  # noqa: E402
from learnloop.train.ppo import PPO, ppo_advantages  # noqa: E402
from learnloop.train.rollout import RolloutCollector, _empty_batch  # noqa: E402
from learnloop.train.run import train  # noqa: E402


def test_ppo_advantages_by_hand_with_truncation_bootstrap() -> None:
    batch = _empty_batch(2, 1, 1, 2)
    batch.rewards[:, 0] = [1.0, 1.0]
    batch.values[:, 0] = [0.5, 0.5]
    batch.dones[:, 0] = [0.0, 1.0]
    batch.truncated_values[:, 0] = [0.0, 2.0]  # truncated after step 1 with V(s_final) = 2
    batch.last_values[:] = 9.0  # not used: the episode ended
    adv, ret = ppo_advantages(batch, gamma=0.5, lam=1.0)
    # r' = [1, 1 + 0.5 * 2 = 2]; A_1 = 2 - 0.5 = 1.5; delta_0 = 1 + 0.5 * 0.5 - 0.5 = 0.75;
    # A_0 = 0.75 + 0.5 * 1.5 = 1.5; R = A + V = [2, 2]
    assert adv[:, 0].tolist() == pytest.approx([1.5, 1.5])
    assert ret[:, 0].tolist() == pytest.approx([2.0, 2.0])


def test_ppo_config_checks() -> None:
    with pytest.raises(ConfigError, match="gamma"):
        PPOConfig(gamma=1.5)
    with pytest.raises(ConfigError, match="clip_eps"):
        PPOConfig(clip_eps=0.0)
    collector = RolloutCollector([gym.make("CartPole-v1")], seed=0)
    with pytest.raises(ConfigError, match="value head"):
        PPO(MLPPolicy(4, 2, value_head=False), collector, num_iterations=1)


def test_ppo_improves_on_cartpole() -> None:
    config = PPOConfig()
    collector = RolloutCollector([gym.make("CartPole-v1") for _ in range(config.num_envs)], seed=0)
    policy = MLPPolicy(4, 2, seed=0)
    ppo = PPO(policy, collector, config, num_iterations=100, seed=0)
    first = ppo.train_iteration(0)
    for iteration in range(1, 25):
        metrics = ppo.train_iteration(iteration)
    assert metrics["rollout/env_steps"] == 25 * 256
    # a random policy lasts ~22 steps; after 6.4k steps the last-100 mean is about twice that
    assert first["rollout/episode_return_mean"] < 40
    assert metrics["rollout/return_last100"] > max(40, 1.8 * first["rollout/episode_return_mean"])
    assert np.isfinite(metrics["train/value_loss"]) and metrics["train/approx_kl"] >= 0


def test_target_kl_stops_epochs_early() -> None:
    config = PPOConfig(
        num_envs=2,
        num_steps=64,
        minibatch_size=32,
        num_epochs=50,
        learning_rate=0.05,
        target_kl=1e-4,
    )
    collector = RolloutCollector([gym.make("CartPole-v1") for _ in range(2)], seed=0)
    metrics = PPO(MLPPolicy(4, 2), collector, config, num_iterations=1).train_iteration(0)
    assert metrics["train/early_stop"] == 1.0 and metrics["train/epochs"] < 50


def test_suite_ppo_smoke(tmp_path: Path) -> None:
    run = RunConfig(
        iterations=3, output_dir=str(tmp_path), eval_every=3, checkpoint_every=3, record=False
    )
    result = train("ppo", run, PPOConfig(num_envs=4, num_steps=8))
    assert result.iterations == 3 and result.final is not None and result.baseline is not None
    assert 0.0 <= result.final["success_rate"] <= 1.0
    assert result.final["tool_accuracy"] is not None
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert (tmp_path / "summary.json").exists() and (tmp_path / "policy.pt").exists()
