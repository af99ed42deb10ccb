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


def test_entropy_bonus_spreads_a_peaked_policy() -> None:
    batch = _empty_batch(4, 4, 3, 4)
    batch.obs[:] = np.random.default_rng(0).normal(size=batch.obs.shape)
    advantages = np.full((4, 4), 1e-6)  # active steps, next to no policy-gradient signal
    obs = torch.from_numpy(batch.obs.reshape(-1, 3))
    entropies = []
    for entropy_coef in (0.0, 0.5):
        policy = MLPPolicy(3, 4, value_head=False, seed=0)
        with torch.no_grad():
            policy.actor[-1].bias.copy_(torch.tensor([4.0, 0.0, 0.0, 0.0]))
            batch.log_probs[:] = policy(obs)[:, 0].reshape(4, 4).numpy()  # actions are all 0
            _, start, _ = policy.evaluate_actions(obs, torch.zeros(16, dtype=torch.long))
        # logits (4, 0, 0, 0): p = (0.948, 0.0174 x 3), entropy 0.0506 + 0.2115 = 0.262 nats
        assert float(start.mean()) == pytest.approx(0.262, abs=0.01)
        optimizer = torch.optim.Adam(policy.parameters(), lr=0.05)
        config = GRPOConfig(num_epochs=5, entropy_coef=entropy_coef)
        metrics = grpo_update(
            policy,
            optimizer,
            batch,
            advantages,
            config,
            reference=None,
            rng=np.random.default_rng(0),
        )
        with torch.no_grad():
            _, entropy, _ = policy.evaluate_actions(obs, torch.zeros(16, dtype=torch.long))
        entropies.append(float(entropy.mean()))
        assert abs(metrics["train/policy_loss"]) < 1e-5  # the bonus is not part of it
    # Adam follows even a tiny positive advantage on action 0: without the bonus the
    # policy sharpens; with it, it spreads (uniform would be log 4 = 1.39 nats)
    assert entropies[0] < 0.262 < 0.262 + 0.3 < entropies[1]


def test_grpo_config_checks() -> None:
    with pytest.raises(ConfigError, match="group_size"):
        GRPOConfig(group_size=1)
    with pytest.raises(ConfigError, match="entropy_coef"):
        GRPOConfig(entropy_coef=-0.1)
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


def test_process_advantages_with_constant_step_rewards_warn_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import gymnasium as gym

    from learnloop.train.grpo import GRPO
    from learnloop.train.rollout import RolloutCollector

    config = GRPOConfig(group_size=2, tasks_per_iteration=2, advantage="process")
    collector = RolloutCollector([gym.make("CartPole-v1") for _ in range(4)], seed=0)
    grpo = GRPO(MLPPolicy(4, 2, value_head=False, seed=0), collector, config, num_iterations=2)
    with caplog.at_level("WARNING", logger="learnloop.train.grpo"):
        metrics = [grpo.train_iteration(i) for i in range(2)]
    # CartPole pays +1 per step: normalized over a group's steps, all zeros
    assert [m["train/active_fraction"] for m in metrics] == [0.0, 0.0]
    assert len(caplog.records) == 1 and "use advantage='outcome'" in caplog.text
