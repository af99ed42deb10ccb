import math

import numpy as np
import pytest

from learnloop.bandits.contexts import KeywordFeaturizer
from learnloop.bandits.policies import (
    UCB1,
    BetaThompson,
    BetaThompsonConfig,
    EpsilonGreedyQ,
    EpsilonGreedyQConfig,
    UCB1Config,
    argmax_probabilities,
    epsilon_argmax_choice,
    q_update,
)
from learnloop.errors import ConfigError, InvalidInputError

CTX = KeywordFeaturizer()("grep the logs")


def test_q_update_by_hand():
    assert q_update(0.0, 1.0, 0.1) == pytest.approx(0.1)
    assert q_update(0.1, 1.0, 0.1) == pytest.approx(0.19)
    assert q_update(0.19, 0.0, 0.1) == pytest.approx(0.171)


def test_spec_q_learner_defaults_and_epsilon_schedule():
    policy = EpsilonGreedyQ()
    policy.add_arms(3)
    assert (
        policy.config.epsilon,
        policy.config.epsilon_decay,
        policy.config.epsilon_min,
        policy.config.alpha,
    ) == (0.1, 0.995, 0.01, 0.1)
    for _ in range(10):
        policy.update(CTX, 2, 1.0)
    assert policy.epsilon == pytest.approx(0.1 * 0.995**10)
    assert policy.entry("search", 2) == {"q": pytest.approx(1 - 0.9**10), "n": 10.0}
    for _ in range(1000):
        policy.update(CTX, 2, 1.0)
    assert policy.epsilon == 0.01  # 0.1 * 0.995**1010 < 0.01
    with pytest.raises(InvalidInputError):
        policy.update(CTX, 5, 1.0)
    with pytest.raises(ConfigError):
        EpsilonGreedyQConfig(epsilon=0.005, epsilon_min=0.01)


def test_argmax_probabilities_ties_and_epsilon():
    p = argmax_probabilities(np.array([1.0, 3.0, 3.0, 0.0]), 0.2)
    np.testing.assert_allclose(p, [0.05, 0.45, 0.45, 0.05])


def test_epsilon_argmax_propensity_matches_frequency():
    scores = np.array([1.0, 3.0, 3.0, 0.0])
    rng = np.random.default_rng(0)
    n = 40_000
    counts = np.zeros(4)
    for _ in range(n):
        position, propensity = epsilon_argmax_choice(scores, 0.2, rng)
        counts[position] += 1
        assert propensity == pytest.approx(argmax_probabilities(scores, 0.2)[position])
    np.testing.assert_allclose(counts / n, [0.05, 0.45, 0.45, 0.05], atol=0.01)


def test_ucb1_scores_by_hand_and_untried_first():
    policy = UCB1()
    policy.add_arms(3)
    arms = np.arange(3)
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(3):
        position, _ = policy.select(CTX, arms, rng)
        assert position not in seen
        seen.add(position)
        policy.update(CTX, position, 1.0 if position == 0 else 0.0)
    # counts 1,1,1, sums 1,0,0 -> scores 1 + sqrt(2 ln 3), sqrt(2 ln 3) twice
    bonus = math.sqrt(2 * math.log(3))
    np.testing.assert_allclose(policy._scores(CTX, arms), [1 + bonus, bonus, bonus])
    assert policy.select(CTX, arms, rng) == (0, 1.0)


def test_ucb1_discount_by_hand():
    policy = UCB1(UCB1Config(discount=0.5))
    policy.add_arms(2)
    policy.update(CTX, 0, 1.0)
    policy.update(CTX, 1, 1.0)
    assert policy.counts("search").tolist() == [0.5, 1.0]
    assert policy.entry("search", 0)["s"] == 0.5


def test_ucb1_two_armed_regret_within_auer_bound():
    # Auer et al. 2002, Thm 1: E[regret] <= 8 ln T / delta + (1 + pi^2/3) delta
    rng = np.random.default_rng(1)
    means, T = np.array([0.9, 0.5]), 3000
    policy = UCB1()
    policy.add_arms(2)
    regret = 0.0
    for _ in range(T):
        position, _ = policy.select(CTX, np.arange(2), rng)
        policy.update(CTX, position, float(rng.random() < means[position]))
        regret += means.max() - means[position]
    bound = 8 * math.log(T) / 0.4 + (1 + math.pi**2 / 3) * 0.4
    assert regret < bound
    assert regret > 0


def test_beta_thompson_updates_and_propensity_estimate():
    policy = BetaThompson(BetaThompsonConfig(propensity_samples=4000))
    policy.add_arms(2)
    for _ in range(8):
        policy.update(CTX, 0, 1.0)
    policy.update(CTX, 1, 0.25)
    assert policy.entry("search", 0) == {"a": 9.0, "b": 1.0, "n": 8.0}
    assert policy.entry("search", 1) == {"a": 1.25, "b": 1.75, "n": 1.0}
    # P(Beta(9,1) > Beta(1.25,1.75)) is ~0.97; the estimate has std error ~0.003
    rng = np.random.default_rng(0)
    draws = rng.beta([9.0, 1.25], [1.0, 1.75], size=(200_000, 2))
    exact = float((draws[:, 0] > draws[:, 1]).mean())
    assert policy.probabilities(CTX, np.arange(2))[0] == pytest.approx(exact, abs=0.015)


def test_tabular_round_trip_and_cold_start_growth():
    for policy in (EpsilonGreedyQ(), UCB1(), BetaThompson()):
        policy.add_arms(2)
        policy.update(CTX, 1, 1.0)
        policy.add_arms(20)  # grows past the initial capacity
        assert policy.values(CTX, np.arange(20)).shape == (20,)
        clone = type(policy).from_dict(policy.to_dict())
        np.testing.assert_allclose(
            clone.values(CTX, np.arange(20)), policy.values(CTX, np.arange(20))
        )
        assert clone.num_updates == 1
