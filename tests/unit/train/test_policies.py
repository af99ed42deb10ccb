"""MLP policy: masking, log-probabilities, entropy, determinism, save/load."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from learnloop.errors import ConfigError, InvalidInputError  # noqa: E402
from learnloop.train.config import PolicyConfig  # noqa: E402
from learnloop.train.policies import MLPPolicy, RandomPolicy, load_policy  # noqa: E402


def test_masked_actions_are_never_sampled_and_have_zero_probability() -> None:
    policy = MLPPolicy(obs_dim=5, num_actions=4, seed=1)
    obs = torch.randn(500, 5)
    mask = torch.tensor([[0, 1, 0, 1]]).repeat(500, 1)
    out = policy.act(obs, mask, generator=torch.Generator().manual_seed(0))
    assert set(out.actions.tolist()) == {1, 3}
    log_probs, entropy, _ = policy.evaluate_actions(obs, torch.zeros(500, dtype=torch.long), mask)
    assert torch.all(torch.exp(log_probs) == 0)
    # two available actions: entropy at most ln 2, and finite
    assert torch.all(entropy <= math.log(2) + 1e-6) and torch.all(torch.isfinite(entropy))


def test_initial_policy_is_near_uniform_and_entropy_matches() -> None:
    policy = MLPPolicy(obs_dim=3, num_actions=4, seed=0)
    log_probs, entropy, values = policy.evaluate_actions(
        torch.randn(8, 3), torch.zeros(8, dtype=torch.long)
    )
    # policy head initialised with gain 0.01: probabilities ~ 1/4
    assert torch.allclose(log_probs.exp(), torch.full((8,), 0.25), atol=0.02)
    assert torch.allclose(entropy, torch.full((8,), math.log(4)), atol=1e-3)
    assert values is not None and values.shape == (8,)


def test_act_log_probs_match_evaluate_actions_and_greedy_is_argmax() -> None:
    policy = MLPPolicy(obs_dim=3, num_actions=6, seed=0)
    with torch.no_grad():
        policy.actor[-1].weight.mul_(300)  # make the distribution peaked
    obs = torch.randn(16, 3)
    out = policy.act(obs, generator=torch.Generator().manual_seed(3))
    log_probs, _, _ = policy.evaluate_actions(obs, out.actions)
    assert torch.allclose(out.log_probs, log_probs.detach())
    greedy = policy.act(obs, greedy=True)
    assert torch.equal(greedy.actions, policy(obs).argmax(-1))


@pytest.mark.parametrize(
    "config",
    [PolicyConfig(), PolicyConfig(activation="relu", hidden_sizes=(8,), normalize_obs=True)],
)
def test_acting_shortcut_computes_exactly_what_the_modules_compute(config: PolicyConfig) -> None:
    # act() skips nn.Module calls; PPO's first ratio must still be exactly 1.
    policy = MLPPolicy(obs_dim=5, num_actions=4, config=config, seed=0)
    policy.update_obs_stats(torch.randn(32, 5) * 3 + 1)
    obs, mask = torch.randn(16, 5), torch.tensor([[1, 1, 0, 1]] * 16)
    out = policy.act(obs, mask, generator=torch.Generator().manual_seed(0))
    log_probs, _, values = policy.evaluate_actions(obs, out.actions, mask)
    assert torch.equal(out.log_probs, log_probs.detach())
    assert out.values is not None and values is not None
    assert torch.equal(out.values, values.detach())


def test_same_seed_same_weights_and_value_head_optional() -> None:
    a, b = MLPPolicy(4, 2, seed=7), MLPPolicy(4, 2, seed=7)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    no_critic = MLPPolicy(4, 2, value_head=False)
    assert no_critic.predict_values(torch.zeros(1, 4)) is None
    assert (
        no_critic.evaluate_actions(torch.zeros(1, 4), torch.zeros(1, dtype=torch.long))[2] is None
    )


def test_save_and_load_roundtrip(tmp_path: Path) -> None:
    policy = MLPPolicy(3, 2, PolicyConfig(hidden_sizes=(8,), normalize_obs=True), seed=0)
    policy.update_obs_stats(torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    policy.save(tmp_path / "p.pt")
    loaded = MLPPolicy.load(tmp_path / "p.pt")
    obs = torch.randn(4, 3)
    assert torch.allclose(loaded(obs), policy(obs))
    assert loaded.config == policy.config
    assert torch.allclose(load_policy(tmp_path / "p.pt")(obs), policy(obs))


def test_obs_normalization_running_stats() -> None:
    policy = MLPPolicy(2, 2, PolicyConfig(normalize_obs=True))
    policy.update_obs_stats(torch.tensor([[0.0, 10.0], [2.0, 10.0]]))
    policy.update_obs_stats(torch.tensor([[4.0, 10.0]]))
    # all three rows: mean (2, 10), population variance (8/3, 0), up to the 1e-4 prior
    # count at mean 0 / variance 1 (for the constant column: 10^2 * 1e-4 / 3 = 0.0033)
    assert policy.obs_mean.tolist() == pytest.approx([2.0, 10.0], abs=1e-3)
    assert policy.obs_var.tolist() == pytest.approx([8 / 3, 0.0033], abs=1e-3)


def test_bad_shapes_and_sizes_raise() -> None:
    with pytest.raises(ConfigError):
        MLPPolicy(0, 2)
    with pytest.raises(ConfigError):
        PolicyConfig(hidden_sizes=())
    with pytest.raises(InvalidInputError, match="shape"):
        MLPPolicy(3, 2).act(torch.zeros(2, 4))


def test_random_policy_is_uniform_over_available_actions() -> None:
    policy = RandomPolicy(4)
    mask = torch.tensor([[1, 1, 0, 0]]).repeat(2000, 1)
    out = policy.act(torch.zeros(2000, 1), mask, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(out.actions, minlength=4)
    assert counts[2] == counts[3] == 0
    assert abs(int(counts[0]) - 1000) < 120
    assert torch.allclose(out.log_probs, torch.full((2000,), math.log(0.5)))
