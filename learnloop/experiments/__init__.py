"""A/B experiments and staged rollouts of registry versions, with automatic rollback.

An experiment compares two versions of one registry resource, the *baseline* and the
*candidate*, on outcomes recorded per arm, and can ramp the candidate up in stages,
rolling back as soon as it is significantly worse. The code lives in five modules:

* :mod:`~learnloop.experiments.core`: :class:`Experiments`, the service (start, stop,
  record outcomes, report, step a rollout), storing each experiment as a document.
* :mod:`~learnloop.experiments.records`: arms, statuses, configs, the stored
  :class:`Experiment`, its :class:`Decision` log and its :class:`ExperimentReport`.
* :mod:`~learnloop.experiments.assignment`: sticky hashing of units to arms
  (:func:`bucket_of`, :class:`Assigner`).
* :mod:`~learnloop.experiments.statistics`: the pure statistics (mSPRT, confidence
  sequences, sample-ratio mismatch).
* :mod:`~learnloop.experiments.rollout`: the staged-rollout state machine.
"""

from __future__ import annotations

from learnloop.experiments.assignment import (
    NUM_BUCKETS,
    Assigner,
    Assignment,
    assign_arm,
    bucket_of,
)
from learnloop.experiments.core import EXPERIMENTS as EXPERIMENTS
from learnloop.experiments.core import Experiments
from learnloop.experiments.records import (
    Action,
    Arm,
    ArmReport,
    Decision,
    Experiment,
    ExperimentConfig,
    ExperimentReport,
    ExperimentStatus,
    Guardrail,
    RolloutPolicy,
)
from learnloop.experiments.statistics import REWARD as REWARD
from learnloop.experiments.statistics import SUCCESS as SUCCESS
from learnloop.experiments.statistics import (
    MetricSummary,
    MetricTest,
    confidence_sequence,
    msprt_log_lr,
    msprt_one_sided_log_lr,
    sample_ratio_mismatch,
    sequential_test,
)

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
