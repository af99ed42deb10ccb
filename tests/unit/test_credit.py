"""Credit assignment against numbers worked by hand."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import learnloop.credit
from learnloop.credit import (
    assign_credit,
    attribution_weights,
    compute_gae,
    discounted_returns,
    group_normalize,
    success_score,
)
from learnloop.episode import Episode, OutcomeStatus, Step
from learnloop.errors import ConfigError, InvalidInputError

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(learnloop.credit)
    assert result.attempted > 0
    assert result.failed == 0


# --- discounted returns ----------------------------------------------------------------


def test_returns_of_three_ones() -> None:
    # G_2 = 1, G_1 = 1 + 0.9 = 1.9, G_0 = 1 + 0.9 * 1.9 = 2.71
    np.testing.assert_allclose(discounted_returns([1, 1, 1], 0.9), [2.71, 1.9, 1.0])


def test_returns_stop_at_dones() -> None:
    # episode A = [1, 2] (done after index 1), episode B = [3, 4] truncated
    # A: G_1 = 2, G_0 = 1 + 0.5 * 2 = 2; B: G_3 = 4, G_2 = 3 + 0.5 * 4 = 5
    np.testing.assert_allclose(
        discounted_returns([1, 2, 3, 4], 0.5, dones=[0, 1, 0, 0]), [2, 2, 5, 4]
    )


def test_returns_gamma_extremes() -> None:
    np.testing.assert_allclose(discounted_returns([1, -2, 3], 1.0), [2, 1, 3])
    np.testing.assert_allclose(discounted_returns([1, -2, 3], 0.0), [1, -2, 3])
    assert discounted_returns([], 0.9).shape == (0,)


@pytest.mark.parametrize(
    ("rewards", "gamma", "dones"),
    [
        ([1, np.nan], 0.9, None),
        ([1, np.inf], 0.9, None),
        ([[1, 2]], 0.9, None),
        ([1, 2], 1.5, None),
        ([1, 2], -0.1, None),
        ([1, 2], 0.9, [0]),
        ([1, 2], 0.9, [0, 2]),
        (["a"], 0.9, None),
    ],
)
def test_returns_reject_bad_input(rewards: object, gamma: float, dones: object) -> None:
    with pytest.raises(InvalidInputError):
        discounted_returns(rewards, gamma, dones)  # type: ignore[arg-type]


# --- GAE -------------------------------------------------------------------------------


def test_gae_with_done_in_the_middle() -> None:
    # gamma 0.9, lam 0.8 (gamma * lam = 0.72), done after step 1, V(s_4) = 2.0
    # t=3: delta = 1 + 0.9*2.0 - 0.0 = 2.8                 A = 2.8
    # t=2: delta = 2 + 0.9*0.0 - 0.5 = 1.5                 A = 1.5 + 0.72*2.8 = 3.516
    # t=1: done, delta = 0 - 1.0 = -1.0                    A = -1.0
    # t=0: delta = 1 + 0.9*1.0 - 0.5 = 1.4                 A = 1.4 + 0.72*(-1.0) = 0.68
    adv, ret = compute_gae(
        rewards=[1.0, 0.0, 2.0, 1.0],
        values=[0.5, 1.0, 0.5, 0.0],
        dones=[0, 1, 0, 0],
        last_value=2.0,
        gamma=0.9,
        lam=0.8,
    )
    np.testing.assert_allclose(adv, [0.68, -1.0, 3.516, 2.8])
    np.testing.assert_allclose(ret, [1.18, 0.0, 4.016, 2.8])


def test_gae_lambda_one_is_monte_carlo_minus_value() -> None:
    rewards, values = [1.0, 2.0, 3.0], [0.3, -0.2, 1.0]
    adv, ret = compute_gae(rewards, values, [0, 0, 1], 5.0, gamma=0.9, lam=1.0)
    np.testing.assert_allclose(ret, discounted_returns(rewards, 0.9))
    np.testing.assert_allclose(adv, discounted_returns(rewards, 0.9) - np.array(values))


def test_gae_lambda_zero_is_td_error() -> None:
    # A_t = r_t + gamma V(s_{t+1}) - V(s_t); the last step bootstraps from 4.0
    adv, _ = compute_gae([1.0, 1.0], [2.0, 3.0], None, 4.0, gamma=0.5, lam=0.0)
    np.testing.assert_allclose(adv, [1 + 0.5 * 3 - 2, 1 + 0.5 * 4 - 3])


def test_gae_batched_columns_are_independent() -> None:
    rewards = np.array([[1.0, 0.0], [0.0, 2.0], [2.0, 1.0], [1.0, 1.0]])
    values = np.array([[0.5, 0.1], [1.0, 0.2], [0.5, 0.3], [0.0, 0.4]])
    dones = np.array([[0, 0], [1, 0], [0, 1], [0, 0]])
    last = np.array([2.0, -1.0])
    adv, ret = compute_gae(rewards, values, dones, last, gamma=0.9, lam=0.8)
    for col in range(2):
        a, r = compute_gae(
            rewards[:, col], values[:, col], dones[:, col], last[col], gamma=0.9, lam=0.8
        )
        np.testing.assert_allclose(adv[:, col], a)
        np.testing.assert_allclose(ret[:, col], r)
    np.testing.assert_allclose(adv[:, 0], [0.68, -1.0, 3.516, 2.8])


def test_gae_rejects_mismatched_shapes() -> None:
    with pytest.raises(InvalidInputError, match="values has shape"):
        compute_gae([1, 2], [1], None, 0.0, 0.9, 0.9)
    with pytest.raises(InvalidInputError, match="last_value"):
        compute_gae([[1, 2]], [[1, 2]], None, [0.0, 0.0, 0.0], 0.9, 0.9)
    with pytest.raises(InvalidInputError, match="lam"):
        compute_gae([1], [1], None, 0.0, 0.9, 1.1)
    with pytest.raises(InvalidInputError, match="non-finite"):
        compute_gae([1], [np.nan], None, 0.0, 0.9, 0.9)


# --- group normalization ---------------------------------------------------------------


def test_group_normalize_two_and_two() -> None:
    # mean 0.5, population std 0.5
    np.testing.assert_allclose(group_normalize([1, 0, 0, 1]), [1, -1, -1, 1], atol=1e-7)


def test_group_normalize_hand_example() -> None:
    # [1, 2, 3, 6]: mean 3, variance (4 + 1 + 0 + 9) / 4 = 3.5
    std = np.sqrt(3.5)
    np.testing.assert_allclose(
        group_normalize([1, 2, 3, 6], eps=0.0 + 1e-12),
        [-2 / std, -1 / std, 0.0, 3 / std],
    )


@pytest.mark.parametrize("rewards", [[0.1, 0.1, 0.1], [5.0], [-3.0, -3.0], []])
def test_group_normalize_all_equal_gives_zeros(rewards: list[float]) -> None:
    # mean([0.1] * 3) != 0.1 in floating point: without the equality check the
    # rounding noise (~1e-17) divided by eps would give ~1e-9 instead of exact zeros
    out = group_normalize(rewards)
    assert out.shape == (len(rewards),)
    assert np.all(out == 0.0)


def test_group_normalize_by_group_id() -> None:
    out = group_normalize([1, 0, 7, 7, 3, 1], group_ids=["a", "a", "b", "b", "c", "c"])
    np.testing.assert_allclose(out, [1, -1, 0, 0, 1, -1], atol=1e-7)


def test_group_normalize_rejects_bad_eps_and_ids() -> None:
    with pytest.raises(InvalidInputError, match="eps"):
        group_normalize([1, 2], eps=0.0)
    with pytest.raises(InvalidInputError, match="group_ids"):
        group_normalize([1, 2], group_ids=[1])


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=1, max_size=20))
def test_group_normalize_has_mean_zero_and_unit_std(rewards: list[float]) -> None:
    out = group_normalize(rewards)
    assert np.all(np.isfinite(out))
    assert abs(out.mean()) < 1e-6
    if np.ptp(rewards) > 1e-3:
        assert abs(out.std() - 1.0) < 1e-6


# --- attribution -----------------------------------------------------------------------


def test_attribution_three_steps_by_hand() -> None:
    # w_0 = 0.9^2 * (0.5 + 0.5*1.0) = 0.81
    # w_1 = 0.9^1 * (0.5 + 0.5*0.0) = 0.45
    # w_2 = 0.9^0 * (0.5 + 0.5*0.5) = 0.75       sum = 2.01
    weights = attribution_weights([1.0, 0.0, 0.5])
    np.testing.assert_allclose(weights, [0.81 / 2.01, 0.45 / 2.01, 0.75 / 2.01])
    np.testing.assert_allclose(weights, [0.4029850746, 0.2238805970, 0.3731343284], atol=1e-9)


def test_attribution_decay_zero_and_one() -> None:
    np.testing.assert_allclose(attribution_weights([0.3, 0.3, 0.3], decay=0.0), [0, 0, 1])
    np.testing.assert_allclose(attribution_weights([1.0, 0.0], decay=1.0), [2 / 3, 1 / 3])
    assert attribution_weights([]).shape == (0,)


def test_attribution_survives_underflow() -> None:
    # decay^(n-1-i) underflows to 0 for the earlier steps; the last weight is always
    # in [0.5, 1], so the weights stay finite and normalized
    weights = attribution_weights([0.0] * 400, decay=1e-300)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[-1] == pytest.approx(1.0)


def test_attribution_rejects_out_of_range() -> None:
    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        attribution_weights([0.5, 1.5])
    with pytest.raises(InvalidInputError, match="decay"):
        attribution_weights([0.5], decay=2.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30),
    st.floats(0.0, 1.0),
)
def test_attribution_sums_to_one_and_never_decreases_with_sure_steps(
    confidences: list[float], decay: float
) -> None:
    weights = attribution_weights(confidences, decay)
    assert weights.sum() == pytest.approx(1.0)
    assert np.all(weights >= 0.0)
    if decay > 0:
        # with equal confidence, a later step never gets less than an earlier one
        flat = attribution_weights([confidences[0]] * len(confidences), decay)
        assert np.all(np.diff(flat) >= -1e-15)


# --- success score ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "expected", "score"),
    [
        ({"x": 11.0}, {"x": 10.0}, 1.0),  # exactly 10% relative: matches
        ({"x": 9.0}, {"x": 10.0}, 1.0),
        ({"x": 11.01}, {"x": 10.0}, 0.0),  # just past 10%
        ({"x": 1.1}, {"x": 1.0}, 1.0),  # 10% with binary rounding (1.1 - 1.0 > 0.1)
        ({"x": 0.15}, {"x": 0.1}, 1.0),  # 0.05 absolute beats 10% of 0.1
        ({"x": 0.05}, {"x": 0.0}, 1.0),
        ({"x": 0.16}, {"x": 0.1}, 0.0),
        ({"x": -0.04}, {"x": 0.0}, 1.0),
        ({"unit": "m"}, {"unit": "cm"}, 0.0),  # mismatched string
        ({"unit": "cm"}, {"unit": "cm"}, 1.0),
        ({"x": 10.5, "unit": "m"}, {"x": 10.0, "unit": "cm"}, 0.5),
        ({"x": 1}, {"x": 1, "y": 2, "z": [1]}, 1 / 3),  # missing keys do not match
        ({"ok": True}, {"ok": 1}, 0.0),  # a flag is not a count
        ({"ok": True}, {"ok": True}, 1.0),
        ({"x": "10"}, {"x": 10}, 0.0),
        (None, {"x": 1}, 0.0),
    ],
)
def test_success_score_matches(outcome: dict | None, expected: dict, score: float) -> None:
    assert success_score(outcome, expected) == pytest.approx(score)


def test_success_score_errors_give_zero() -> None:
    assert success_score({"error": "boom", "x": 1}, {"x": 1}) == 0.0
    assert success_score({"status": "error", "x": 1}, {"x": 1}) == 0.0
    assert success_score({"x": 1}, {"x": 1}, status="error") == 0.0
    assert success_score({"error": "boom"}, None) == 0.0
    # an explicit "no error" is not an error
    assert success_score({"error": None, "x": 1}, {"x": 1}) == 1.0


def test_success_score_without_expectation() -> None:
    assert success_score({"x": 1}, None) == 0.5
    assert success_score({"x": 1}, {}) == 0.5
    assert success_score(None, None) == 0.5
    assert success_score(None, None, OutcomeStatus.TIMEOUT) == 0.2
    assert success_score({"status": "timeout"}, None) == 0.2
    assert success_score(None, None, "timeout") == 0.2
    # with an expectation, timeout does not override the match
    assert success_score({"x": 1}, {"x": 1}, status="timeout") == 1.0


def test_success_score_rejects_non_mappings() -> None:
    with pytest.raises(InvalidInputError, match="outcome"):
        success_score([1], {"x": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="expected"):
        success_score({"x": 1}, 1)  # type: ignore[arg-type]


# --- assign_credit ---------------------------------------------------------------------


def three_step_episode(**fields: object) -> Episode:
    steps = [
        Step.new(0, "search", tool="search", reward=0.0, confidence=1.0),
        Step.new(1, "calc", tool="calc", reward=0.0, confidence=0.0),
        Step.new(2, "answer", reward=0.0, confidence=0.5),
    ]
    return Episode.new("task", steps=steps, **fields)


def test_assign_credit_return() -> None:
    ep = three_step_episode(status="success", terminal_reward=1.0)
    credited = assign_credit(ep, "return", gamma=0.9)
    # rewards [0, 0, 1] -> G = [0.81, 0.9, 1]
    assert [s.credit for s in credited.steps] == pytest.approx([0.81, 0.9, 1.0])
    assert [s.reward for s in credited.steps] == [0.0, 0.0, 0.0]  # only credit changes
    assert ep.steps[0].credit is None  # the original is untouched
    assert credited.id == ep.id and credited.terminal_reward == 1.0


def test_assign_credit_advantage_finished_vs_truncated() -> None:
    values = [0.5, 0.5, 0.5]
    done = three_step_episode(status="success", terminal_reward=1.0)
    # gamma = lam = 1, done at the end: A_t = G_t - V_t = 1 - 0.5
    credited = assign_credit(done, "advantage", gamma=1.0, lam=1.0, values=values, last_value=9)
    assert [s.credit for s in credited.steps] == pytest.approx([0.5, 0.5, 0.5])
    # timed out: bootstrapped with V(s_T) = 2 -> A_t = 1 + 2 - 0.5
    cut = three_step_episode(status="timeout", terminal_reward=1.0)
    credited = assign_credit(cut, "advantage", gamma=1.0, lam=1.0, values=values, last_value=2)
    assert [s.credit for s in credited.steps] == pytest.approx([2.5, 2.5, 2.5])


def test_assign_credit_advantage_defaults_to_zero_values() -> None:
    ep = three_step_episode(status="failure", terminal_reward=-1.0)
    credited = assign_credit(ep, "advantage", gamma=0.5, lam=0.5)
    # V = 0: delta = [0, 0, -1]; A_2 = -1, A_1 = -0.25, A_0 = -0.0625
    assert [s.credit for s in credited.steps] == pytest.approx([-0.0625, -0.25, -1.0])


def test_assign_credit_attribution() -> None:
    ep = three_step_episode(status="success", terminal_reward=2.01)
    credited = assign_credit(ep, "attribution")
    # weights 0.81, 0.45, 0.75 over 2.01, times the total reward 2.01
    assert [s.credit for s in credited.steps] == pytest.approx([0.81, 0.45, 0.75])
    assert sum(s.credit or 0.0 for s in credited.steps) == pytest.approx(2.01)
    # explicit final reward; missing confidences use default_confidence
    bare = Episode.new("t", steps=[Step.new(0, "a"), Step.new(1, "b", confidence=1.0)])
    credited = assign_credit(bare, "attribution", decay=1.0, default_confidence=0.0, reward=3.0)
    # w = [0.5, 1.0] -> [1/3, 2/3] of 3
    assert [s.credit for s in credited.steps] == pytest.approx([1.0, 2.0])


def test_assign_credit_edge_cases() -> None:
    empty = Episode.new("t")
    assert assign_credit(empty, "advantage") is empty
    with pytest.raises(ConfigError, match="unknown credit method"):
        assign_credit(three_step_episode(), "magic")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="values has 2 entries"):
        assign_credit(three_step_episode(), "advantage", values=[0.0, 0.0])
