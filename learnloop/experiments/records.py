"""What an experiment is: its arms, configs, decision log, stored form and report.

Each experiment is one document in the ``experiments`` collection of a
:class:`~learnloop.store.DocumentStore`; :class:`Experiment` is the typed view of
that document, :class:`Decision` one entry of its decision log, and
:class:`ExperimentReport` its per-arm metrics with the current tests.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from learnloop.episode import JSONValue
from learnloop.errors import ConfigError
from learnloop.experiments.statistics import REWARD, SUCCESS, MetricSummary, MetricTest
from learnloop.registry import PRODUCTION

__all__ = [
    "Action",
    "Arm",
    "ArmReport",
    "Decision",
    "Experiment",
    "ExperimentConfig",
    "ExperimentReport",
    "ExperimentStatus",
    "Guardrail",
    "RolloutPolicy",
]


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


def _finish(data: dict[str, Any], status: ExperimentStatus, winner: Arm | None, now: float) -> None:
    data["status"] = status.value
    data["winner"] = winner.value if winner else None
    data["ended_at"] = now
    data["traffic"] = 1.0 if winner is Arm.CANDIDATE else 0.0
    # A new (empty) stage at the final traffic: the sample-ratio check compares the
    # current stage's counts with its split, and the old stage ran at another split.
    data["stage_counts"] = {arm.value: data["arms"][arm.value]["n"] for arm in Arm}
