"""A/B experiments and staged rollouts of registry versions, with automatic rollback.

An experiment compares two versions of one registry resource: the *baseline* (what
runs now) and the *candidate*. Units (users, sessions, tasks) are assigned to an arm
by hashing the unit id with the experiment's salt into 10,000 buckets
(:func:`bucket_of`), so a unit gets the same version in every process and after
restarts; buckets below ``traffic * 10,000`` get the candidate, so raising the
traffic only ever moves units from baseline to candidate.

**Source of truth for metrics.** Each experiment is one document in the
``experiments`` collection of a :class:`~learnloop.store.DocumentStore`, holding per
arm and per metric the count, mean and sum of squared deviations (merged with
compare-and-set, Chan, Golub & LeVeque 1979). Outcomes reach it through
:meth:`Experiments.record_outcome` / :meth:`~Experiments.record_outcomes` (agents and
simulations) or :meth:`Experiments.record_episode` (a recorded episode, carrying
``metadata["experiment"]``, ``metadata["experiment_arm"]`` and
``versions[resource]``; call it once per episode). :meth:`Experiments.episode_metrics`
recomputes the same numbers from the episode store, to audit the aggregates.

**Statistics.** Arms are compared with the mixture sequential probability ratio
test (:func:`msprt_log_lr`), whose p-values stay valid however often the results are
looked at; guardrails use its one-sided form (:func:`msprt_one_sided_log_lr`); a
chi-square test flags a sample-ratio mismatch (:func:`sample_ratio_mismatch`).

**Staged rollout.** :meth:`Experiments.step_rollout` advances the candidate through
the stages of a :class:`RolloutPolicy` (e.g. 10% → 25% → 50% → 100%) once each arm
has enough outcomes in the stage and the stage has lasted long enough, holds while
not, rolls back to the baseline (traffic 0%, label back) as soon as the primary
metric is significantly worse or a guardrail fires, and promotes the candidate
(moves the ``production`` label) on reaching 100%. Every decision and its reason is
kept in the experiment document.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from learnloop.episode import Episode, JSONValue, check_reward
from learnloop.errors import (
    ClosedError,
    ConfigError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from learnloop.registry import PRODUCTION, Registry, parse_version_ref
from learnloop.store.base import DocumentStore, EpisodeQuery, EpisodeStore

__all__ = [
    "NUM_BUCKETS",
    "Action",
    "Arm",
    "ArmReport",
    "Assigner",
    "Assignment",
    "Decision",
    "Experiment",
    "ExperimentConfig",
    "ExperimentReport",
    "ExperimentStatus",
    "Experiments",
    "Guardrail",
    "MetricSummary",
    "MetricTest",
    "RolloutPolicy",
    "assign_arm",
    "bucket_of",
    "confidence_sequence",
    "msprt_log_lr",
    "msprt_one_sided_log_lr",
    "sample_ratio_mismatch",
    "sequential_test",
]

logger = logging.getLogger(__name__)

EXPERIMENTS = "experiments"
NUM_BUCKETS = 10_000
SUCCESS, REWARD = "success", "reward"
_VARIANCE_FLOOR = 1e-12
_MAX_DECISIONS = 500


class Arm(StrEnum):
    """The two sides of an experiment."""

    BASELINE = "baseline"
    CANDIDATE = "candidate"


class ExperimentStatus(StrEnum):
    """Where an experiment is in its life."""

    RUNNING = "running"
    ROLLED_BACK = "rolled_back"
    COMPLETED = "completed"
    STOPPED = "stopped"


class Action(StrEnum):
    """What a decision did."""

    START = "start"
    HOLD = "hold"
    ADVANCE = "advance"
    ROLLBACK = "rollback"
    COMPLETE = "complete"
    STOP = "stop"


# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Guardrail:
    """A metric that must not get significantly worse (tested one-sided)."""

    metric: str
    """``"success"``, ``"reward"`` or a metric recorded with outcomes (e.g. ``"latency_s"``)."""
    higher_is_better: bool = True
    """Direction of good; False for latency, cost or error counts."""
    margin: float = 0.0
    """Worsening tolerated, in the metric's units, before the guardrail may fire."""

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise ConfigError(f"guardrail metric must be a non-empty name, got {self.metric!r}")
        if not math.isfinite(self.margin) or self.margin < 0:
            raise ConfigError(f"guardrail margin must be finite and >= 0, got {self.margin!r}")



@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentConfig:
    """What an experiment measures and how strict its tests are."""

    metric: str = SUCCESS
    """The primary metric: ``"success"`` (rate), ``"reward"`` (mean) or a recorded metric."""
    higher_is_better: bool = True
    """Direction of good for the primary metric."""
    guardrails: tuple[Guardrail, ...] = ()
    """Metrics that roll a rollout back when significantly worse (one-sided)."""
    alpha: float = 0.05
    """Significance level of every test (always valid: holds under continuous peeking)."""
    mixture_sd: float = 0.25
    """Spread tau of the mSPRT's normal mixture over effects, in pooled standard deviations."""
    min_samples: int = 30
    """Outcomes each arm needs before a test may reject (the normal approximation)."""
    srm_p_value: float = 0.001
    """A sample-ratio-mismatch chi-square p-value below this flags broken assignment."""
    label: str = PRODUCTION
    """The registry label a winner or a completed rollout moves (and a rollback restores)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "guardrails", tuple(self.guardrails))
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"alpha must lie in (0, 1), got {self.alpha!r}; e.g. 0.05")
        if not self.mixture_sd > 0 or not math.isfinite(self.mixture_sd):
            raise ConfigError(f"mixture_sd must be > 0, got {self.mixture_sd!r}; e.g. 0.25")
        if self.min_samples < 2:
            raise ConfigError(f"min_samples must be >= 2, got {self.min_samples}")
        if not 0.0 < self.srm_p_value < 1.0:
            raise ConfigError(f"srm_p_value must lie in (0, 1), got {self.srm_p_value!r}")

    def to_dict(self) -> dict[str, JSONValue]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        guardrails = tuple(Guardrail(**g) for g in data.get("guardrails", ()))
        return cls(**{**data, "guardrails": guardrails})


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutPolicy:
    """How a staged rollout ramps the candidate's traffic."""

    stages: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    """Candidate traffic shares, increasing, ending at 1.0 (reaching it promotes)."""
    min_samples_per_stage: int = 500
    """Outcomes each arm must collect in a stage before the rollout may advance."""
    min_duration_s: float = 3600.0
    """Seconds a stage must last before the rollout may advance."""

    def __post_init__(self) -> None:
        stages = tuple(float(s) for s in self.stages)
        object.__setattr__(self, "stages", stages)
        if len(stages) < 2 or stages[-1] != 1.0:
            raise ConfigError(
                f"stages must have at least two shares and end at 1.0, got {stages}; "
                "e.g. (0.1, 0.25, 0.5, 1.0)"
            )
        if stages[0] <= 0.0 or any(a >= b for a, b in itertools.pairwise(stages)):
            raise ConfigError(f"stages must be > 0 and strictly increasing, got {stages}")
        if self.min_samples_per_stage < 1:
            raise ConfigError(
                f"min_samples_per_stage must be >= 1, got {self.min_samples_per_stage}"
            )
        if not self.min_duration_s >= 0:
            raise ConfigError(f"min_duration_s must be >= 0, got {self.min_duration_s!r}")

    def to_dict(self) -> dict[str, JSONValue]:
        return {**dataclasses.asdict(self), "stages": list(self.stages)}


# --- assignment ----------------------------------------------------------------------


def bucket_of(salt: str, unit_id: str, num_buckets: int = NUM_BUCKETS) -> int:
    """The bucket of ``unit_id`` in ``[0, num_buckets)``.

    ``int.from_bytes(sha256(f"{salt}:{unit_id}".encode("utf-8"))[:8], "big") % num_buckets``:
    the first 8 bytes of the SHA-256 digest as a big-endian integer, modulo the buckets.

    Stable across processes, machines and Python versions (no ``hash()``
    randomization); the modulo bias of 2**64 mod 10,000 is below 1e-15.

    >>> bucket_of("s1", "user-42")
    1781
    """
    digest = hashlib.sha256(f"{salt}:{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_buckets


def assign_arm(salt: str, unit_id: str, traffic: float) -> tuple[Arm, int]:
    """``(arm, bucket)``: the candidate when ``bucket < round(traffic * 10,000)``."""
    bucket = bucket_of(salt, unit_id)
    arm = Arm.CANDIDATE if bucket < round(traffic * NUM_BUCKETS) else Arm.BASELINE
    return arm, bucket


@dataclass(frozen=True, slots=True, kw_only=True)
class Assignment:
    """The version a unit runs under an experiment."""

    experiment: str  # The experiment's name.
    resource: str  # The registry resource under test.
    arm: Arm  # Baseline or candidate.
    version: int  # The registry version of resource to run.
    bucket: int  # The unit's bucket in [0, 10,000).

    @property
    def metadata(self) -> dict[str, JSONValue]:
        """Episode metadata that ties an episode to this experiment and arm."""
        return {"experiment": self.experiment, "experiment_arm": self.arm.value}

    @property
    def versions(self) -> dict[str, str]:
        """``Episode.versions`` entry for the resource, e.g. ``{"planner": "v3"}``."""
        return {self.resource: f"v{self.version}"}


# --- statistics (pure) ---------------------------------------------------------------


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


# --- records -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """One decision about an experiment, with its reason."""

    action: Action  # What was done.
    at: float  # Unix time (the injected clock's) of the decision.
    traffic: float  # Candidate traffic share after the decision.
    stage: int | None  # Rollout stage index after the decision (None for A/B tests).
    reason: str  # Why, in words, with the numbers that decided it.
    count: int = 1  # How many consecutive identical holds this record stands for.

    def to_dict(self) -> dict[str, JSONValue]:
        return {"action": self.action.value, "at": self.at, "traffic": self.traffic,
                "stage": self.stage, "reason": self.reason, "count": self.count}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        return cls(action=Action(data["action"]), at=float(data["at"]),
                   traffic=float(data["traffic"]), stage=data.get("stage"),
                   reason=data["reason"], count=int(data.get("count", 1)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Experiment:
    """An experiment as stored: what it compares and where it stands."""

    name: str  # Its name (unique in the store).
    resource: str  # The registry resource under test.
    baseline: int  # The baseline version.
    candidate: int  # The candidate version.
    salt: str  # The assignment salt.
    traffic: float  # The candidate's current traffic share.
    status: ExperimentStatus  # Running or how it ended.
    config: ExperimentConfig  # Metrics and test settings.
    rollout: RolloutPolicy | None  # The rollout policy, or None for a fixed-split A/B test.
    stage: int | None  # Current rollout stage index (None for A/B tests).
    created_at: float  # Unix time it started.
    ended_at: float | None  # Unix time it ended, if it has.
    winner: Arm | None  # The arm now serving everyone, once it has ended.
    decisions: tuple[Decision, ...]  # Every decision, oldest first.

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Experiment:
        return cls(
            name=data["name"], resource=data["resource"], baseline=int(data["baseline"]),
            candidate=int(data["candidate"]), salt=data["salt"], traffic=float(data["traffic"]),
            status=ExperimentStatus(data["status"]),
            config=ExperimentConfig.from_dict(data["config"]),
            rollout=RolloutPolicy(**data["rollout"]) if data.get("rollout") else None,
            stage=data.get("stage"), created_at=float(data["created_at"]),
            ended_at=data.get("ended_at"),
            winner=Arm(data["winner"]) if data.get("winner") else None,
            decisions=tuple(Decision.from_dict(d) for d in data.get("decisions", ())),
        )

    def version_of(self, arm: Arm) -> int:
        return self.candidate if arm is Arm.CANDIDATE else self.baseline


@dataclass(frozen=True, slots=True, kw_only=True)
class ArmReport:
    """What one arm has collected."""

    arm: Arm  # Which arm.
    version: int  # Its registry version.
    num_outcomes: int  # Outcomes recorded.
    metrics: Mapping[str, MetricSummary]  # Per metric: count, mean, variance.

    @property
    def success_rate(self) -> float:
        return self.metrics.get(SUCCESS, MetricSummary()).mean

    @property
    def mean_reward(self) -> float:
        return self.metrics.get(REWARD, MetricSummary()).mean


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentReport:
    """An experiment with its per-arm metrics and the current tests."""

    experiment: Experiment  # The stored experiment.
    arms: Mapping[Arm, ArmReport]  # Per arm metrics.
    primary: MetricTest  # The primary metric's test.
    guardrails: tuple[MetricTest, ...]  # One one-sided test per guardrail.
    srm_p_value: float  # Chi-square p-value of the current stage's counts against its split.

    @property
    def srm(self) -> bool:
        """Whether the counts are too far from the split to trust."""
        return self.srm_p_value < self.experiment.config.srm_p_value

    def to_dict(self) -> dict[str, JSONValue]:
        e = self.experiment
        return {
            "name": e.name, "resource": e.resource, "status": e.status.value,
            "baseline": e.baseline, "candidate": e.candidate, "traffic": e.traffic,
            "stage": e.stage, "winner": e.winner.value if e.winner else None,
            "created_at": e.created_at, "ended_at": e.ended_at,
            "arms": {
                arm.value: {
                    "version": r.version, "num_outcomes": r.num_outcomes,
                    "metrics": {k: {"count": m.count, "mean": m.mean, "variance": m.variance}
                                for k, m in r.metrics.items()},
                }
                for arm, r in self.arms.items()
            },
            "primary": self.primary.to_dict(),
            "guardrails": [g.to_dict() for g in self.guardrails],
            "srm_p_value": self.srm_p_value, "srm": self.srm,
            "decisions": [d.to_dict() for d in e.decisions],
        }


class Assigner:
    """Fast assignment from a snapshot of an experiment (no store read per unit).

    Take a new one (:meth:`Experiments.assigner`) after the traffic changes.
    """

    def __init__(self, experiment: Experiment) -> None:
        self._experiment = experiment
        running = experiment.status is ExperimentStatus.RUNNING
        self._fixed = None if running else (experiment.winner or Arm.BASELINE)

    @property
    def experiment(self) -> Experiment:
        return self._experiment

    def __call__(self, unit_id: str) -> Assignment:
        e = self._experiment
        arm, bucket = assign_arm(e.salt, str(unit_id), e.traffic)
        if self._fixed is not None:
            arm = self._fixed
        return Assignment(experiment=e.name, resource=e.resource, arm=arm,
                          version=e.version_of(arm), bucket=bucket)


# --- the experiment service ----------------------------------------------------------


class Experiments:
    """A/B tests and staged rollouts of registry versions, stored as documents.

    Args:
        store: where experiment documents live (any DocumentStore).
        registry: resolves versions and moves labels; defaults to one on ``store``.
        clock: the current Unix time (inject a fake in tests and simulations).
        max_attempts: compare-and-set retries before a write gives up.

    >>> import os, tempfile
    >>> from learnloop.store import open_store
    >>> store = open_store(os.path.join(tempfile.mkdtemp(), "x.db"))
    >>> registry = Registry(store)
    >>> _ = registry.register("planner", "Plan.")
    >>> _ = registry.register_candidate("planner", "Plan. Verify.", source="apo-1")
    >>> experiments = Experiments(store, registry)
    >>> _ = experiments.start_ab_test("planner-ab", 1, "candidate", 0.5, resource="planner",
    ...                               salt="s")
    >>> experiments.assign("planner-ab", "user-42").version
    2
    >>> experiments.record_outcome("planner-ab", "candidate", success=True, reward=1.0)
    True
    """

    def __init__(
        self,
        store: DocumentStore,
        registry: Registry | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 1000,
    ) -> None:
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}")
        self._store = store
        self._registry = registry if registry is not None else Registry(store, clock=clock)
        self._clock = clock
        self._max_attempts = max_attempts

    @property
    def registry(self) -> Registry:
        return self._registry

    # --- lifecycle --------------------------------------------------------------------

    def start_ab_test(
        self,
        name: str,
        baseline: int | str,
        candidate: int | str,
        traffic_split: float = 0.5,
        *,
        resource: str | None = None,
        config: ExperimentConfig = ExperimentConfig(),
        salt: str | None = None,
    ) -> Experiment:
        """Start a fixed-split A/B test of two versions (numbers or labels) of ``resource``.

        ``traffic_split`` is the candidate's share of units. ``resource`` defaults to
        ``name``. Baseline and candidate may be the same version (an A/A test).

        Raises:
            ConfigError: a bad split or name.
            ConflictError: the name is taken, or ``resource`` already has a running experiment.
            NotFoundError: no such version.
        """
        if not 0.0 < traffic_split < 1.0:
            raise ConfigError(
                f"traffic_split is the candidate's share and must lie in (0, 1), got "
                f"{traffic_split!r}; e.g. 0.1 for 10% (use start_rollout to ramp up)"
            )
        return self._start(name, baseline, candidate, traffic_split, resource=resource,
                           config=config, rollout=None, salt=salt)

    def start_rollout(
        self,
        name: str,
        baseline: int | str,
        candidate: int | str,
        *,
        resource: str | None = None,
        policy: RolloutPolicy = RolloutPolicy(),
        config: ExperimentConfig = ExperimentConfig(),
        salt: str | None = None,
    ) -> Experiment:
        """Start a staged rollout at ``policy.stages[0]``; drive it with :meth:`step_rollout`."""
        return self._start(name, baseline, candidate, policy.stages[0], resource=resource,
                           config=config, rollout=policy, salt=salt)

    def _start(
        self, name: str, baseline: int | str, candidate: int | str, traffic: float, *,
        resource: str | None, config: ExperimentConfig, rollout: RolloutPolicy | None,
        salt: str | None,
    ) -> Experiment:
        if not isinstance(name, str) or not name or "/" in name:
            raise ConfigError(f"experiment name {name!r} must be a non-empty string without '/'")
        resource = resource or name
        if self._store.get_document(EXPERIMENTS, name) is not None:
            raise ConflictError(f"an experiment named {name!r} already exists; choose another name")
        base = self._registry.get(resource, baseline)
        cand = self._registry.get(resource, candidate)
        running = self._store.list_documents(
            EXPERIMENTS, where={"resource": resource, "status": ExperimentStatus.RUNNING.value}
        )
        if running:
            raise ConflictError(
                f"{resource!r} already has a running experiment {running[0].key!r}; stop it "
                "first (experiments.stop_ab_test or 'learnloop experiment stop')"
            )
        now = self._clock()
        kind = "rollout" if rollout else "A/B test"
        start = Decision(action=Action.START, at=now, traffic=traffic,
                         stage=0 if rollout else None,
                         reason=f"{kind}: v{base.version} vs v{cand.version} at {traffic:.0%}")
        data: dict[str, JSONValue] = {
            "name": name, "resource": resource, "baseline": base.version,
            "candidate": cand.version, "salt": salt or secrets.token_hex(8),
            "traffic": traffic, "status": ExperimentStatus.RUNNING.value,
            "config": config.to_dict(), "rollout": rollout.to_dict() if rollout else None,
            "stage": 0 if rollout else None, "stage_started_at": now,
            "stage_counts": {Arm.BASELINE.value: 0, Arm.CANDIDATE.value: 0},
            "created_at": now, "ended_at": None, "winner": None,
            "arms": {arm.value: {"n": 0, "metrics": {}} for arm in Arm},
            "min_p": {}, "decisions": [start.to_dict()],
        }
        try:
            self._store.put_document(EXPERIMENTS, name, data, expected_revision=0)
        except ConflictError:
            raise ConflictError(
                f"an experiment named {name!r} already exists; choose another name"
            ) from None
        logger.info("started %s %s on %s", kind, name, resource)
        return Experiment.from_dict(data)

    def stop_ab_test(
        self,
        name: str,
        *,
        winner: Arm | str | None = None,
        reason: str | None = None,
        actor: str | None = None,
    ) -> Experiment:
        """End a running experiment; a winner gets the config's label (``production``).

        ``winner="candidate"`` moves the label to the candidate and completes the
        experiment; ``"baseline"`` moves it (back) to the baseline; None only stops.
        Units then all get the winner's version (the baseline when there is none).
        """
        arm = _arm(winner) if winner is not None else None
        now = self._clock()

        def stop(data: dict[str, Any]) -> Decision:
            report = self._report(data)
            won = arm is Arm.CANDIDATE
            status = ExperimentStatus.COMPLETED if won else ExperimentStatus.STOPPED
            _finish(data, status, arm, now)
            p = report.primary
            why = reason or "stopped by hand"
            text = (f"{why}; winner {arm.value if arm else 'none'}; {p.metric} "
                    f"{p.baseline.mean:.4g} -> {p.candidate.mean:.4g}, p={p.p_value:.3g}")
            return Decision(action=Action.STOP, at=now, traffic=data["traffic"],
                            stage=data.get("stage"), reason=text)

        data, decision = self._update(name, stop)
        experiment = Experiment.from_dict(data)
        if arm is not None:
            self._move_label(experiment, arm, decision.reason, actor)
        return experiment

    def step_rollout(self, name: str, *, now: float | None = None) -> Decision:
        """Look at a rollout once: advance it, hold it, roll it back or complete it.

        Rolls back (traffic 0%, the config's label back to the baseline) when the
        primary metric is significantly worse or a guardrail fires; holds on a
        sample-ratio mismatch or while the stage lacks samples or time; otherwise
        advances to the next stage, and reaching 100% promotes the candidate.

        Raises:
            ClosedError: the experiment has ended.
            ConfigError: it is an A/B test, not a rollout.
        """
        at = self._clock() if now is None else now
        data, decision = self._update(name, lambda d: _rollout_decision(self._report(d), d, at))
        if decision.action in (Action.ROLLBACK, Action.COMPLETE):
            arm = Arm.BASELINE if decision.action is Action.ROLLBACK else Arm.CANDIDATE
            self._move_label(Experiment.from_dict(data), arm, decision.reason, "rollout")
        return decision

    def _move_label(self, e: Experiment, arm: Arm, reason: str, actor: str | None) -> None:
        version = e.version_of(arm)
        self._registry.set_label(
            e.resource, e.config.label, version, force=True, actor=actor or f"experiment:{e.name}",
            reason=f"experiment {e.name}: {reason}",
        )

    # --- reading ----------------------------------------------------------------------

    def get(self, name: str) -> Experiment:
        """The stored experiment; raises NotFoundError."""
        return Experiment.from_dict(self._doc(name).data)

    def list_experiments(
        self, *, status: ExperimentStatus | str | None = None, resource: str | None = None
    ) -> list[Experiment]:
        """Experiments ordered by name, optionally of one status or resource."""
        where: dict[str, str] = {}
        if status is not None:
            where["status"] = ExperimentStatus(status).value
        if resource is not None:
            where["resource"] = resource
        docs = self._store.list_documents(EXPERIMENTS, where=where or None)
        return [Experiment.from_dict(d.data) for d in docs]

    def status(self, name: str) -> ExperimentReport:
        """Per-arm metrics, the primary and guardrail tests, and the SRM check."""
        return self._report(self._doc(name).data)

    def assign(self, name: str, unit_id: str) -> Assignment:
        """The sticky version of ``unit_id`` (reads the experiment once)."""
        return self.assigner(name)(unit_id)

    def assigner(self, name: str) -> Assigner:
        """A snapshot that assigns without reading the store (refresh after a stage change)."""
        return Assigner(self.get(name))

    def _doc(self, name: str) -> Any:
        doc = self._store.get_document(EXPERIMENTS, name)
        if doc is None:
            known = [d.key for d in self._store.list_documents(EXPERIMENTS, limit=20)]
            raise NotFoundError(
                f"no experiment named {name!r}; known: {known or 'none'} (start one with "
                "start_ab_test or 'learnloop experiment start')"
            )
        return doc

    # --- outcomes ---------------------------------------------------------------------

    def record_outcome(
        self,
        name: str,
        arm: Arm | str,
        *,
        success: bool,
        reward: float = 0.0,
        metrics: Mapping[str, float] | None = None,
    ) -> bool:
        """Add one unit's outcome to an arm; False (and a warning) once it has ended."""
        return self.record_outcomes(
            name, arm, successes=[success], rewards=[reward],
            metrics={k: [v] for k, v in (metrics or {}).items()},
        )

    def record_outcomes(
        self,
        name: str,
        arm: Arm | str,
        *,
        successes: Sequence[bool],
        rewards: Sequence[float] | None = None,
        metrics: Mapping[str, Sequence[float]] | None = None,
    ) -> bool:
        """Add a batch of outcomes to an arm in one compare-and-set write.

        ``rewards`` and each metric's values, when given, hold one value per outcome
        (same length as ``successes``). Outcomes arriving after the experiment ended
        are dropped with a warning and False is returned.
        """
        arm = _arm(arm)
        count = len(successes)
        batch = {SUCCESS: MetricSummary.of([1.0 if s else 0.0 for s in successes])}
        reserved = {SUCCESS, REWARD} & set(metrics or {})
        if reserved:
            raise InvalidInputError(
                f"metric name(s) {sorted(reserved)} are reserved; pass them as "
                "successes/rewards or rename them"
            )
        series = {**({REWARD: rewards} if rewards is not None else {}), **(metrics or {})}
        for key, values in series.items():
            if len(values) != count:
                raise InvalidInputError(
                    f"metric {key!r} has {len(values)} values for "
                    f"{count} outcomes; give one value per outcome"
                )
            batch[key] = MetricSummary.of([check_reward(v, f"metric {key!r}") for v in values])
        if count == 0:
            return True
        for _ in range(self._max_attempts):
            doc = self._doc(name)
            data = dict(doc.data)
            if data["status"] != ExperimentStatus.RUNNING.value:
                logger.warning("experiment %s is %s; dropped %d outcome(s) of %s",
                               name, data["status"], count, arm.value)
                return False
            arms = data["arms"]
            side = arms[arm.value]
            side["n"] += count
            for key, summary in batch.items():
                old = MetricSummary(*side["metrics"].get(key, (0, 0.0, 0.0)))
                merged = old.merge(summary)
                side["metrics"][key] = [merged.count, merged.mean, merged.m2]
            try:
                self._store.put_document(EXPERIMENTS, name, data, expected_revision=doc.revision)
                return True
            except ConflictError:
                continue
        raise ConflictError(f"could not record outcomes of {name!r}: too many concurrent writers")

    def record_episode(self, name: str, episode: Episode) -> bool:
        """Add a recorded episode's outcome (call once per episode).

        Success is ``status == success``, reward is ``total_reward``, and numeric
        top-level metadata values (and ``duration_s``) become metrics.
        """
        arm, success, reward, metrics = self._episode_outcome(self.get(name), episode)
        return self.record_outcome(name, arm, success=success, reward=reward, metrics=metrics)

    def episode_metrics(self, name: str, episodes: EpisodeStore) -> dict[Arm, ArmReport]:
        """Per-arm metrics recomputed from the episode store (to audit the aggregates)."""
        experiment = self.get(name)
        values: dict[Arm, dict[str, list[float]]] = {arm: {} for arm in Arm}
        counts = dict.fromkeys(Arm, 0)
        for episode in episodes.iter_episodes(EpisodeQuery(metadata={"experiment": name})):
            if not episode.status.is_final:
                continue
            arm, success, reward, metrics = self._episode_outcome(experiment, episode)
            counts[arm] += 1
            for key, value in {SUCCESS: float(success), REWARD: reward, **metrics}.items():
                values[arm].setdefault(key, []).append(value)
        return {
            arm: ArmReport(arm=arm, version=experiment.version_of(arm), num_outcomes=counts[arm],
                           metrics={k: MetricSummary.of(v) for k, v in values[arm].items()})
            for arm in Arm
        }

    @staticmethod
    def _episode_outcome(
        experiment: Experiment, episode: Episode
    ) -> tuple[Arm, bool, float, dict[str, float]]:
        if episode.metadata.get("experiment") != experiment.name:
            raise InvalidInputError(
                f"episode {episode.id} has metadata experiment="
                f"{episode.metadata.get('experiment')!r}, not {experiment.name!r}; begin it "
                "with metadata=assignment.metadata"
            )
        arm_name = episode.metadata.get("experiment_arm")
        if arm_name is not None:
            arm = _arm(arm_name)
        else:
            version = parse_version_ref(str(episode.versions.get(experiment.resource, "")))
            matches = [a for a in Arm if experiment.version_of(a) == version]
            if len(matches) != 1:
                raise InvalidInputError(
                    f"episode {episode.id} ran {experiment.resource} "
                    f"{episode.versions.get(experiment.resource)!r}, which does not name one "
                    "arm; record metadata['experiment_arm'] (assignment.metadata does)"
                )
            arm = matches[0]
        metrics = {
            k: float(v) for k, v in episode.metadata.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and k not in (SUCCESS, REWARD)
        }
        if episode.duration is not None:
            metrics["duration_s"] = episode.duration
        return arm, episode.is_success, episode.total_reward, metrics

    # --- internals --------------------------------------------------------------------

    def _update(
        self, name: str, decide: Callable[[dict[str, Any]], Decision]
    ) -> tuple[dict[str, Any], Decision]:
        """Read, decide, record the decision and write back with compare-and-set."""
        for _ in range(self._max_attempts):
            doc = self._doc(name)
            data = dict(doc.data)
            if data["status"] != ExperimentStatus.RUNNING.value:
                raise ClosedError(
                    f"experiment {name!r} is {data['status']}; start a new experiment"
                )
            decision = decide(data)
            _append_decision(data, decision)
            try:
                self._store.put_document(EXPERIMENTS, name, data, expected_revision=doc.revision)
            except ConflictError:
                continue
            if decision.action is not Action.HOLD:
                logger.info("experiment %s: %s (%s)", name, decision.action, decision.reason)
            return data, decision
        raise ConflictError(f"could not update experiment {name!r}: too many concurrent writers")

    def _report(self, data: dict[str, Any]) -> ExperimentReport:
        """Tests on the document's aggregates; folds the p-values into ``data["min_p"]``."""
        experiment = Experiment.from_dict(data)
        config = experiment.config
        arms = {
            arm: ArmReport(
                arm=arm, version=experiment.version_of(arm), num_outcomes=data["arms"][arm]["n"],
                metrics={k: MetricSummary(*v) for k, v in data["arms"][arm]["metrics"].items()},
            )
            for arm in Arm
        }
        gates = [Guardrail(metric=config.metric, higher_is_better=config.higher_is_better),
                 *config.guardrails]
        min_p = data.setdefault("min_p", {})
        tests = []
        for i, gate in enumerate(gates):
            test = sequential_test(
                arms[Arm.BASELINE].metrics.get(gate.metric, MetricSummary()),
                arms[Arm.CANDIDATE].metrics.get(gate.metric, MetricSummary()),
                metric=gate.metric, higher_is_better=gate.higher_is_better, margin=gate.margin,
                alpha=config.alpha, mixture_sd=config.mixture_sd, min_samples=config.min_samples,
            )
            # Always-valid p-values may be minimized over every look (Johari et al. 2022).
            stored = min_p.setdefault(str(i), {"p_value": 1.0, "p_worse": 1.0, "p_better": 1.0})
            for key in stored:
                stored[key] = min(stored[key], getattr(test, key))
            tests.append(dataclasses.replace(test, **stored))
        counts = {arm: data["arms"][arm]["n"] - data["stage_counts"][arm] for arm in Arm}
        srm = sample_ratio_mismatch(counts[Arm.BASELINE], counts[Arm.CANDIDATE], data["traffic"])
        return ExperimentReport(experiment=experiment, arms=arms, primary=tests[0],
                                guardrails=tuple(tests[1:]), srm_p_value=srm)


def _arm(value: Arm | str) -> Arm:
    try:
        return Arm(value)
    except ValueError:
        raise ConfigError(f"unknown arm {value!r}; use 'baseline' or 'candidate'") from None


def _finish(data: dict[str, Any], status: ExperimentStatus, winner: Arm | None, now: float) -> None:
    data["status"] = status.value
    data["winner"] = winner.value if winner else None
    data["ended_at"] = now
    data["traffic"] = 1.0 if winner is Arm.CANDIDATE else 0.0


def _append_decision(data: dict[str, Any], decision: Decision) -> None:
    decisions = data.setdefault("decisions", [])
    last = decisions[-1] if decisions else None
    if (decision.action is Action.HOLD and last is not None and last["action"] == "hold"
            and last["stage"] == decision.stage):
        # Consecutive holds in one stage collapse into one record, so the document
        # stays small however often the rollout is stepped.
        decisions[-1] = {**decision.to_dict(), "count": last.get("count", 1) + 1}
    else:
        decisions.append(decision.to_dict())
    del decisions[:-_MAX_DECISIONS]


def _describe(test: MetricTest) -> str:
    return (f"{test.metric} {test.baseline.mean:.4g} -> {test.candidate.mean:.4g} "
            f"(n={test.baseline.count}/{test.candidate.count}, p_worse={test.p_worse:.3g})")


def _rollout_decision(report: ExperimentReport, data: dict[str, Any], now: float) -> Decision:
    """The rollout state machine; mutates ``data`` (traffic, stage, status)."""
    experiment = report.experiment
    policy = experiment.rollout
    if policy is None:
        raise ConfigError(
            f"experiment {experiment.name!r} is a fixed-split A/B test, not a rollout; "
            "start one with start_rollout (CLI: experiment start --rollout)"
        )
    stage = int(data["stage"])
    fired = [t for t in (report.primary, *report.guardrails) if t.worse]
    if fired:
        reason = "; ".join(f"significantly worse: {_describe(t)}" for t in fired)
        _finish(data, ExperimentStatus.ROLLED_BACK, Arm.BASELINE, now)
        return Decision(action=Action.ROLLBACK, at=now, traffic=0.0, stage=stage, reason=reason)
    if report.srm:
        return Decision(
            action=Action.HOLD, at=now, traffic=data["traffic"], stage=stage,
            reason=f"sample ratio mismatch (p={report.srm_p_value:.2g}); check assignment "
            "and logging before the rollout can advance",
        )
    in_stage = {arm: data["arms"][arm]["n"] - data["stage_counts"][arm] for arm in Arm}
    elapsed = now - float(data["stage_started_at"])
    short = min(in_stage.values()) < policy.min_samples_per_stage
    if short or elapsed < policy.min_duration_s:
        return Decision(
            action=Action.HOLD, at=now, traffic=data["traffic"], stage=stage,
            reason=f"stage {stage} ({data['traffic']:.0%}): "
            f"{in_stage[Arm.BASELINE]}/{in_stage[Arm.CANDIDATE]} outcomes of "
            f"{policy.min_samples_per_stage} per arm, {elapsed:.0f}/{policy.min_duration_s:.0f} s",
        )
    target = stage + 1
    traffic = policy.stages[target]
    summary = f"not worse after {elapsed:.0f} s: {_describe(report.primary)}"
    if target == len(policy.stages) - 1:
        _finish(data, ExperimentStatus.COMPLETED, Arm.CANDIDATE, now)
        data["stage"] = target
        return Decision(action=Action.COMPLETE, at=now, traffic=1.0, stage=target,
                        reason=f"reached 100%; {summary}")
    data.update(stage=target, traffic=traffic, stage_started_at=now,
                stage_counts={arm.value: data["arms"][arm]["n"] for arm in Arm})
    return Decision(action=Action.ADVANCE, at=now, traffic=traffic, stage=target,
                    reason=f"{policy.stages[stage]:.0%} -> {traffic:.0%}; {summary}")
