"""Pure statistics for comparing two arms: always-valid sequential tests and SRM.

Arms are compared with the mixture sequential probability ratio test
(:func:`msprt_log_lr`), whose p-values stay valid however often the results are
looked at; guardrails use its one-sided form (:func:`msprt_one_sided_log_lr`);
:func:`confidence_sequence` inverts the test into an always-valid interval; a
chi-square test flags a sample-ratio mismatch (:func:`sample_ratio_mismatch`).
:func:`sequential_test` puts these together for two :class:`MetricSummary` values.
Nothing here touches a store.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from learnloop.episode import JSONValue

__all__ = [
    "REWARD",
    "SUCCESS",
    "MetricSummary",
    "MetricTest",
    "confidence_sequence",
    "msprt_log_lr",
    "msprt_one_sided_log_lr",
    "sample_ratio_mismatch",
    "sequential_test",
]

# The two metrics every outcome carries: a success flag (as 0/1) and a reward.
SUCCESS, REWARD = "success", "reward"
_VARIANCE_FLOOR = 1e-12


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """Count, mean and sum of squared deviations (``m2``) of one metric of one arm."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @property
    def variance(self) -> float:
        """Sample variance (n - 1 in the denominator); 0 with fewer than two values."""
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0

    @classmethod
    def of(cls, values: Sequence[float]) -> MetricSummary:
        if not values:
            return cls()
        mean = math.fsum(values) / len(values)
        return cls(len(values), mean, math.fsum((x - mean) ** 2 for x in values))

    def merge(self, other: MetricSummary) -> MetricSummary:
        """Combine two summaries (Chan, Golub & LeVeque 1979, eq. 2.1)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        return MetricSummary(
            n,
            self.mean + delta * other.count / n,
            self.m2 + other.m2 + delta * delta * self.count * other.count / n,
        )


def msprt_log_lr(delta: float, variance: float, tau: float) -> float:
    """log of the two-sided mixture likelihood ratio of the mSPRT.

    For an estimate ``delta`` of a difference of means with variance
    ``V = s_b^2/n_b + s_c^2/n_c`` and a normal mixture N(0, tau^2) over the true
    difference, the mixture likelihood ratio against "no difference" is
    (the normal-mixture mSPRT of Robbins 1970 as used for A/B tests by Johari,
    Koomen, Pekelis & Walsh, "Always Valid Inference: Continuous Monitoring of A/B
    Tests", Operations Research 2022, arXiv:1512.04922; their two-sample form has
    V = 2 sigma^2 / n)::

        Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 * delta^2 / (2 V (V + tau^2)))

    Lambda is a (super)martingale under the null, so by Ville's inequality
    P(Lambda ever reaches 1/alpha) <= alpha: ``p = min(1, 1/Lambda)``, minimized over
    looks, is an always-valid p-value.

    >>> round(msprt_log_lr(0.1, 0.001, 0.1), 4)
    3.3465
    """
    tau2 = tau * tau
    variance = max(variance, _VARIANCE_FLOOR)
    return 0.5 * math.log(variance / (variance + tau2)) + tau2 * delta * delta / (
        2.0 * variance * (variance + tau2)
    )


def msprt_one_sided_log_lr(delta: float, variance: float, tau: float) -> float:
    """log of the one-sided (half-normal mixture) likelihood ratio, evidence for delta > 0.

    Mixing the likelihood ratio over a half-normal prior on delta > 0 (density
    2 phi(d / tau) / tau) gives in closed form::

        Lambda+ = 2 * Phi(tau * delta / sqrt(V (V + tau^2))) * Lambda

    with Lambda from :func:`msprt_log_lr` and Phi the standard normal CDF. Under any
    true difference <= 0 it is a supermartingale, so ``min(1, 1/Lambda+)`` is an
    always-valid one-sided p-value (same Ville's-inequality argument as the
    two-sided test; the closed form follows by completing the square).

    >>> round(msprt_one_sided_log_lr(0.1, 0.001, 0.1), 4)
    4.0384
    """
    variance = max(variance, _VARIANCE_FLOOR)
    z = tau * delta / math.sqrt(variance * (variance + tau * tau))
    tail = math.erfc(-z / math.sqrt(2.0))  # = 2 Phi(z)
    if tail <= 0.0:
        return -math.inf
    return msprt_log_lr(delta, variance, tau) + math.log(tail)


def confidence_sequence(
    delta: float, variance: float, tau: float, alpha: float
) -> tuple[float, float]:
    """The always-valid (1 - alpha) confidence interval for the difference.

    The set of differences d the mSPRT does not reject (Lambda(delta - d) < 1/alpha),
    solved for d (the inversion of Johari et al. 2022)::

        delta ± sqrt( V (V + tau^2) / tau^2 * (log((V + tau^2) / V) + 2 log(1/alpha)) )
    """
    tau2 = tau * tau
    variance = max(variance, _VARIANCE_FLOOR)
    half = math.sqrt(
        variance * (variance + tau2) / tau2
        * (math.log((variance + tau2) / variance) + 2.0 * math.log(1.0 / alpha))
    )
    return delta - half, delta + half


def sample_ratio_mismatch(num_baseline: int, num_candidate: int, traffic: float) -> float:
    """p-value of the chi-square test (1 degree of freedom) of the counts against the split.

    ``chi2 = sum((observed - expected)^2 / expected)``; with one degree of freedom
    ``p = erfc(sqrt(chi2 / 2))``. A tiny p-value (< 0.001) means assignment or
    logging is broken and the comparison cannot be trusted (Fabijan et al.,
    "Diagnosing Sample Ratio Mismatch in Online Controlled Experiments", KDD 2019).

    >>> round(sample_ratio_mismatch(5100, 4900, 0.5), 4)
    0.0455
    """
    total = num_baseline + num_candidate
    if total == 0:
        return 1.0
    if traffic <= 0.0 or traffic >= 1.0:
        stray = num_candidate if traffic <= 0.0 else num_baseline
        return 1.0 if stray == 0 else 0.0
    expected_c = total * traffic
    expected_b = total - expected_c
    chi2 = (num_candidate - expected_c) ** 2 / expected_c + (
        num_baseline - expected_b
    ) ** 2 / expected_b
    return math.erfc(math.sqrt(chi2 / 2.0))


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricTest:
    """The sequential comparison of one metric between the arms."""

    metric: str  # The metric compared.
    higher_is_better: bool  # Direction of good.
    margin: float  # Worsening tolerated before p_worse counts it (guardrails).
    alpha: float  # Significance level.
    baseline: MetricSummary  # The baseline arm's numbers.
    candidate: MetricSummary  # The candidate arm's numbers.
    delta: float  # Candidate mean minus baseline mean.
    ci_low: float  # Lower end of the always-valid (1 - alpha) confidence interval of delta.
    ci_high: float  # Upper end of it.
    p_value: float  # Always-valid two-sided p-value for a difference.
    p_worse: float  # Always-valid one-sided p-value for "worse by more than the margin".
    p_better: float  # Always-valid one-sided p-value for "the candidate is better".
    enough_data: bool  # Whether both arms have min_samples values (no test rejects before).

    @property
    def significant(self) -> bool:
        """The arms differ (two-sided)."""
        return self.enough_data and self.p_value <= self.alpha

    @property
    def worse(self) -> bool:
        """The candidate is significantly worse (one-sided, beyond the margin)."""
        return self.enough_data and self.p_worse <= self.alpha

    @property
    def better(self) -> bool:
        """The candidate is significantly better (one-sided)."""
        return self.enough_data and self.p_better <= self.alpha

    def to_dict(self) -> dict[str, JSONValue]:
        """JSON-safe: an unbounded confidence interval end is None."""
        data: dict[str, JSONValue] = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self)
        }
        for arm in ("baseline", "candidate"):
            summary = getattr(self, arm)
            data[arm] = {"count": summary.count, "mean": summary.mean,
                         "variance": summary.variance}
        for end in ("ci_low", "ci_high"):
            data[end] = data[end] if math.isfinite(data[end]) else None
        return {**data, "significant": self.significant, "worse": self.worse,
                "better": self.better}


def _p_of(log_lr: float) -> float:
    return 1.0 if log_lr <= 0.0 else math.exp(-log_lr)


def sequential_test(
    baseline: MetricSummary,
    candidate: MetricSummary,
    *,
    metric: str = SUCCESS,
    higher_is_better: bool = True,
    margin: float = 0.0,
    alpha: float = 0.05,
    mixture_sd: float = 0.25,
    min_samples: int = 30,
) -> MetricTest:
    """Compare two arms' summaries with the mSPRT (see :func:`msprt_log_lr`).

    ``V = s_b^2 / n_b + s_c^2 / n_c`` from the sample variances, and the mixture
    spread is ``tau = mixture_sd * s_pooled``, i.e. effects are weighed in units of
    the metric's standard deviation. Before both arms have ``min_samples`` values
    every p-value is 1.
    """
    delta = candidate.mean - baseline.mean
    if min(baseline.count, candidate.count) < max(min_samples, 2):
        return MetricTest(
            metric=metric, higher_is_better=higher_is_better, margin=margin, alpha=alpha,
            baseline=baseline, candidate=candidate, delta=delta, ci_low=-math.inf,
            ci_high=math.inf, p_value=1.0, p_worse=1.0, p_better=1.0, enough_data=False,
        )
    variance = baseline.variance / baseline.count + candidate.variance / candidate.count
    pooled = (baseline.m2 + candidate.m2) / (baseline.count + candidate.count - 2)
    tau = mixture_sd * max(math.sqrt(pooled), 1e-6)
    harm = -delta if higher_is_better else delta  # > 0: the candidate is worse
    low, high = confidence_sequence(delta, variance, tau, alpha)
    return MetricTest(
        metric=metric, higher_is_better=higher_is_better, margin=margin, alpha=alpha,
        baseline=baseline, candidate=candidate, delta=delta, ci_low=low, ci_high=high,
        p_value=_p_of(msprt_log_lr(delta, variance, tau)),
        p_worse=_p_of(msprt_one_sided_log_lr(harm - margin, variance, tau)),
        p_better=_p_of(msprt_one_sided_log_lr(-harm, variance, tau)),
        enough_data=True,
    )
