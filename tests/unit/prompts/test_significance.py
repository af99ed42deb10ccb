from __future__ import annotations

import doctest

import numpy as np
import pytest

import learnloop.prompts.significance
from learnloop.errors import ConfigError
from learnloop.prompts.significance import bootstrap_mean, paired_difference


def test_identical_prompts_differ_by_exactly_zero() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.3])
    result = paired_difference(scores, scores, rng=np.random.default_rng(0))
    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
    assert not result.significant


def test_a_constant_gain_has_a_degenerate_interval() -> None:
    a = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    result = paired_difference(a, a + 0.25, rng=np.random.default_rng(0))
    assert result.difference == pytest.approx(0.25)
    assert result.low == pytest.approx(0.25) and result.high == pytest.approx(0.25)
    assert result.significant and result.num_items == 5


def test_interval_matches_the_normal_approximation_on_many_items() -> None:
    """200 items, d = 1 on 60 of them and 0 elsewhere: mean 0.3, SE = sqrt(0.3*0.7/200)."""
    a = np.zeros(200)
    b = np.concatenate([np.ones(60), np.zeros(140)])
    result = paired_difference(a, b, rng=np.random.default_rng(1), num_resamples=4000)
    se = np.sqrt(0.3 * 0.7 / 200)  # 0.0324
    assert result.difference == pytest.approx(0.3)
    assert result.low == pytest.approx(0.3 - 1.96 * se, abs=0.012)
    assert result.high == pytest.approx(0.3 + 1.96 * se, abs=0.012)


def test_mixed_signs_are_not_significant() -> None:
    a = np.array([1.0, 0.0] * 20)
    b = np.array([0.0, 1.0] * 20)
    result = paired_difference(a, b, rng=np.random.default_rng(0))
    assert result.difference == 0.0 and result.low < 0 < result.high and not result.significant


def test_same_seed_same_interval() -> None:
    values = np.random.default_rng(5).random(50)
    first = bootstrap_mean(values, rng=np.random.default_rng(3))
    second = bootstrap_mean(values, rng=np.random.default_rng(3))
    assert first == second and first.low <= first.mean <= first.high


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "fragment"),
    [
        ([0.0, 1.0], [1.0], {}, "equal-length"),
        ([], [], {}, "equal-length"),
        ([0.0], [1.0], {"confidence": 1.0}, "confidence"),
        ([0.0], [1.0], {"num_resamples": 10}, "num_resamples"),
    ],
)
def test_bad_input_names_the_fix(
    a: list[float], b: list[float], kwargs: dict[str, float], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        paired_difference(np.array(a), np.array(b), rng=np.random.default_rng(0), **kwargs)  # type: ignore[arg-type]


def test_docstring_examples_run() -> None:
    assert doctest.testmod(learnloop.prompts.significance).failed == 0
