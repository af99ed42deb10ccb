"""The staged-rollout state machine behind :meth:`~learnloop.experiments.Experiments.step_rollout`.

A rollout advances the candidate through the stages of a
:class:`~learnloop.experiments.RolloutPolicy` (e.g. 10% → 25% → 50% → 100%) once each
arm has enough outcomes in the stage and the stage has lasted long enough, holds
while not (or on a sample-ratio mismatch), rolls back to the baseline (traffic 0%)
as soon as the primary metric is significantly worse or a guardrail fires, and
completes on reaching 100%. Moving the registry label is the caller's job.
"""

from __future__ import annotations

from typing import Any

from learnloop.errors import ConfigError
from learnloop.experiments.records import (
    Action,
    Arm,
    Decision,
    ExperimentReport,
    ExperimentStatus,
    _finish,
)
from learnloop.experiments.statistics import MetricTest

__all__: list[str] = []


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
