"""Sticky assignment of units to an experiment's arms.

Units (users, sessions, tasks) are assigned to an arm by hashing the unit id with
the experiment's salt into 10,000 buckets (:func:`bucket_of`), so a unit gets the
same version in every process and after restarts; buckets below
``traffic * 10,000`` get the candidate, so raising the traffic only ever moves
units from baseline to candidate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from learnloop.episode import JSONValue
from learnloop.experiments.records import Arm, Experiment, ExperimentStatus

__all__ = ["NUM_BUCKETS", "Assigner", "Assignment", "assign_arm", "bucket_of"]

NUM_BUCKETS = 10_000


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


class Assigner:
    """Fast assignment from a snapshot of an experiment (no store read per unit).

    Take a new one (:meth:`~learnloop.experiments.Experiments.assigner`) after the
    traffic changes.
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
