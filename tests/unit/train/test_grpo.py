"""GRPO: group advantages by hand, updates only where the advantage is nonzero, suite smoke."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from learnloop.errors import ConfigError  # noqa: E402
from learnloop.train.config import GRPOConfig, RunConfig  # noqa: E402
from learnloop.train.grpo import grpo_advantages, grpo_update  # noqa: E402
from learnloop.train.policies import MLPPolicy  # noqa: E402
from learnloop.train.rollout import _empty_batch  # noqa: E402
from learnloop.train.run import train  # noqa: E402


def test_outcome_advantages_by_hand() -> None:
    rewards = [np.array([1.0, 1.0]), np.array([0.0]), np.array([3.0]), np.array([3.0])]
    adv = grpo_advantages(rewards, [0, 0, 1, 1], mode="outcome")
    # group 0 totals (2, 0): mean 1, population std 1 -> (+1, -1) on every step
    assert adv[0].tolist() == pytest.approx([1.0, 1.0]) and adv[1].tolist() == pytest.approx([-1.0])
    # group 1: all equal -> zeros (no signal)
    assert adv[2].tolist() == [0.0] and adv[3].tolist() == [0.0]


def test_process_advantages_by_hand() -> None:
    rewards = [np.array([1.0, 0.0]), np.array([0.0, -1.0])]
    adv = grpo_advantages(rewards, [0, 0], mode="process")
    # step rewards (1, 0, 0, -1): mean 0, population std sqrt(0.5)
    s = np.sqrt(0.5)
    assert adv[0].tolist() == pytest.approx([1 / s, 0.0], rel=1e-6)
    assert adv[1].tolist() == pytest.approx([-1 / s, -1 / s], rel=1e-6)
    with pytest.raises(ConfigError, match="mode"):
        grpo_advantages(rewards, [0, 0], mode="bogus")


def test_grpo_update_leaves_weights_alone_when_advantages_are_zero() -> None:
    policy = MLPPolicy(3, 4, value_head=False, seed=0)
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.1)
    batch = _empty_batch(2, 4, 3, 4)
    batch.obs[:] = np.random.default_rng(0).normal(size=batch.obs.shape)
    before = [p.detach().clone() for p in policy.parameters()]
    metrics = grpo_update(
        policy,
        optimizer,
        batch,
        np.zeros((2, 4)),
        GRPOConfig(kl_coef=0.1),
        reference=MLPPolicy(3, 4, value_head=False, seed=1),
        rng=np.random.default_rng(0),
    )
    assert metrics["train/active_fraction"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters(), strict=True))
    advantages = np.zeros((2, 4))
    advantages[0, 1] = 1.0
    metrics = grpo_update(
        policy,
        optimizer,
        batch,
        advantages,
        GRPOConfig(),
        reference=None,
        rng=np.random.default_rng(0),
    )
    assert metrics["train/active_fraction"] == pytest.approx(1 / 8)
    assert not all(torch.equal(a, b) for a, b in zip(before, policy.parameters(), strict=True))


def test_grpo_config_checks() -> None:
    with pytest.raises(ConfigError, match="group_size"):
        GRPOConfig(group_size=1)
    with pytest.raises(ConfigError, match="advantage"):
        GRPOConfig(advantage="both")  # type: ignore[arg-type]


def test_suite_grpo_smoke_with_kl(tmp_path: Path) -> None:
    run = RunConfig(
        iterations=3, output_dir=str(tmp_path), eval_every=3, checkpoint_every=3, record=False
    )
    result = train(
        "grpo",
        run,
        GRPOConfig(group_size=4, tasks_per_iteration=2, kl_coef=0.05, advantage="process"),
    )
    assert result.iterations == 3 and result.env_steps > 0
    assert all(np.isfinite(row["train/policy_loss"]) for row in result.history)
    assert result.final is not None and result.final["num_episodes"] > 0


def test_grpo_on_a_gymnasium_env_shares_a_seed_per_group(tmp_path: Path) -> None:
    run = RunConfig(
        env="CartPole-v1", iterations=2, output_dir=str(tmp_path), eval_episodes=2, record=False
    )
    result = train(
        "grpo", run, GRPOConfig(group_size=2, tasks_per_iteration=2, max_episode_steps=50)
    )
    assert (
        result.iterations == 2 and result.final is not None and result.final["success_rate"] is None
    )
