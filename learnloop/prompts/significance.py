"""Paired comparison of two prompts on the same held-out sub-tasks.

Both prompts are run on the same items, so the comparison is paired: the
per-item differences ``d_i = b_i - a_i`` carry the information, and the item
difficulty that both share cancels out. The confidence interval of the mean
difference is the percentile interval of the paired bootstrap (Efron and
Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13): resample the
items with replacement, recompute ``mean(d)``. It works for 0/1 outcomes and for
expected successes in [0, 1] alike.

    >>> a = np.array([0.0, 0.0, 1.0, 1.0])
    >>> b = np.array([1.0, 1.0, 1.0, 1.0])
    >>> result = paired_difference(a, b, rng=np.random.default_rng(0))
    >>> result.difference, result.low >= 0.0
    (0.5, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learnloop.errors import ConfigError

__all__ = ["Interval", "PairedDifference", "bootstrap_mean", "paired_difference"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Interval:
    """A mean and its confidence interval."""

    mean: float
    """The sample mean."""
    low: float
    """Lower bound of the interval."""
    high: float
    """Upper bound of the interval."""

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high}


@dataclass(frozen=True, slots=True, kw_only=True)
class PairedDifference:
    """Mean of ``b - a`` over paired items, with its confidence interval."""

    difference: float
    """Mean paired difference ``mean(b_i - a_i)``."""
    low: float
    """Lower bound of the interval."""
    high: float
    """Upper bound of the interval."""
    confidence: float
    """Coverage of the interval, e.g. 0.95."""
    num_items: int
    """Number of paired items."""

    @property
    def significant(self) -> bool:
        """True when the whole interval lies above 0 (b is better than a)."""
        return self.low > 0.0

    def to_dict(self) -> dict[str, float | int | bool]:
        return {
            "difference": self.difference,
            "ci_low": self.low,
            "ci_high": self.high,
            "confidence": self.confidence,
            "num_items": self.num_items,
            "significant": self.significant,
        }


def _check(confidence: float, num_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence!r}; e.g. 0.95")
    if num_resamples < 100:
        raise ConfigError(f"num_resamples must be >= 100, got {num_resamples!r}; e.g. 2000")


def bootstrap_mean(
    values: np.ndarray,
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
    num_resamples: int = 2000,
) -> Interval:
    """Mean of ``values`` with its percentile-bootstrap confidence interval."""
    _check(confidence, num_resamples)
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ConfigError("bootstrap_mean needs at least one value")
    indices = rng.integers(values.size, size=(num_resamples, values.size))
    means = values[indices].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(mean=float(values.mean()), low=float(low), high=float(high))


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    *,
    rng: np.random.Generator,
    confidence: float = 0.95,
    num_resamples: int = 2000,
) -> PairedDifference:
    """``mean(b - a)`` over paired items with its paired-bootstrap confidence interval.

    Raises:
        ConfigError: ``a`` and ``b`` differ in length or are empty.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ConfigError(
            f"paired_difference needs two equal-length, non-empty 1-d arrays, got shapes "
            f"{a.shape} and {b.shape}; score both prompts on the same items"
        )
    interval = bootstrap_mean(b - a, rng=rng, confidence=confidence, num_resamples=num_resamples)
    return PairedDifference(
        difference=interval.mean,
        low=interval.low,
        high=interval.high,
        confidence=confidence,
        num_items=int(a.size),
    )
