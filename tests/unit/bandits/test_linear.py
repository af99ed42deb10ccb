import math

import numpy as np
import pytest

from learnloop.bandits.contexts import Context, HashedTextFeaturizer
from learnloop.bandits.linear import (
    DiagonalGaussianConfig,
    DiagonalGaussianRegression,
    GaussianMaxProbability,
    LinearThompson,
    LinearThompsonConfig,
    LinUCB,
    LinUCBConfig,
    SquareCB,
    normal_cdf,
    probability_of_max,
    squarecb_probabilities,
)


def ctx(indices, values, dim=8):
    return Context(
        key="*",
        indices=np.array(indices, dtype=np.intp),
        values=np.array(values, dtype=float),
        dim=dim,
    )


def test_normal_cdf_matches_erf():
    z = np.linspace(-6, 6, 241)
    exact = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in z])
    np.testing.assert_allclose(normal_cdf(z), exact, atol=2e-7)


def test_probability_of_max_two_arms_closed_form_and_three_arms_monte_carlo():
    nodes, weights = np.polynomial.hermite.hermgauss(24)
    means, stds = np.array([0.3, 0.1]), np.array([0.2, 0.3])
    exact = 0.5 * math.erfc(-(0.2 / math.hypot(0.2, 0.3)) / math.sqrt(2))
    assert probability_of_max(means, stds, 0, nodes, weights) == pytest.approx(exact, abs=1e-6)
    means, stds = np.array([0.0, 0.1, -0.2]), np.array([0.3, 0.1, 0.5])
    draws = np.random.default_rng(0).normal(means, stds, size=(400_000, 3)).argmax(axis=1)
    for k in range(3):
        assert probability_of_max(means, stds, k, nodes, weights) == pytest.approx(
            float((draws == k).mean()), abs=3e-3
        )


def test_fast_max_probability_two_arms_closed_form():
    fast = GaussianMaxProbability()
    # std ratios 1.5 (quadrature), 10 and 100 (sharp steps: Simpson), gaps of -3 to +3 sd
    for ratio in (1.5, 10.0, 100.0):
        for gap in np.linspace(-3.0, 3.0, 13):
            stds = np.array([0.1, 0.1 / ratio])
            means = np.array([0.0, -gap * math.hypot(*stds)])
            exact = 0.5 * math.erfc(-gap / math.sqrt(2))
            assert fast(means, stds, 0) == pytest.approx(exact, abs=3e-4)
            assert fast(means, stds, 1) == pytest.approx(1 - exact, abs=3e-4)
    assert fast(np.array([0.2]), np.array([0.1]), 0) == 1.0


def test_fast_max_probability_matches_monte_carlo_on_thirty_arms():
    """The logged propensity against sampling, for the states a trained policy is in."""
    rng = np.random.default_rng(7)
    fast = GaussianMaxProbability()
    for _ in range(2):
        # 30 tools, stds up to 20x apart (trained vs cold tools), many close contenders
        means = rng.normal(0.0, 0.1, 30)
        stds = 0.1 * np.sqrt(rng.uniform(0.0025, 1.0, 30))
        draws = (means + stds * rng.standard_normal((200_000, 30))).argmax(axis=1)
        frequency = np.bincount(draws, minlength=30) / draws.size
        p = np.array([fast(means, stds, k) for k in range(30)])
        assert p.sum() == pytest.approx(1.0, abs=2e-3)
        # 4 standard errors of the Monte Carlo frequency, plus 1e-3 for the quadrature
        np.testing.assert_array_less(
            np.abs(p - frequency), 4 * np.sqrt(frequency / draws.size) + 1e-3
        )


def test_fast_max_probability_rejects_bad_settings_and_survives_extremes():
    with pytest.raises(ValueError, match="num_nodes"):
        GaussianMaxProbability(2)
    fast = GaussianMaxProbability()
    # a rival a million standard deviations away must neither overflow nor warn
    assert fast(np.array([0.0, 1e6, -1e6]), np.array([0.1, 1e-3, 1e-3]), 0) == pytest.approx(
        0.0, abs=1e-12
    )
    assert fast(np.array([0.0, -1e6]), np.array([0.1, 1e-3]), 0) == pytest.approx(1.0, abs=1e-9)


def test_squarecb_probabilities_by_hand():
    p = squarecb_probabilities(np.array([0.5, 1.0, 0.0]), 4.0)
    # others: 1/(3 + 4*0.5) = 0.2, 1/(3 + 4*1) = 1/7; best takes the rest
    np.testing.assert_allclose(p, [0.2, 1 - 0.2 - 1 / 7, 1 / 7])


def test_diagonal_update_is_the_kalman_update_for_one_feature():
    model = DiagonalGaussianRegression(
        4, DiagonalGaussianConfig(prior_variance=1.0, noise_variance=0.25, drift=0.0)
    )
    model.grow(1)
    c = ctx([2], [1.0], dim=4)
    model.update(c, 0, 1.0)
    # gain = 1/(1+0.25) = 0.8 -> mean 0.8, variance 1*(1-0.8) = 0.2
    mean, var = model.predict(c, np.array([0]))
    assert mean[0] == pytest.approx(0.8) and var[0] == pytest.approx(0.2)
    model.update(c, 0, 0.0)
    # gain = 0.2/0.45 -> mean 0.8 - 0.8*0.2/0.45, variance 0.2*(1 - 0.2/0.45)
    mean, var = model.predict(c, np.array([0]))
    assert mean[0] == pytest.approx(0.8 - 0.8 * 0.2 / 0.45)
    assert var[0] == pytest.approx(0.2 * (1 - 0.2 / 0.45))


def test_drift_lets_the_estimate_follow_a_change():
    c = ctx([0], [1.0])
    estimates = {}
    for drift in (0.0, 0.01):
        model = DiagonalGaussianRegression(8, DiagonalGaussianConfig(drift=drift))
        model.grow(1)
        for _ in range(500):
            model.update(c, 0, 1.0)
        for _ in range(50):
            model.update(c, 0, 0.0)
        estimates[drift] = model.predict(c, np.array([0]))[0][0]
    assert estimates[0.01] < 0.2 < 0.85 < estimates[0.0]


def test_linucb_matches_closed_form_ridge():
    rng = np.random.default_rng(0)
    policy = LinUCB(8, LinUCBConfig(alpha=0.0, ridge=2.0))
    policy.add_arms(2)
    xs, rs = [], []
    for _ in range(30):
        idx = np.sort(rng.choice(8, 3, replace=False))
        x = rng.random(3)
        r = float(rng.random())
        policy.update(ctx(idx, x), 1, r)
        dense = np.zeros(8)
        dense[idx] = x
        xs.append(dense)
        rs.append(r)
    X, R = np.array(xs), np.array(rs)
    theta = np.linalg.solve(X.T @ X + 2.0 * np.eye(8), X.T @ R)
    probe = ctx([1, 4], [0.6, 0.8])
    assert policy.values(probe, np.array([1]))[0] == pytest.approx(theta[1] * 0.6 + theta[4] * 0.8)
    # discounted: A = sum g^(n-i) x x^T + lambda I (ridge kept), b = sum g^(n-i) r x
    disc = LinUCB(8, LinUCBConfig(alpha=0.0, ridge=2.0, discount=0.9))
    disc.add_arms(1)
    for x, r in zip(X, R, strict=True):
        idx = np.flatnonzero(x)
        disc.update(ctx(idx, x[idx]), 0, r)
    g = 0.9 ** np.arange(len(R))[::-1]
    theta = np.linalg.solve((X * g[:, None]).T @ X + 2.0 * np.eye(8), (X * g[:, None]).T @ R)
    assert disc.values(probe, np.array([0]))[0] == pytest.approx(theta[1] * 0.6 + theta[4] * 0.8)
    clone = LinUCB.from_dict(policy.to_dict())
    assert clone.values(probe, np.array([1]))[0] == pytest.approx(
        policy.values(probe, np.array([1]))[0]
    )


def test_linear_thompson_propensity_matches_choice_frequency():
    policy = LinearThompson(8, LinearThompsonConfig(exploration=1.0))
    policy.add_arms(3)
    c = ctx([0, 3], [0.6, 0.8])
    for arm, r in ((0, 1.0), (1, 0.0), (0, 1.0), (2, 1.0), (1, 1.0)):
        policy.update(c, arm, r)
    rng = np.random.default_rng(0)
    arms = np.arange(3)
    counts, props = np.zeros(3), {}
    for _ in range(20_000):
        position, p = policy.select(c, arms, rng)
        counts[position] += 1
        props[position] = p
    exact = policy.probabilities(c, arms)
    assert exact.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(counts / 20_000, exact, atol=0.012)
    for position, p in props.items():
        # select logs the raw quadrature, probabilities() renormalises it: they differ by the table error
        assert p == pytest.approx(exact[position], abs=1e-5)


@pytest.mark.parametrize("cls", [LinearThompson, SquareCB])
def test_contextual_policies_learn_which_tool_fits_which_words(cls):
    f = HashedTextFeaturizer(dim=256)
    policy = cls(256)
    policy.add_arms(3)
    rng = np.random.default_rng(3)
    tasks = {"fetch the web page": 0, "grep the source code": 1, "parse this csv table": 2}
    texts = list(tasks)
    correct = []
    for t in range(1500):
        text = texts[t % 3]
        position, _ = policy.select(f(text), np.arange(3), rng)
        p = 0.9 if position == tasks[text] else 0.2
        policy.update(f(text), position, float(rng.random() < p))
        correct.append(position == tasks[text])
    assert np.mean(correct[-300:]) > 0.9
    clone = cls.from_dict(policy.to_dict())
    np.testing.assert_allclose(
        clone.values(f(texts[0]), np.arange(3)), policy.values(f(texts[0]), np.arange(3))
    )
