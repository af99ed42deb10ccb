"""The experiment service: A/B tests and staged rollouts of registry versions.

An experiment compares two versions of one registry resource: the *baseline* (what
runs now) and the *candidate*.

**Source of truth for metrics.** Each experiment is one document in the
``experiments`` collection of a :class:`~learnloop.store.DocumentStore`, holding per
arm and per metric the count, mean and sum of squared deviations (merged with
compare-and-set, Chan, Golub & LeVeque 1979). Outcomes reach it through
:meth:`Experiments.record_outcome` / :meth:`~Experiments.record_outcomes` (agents and
simulations) or :meth:`Experiments.record_episode` (a recorded episode, carrying
``metadata["experiment"]``, ``metadata["experiment_arm"]`` and
``versions[resource]``; call it once per episode). :meth:`Experiments.episode_metrics`
recomputes the same numbers from the episode store, to audit the aggregates.

**Staged rollout.** :meth:`Experiments.step_rollout` drives the state machine in
:mod:`learnloop.experiments.rollout` and moves the label: back to the baseline on a
rollback, to the candidate (``production``) on reaching 100%. Every decision and
its reason is kept in the experiment document.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from learnloop.episode import Episode, JSONValue, check_reward
from learnloop.errors import (
    ClosedError,
    ConfigError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from learnloop.experiments.assignment import Assigner, Assignment
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
    _finish,
)
from learnloop.experiments.rollout import _rollout_decision
from learnloop.experiments.statistics import (
    REWARD,
    SUCCESS,
    MetricSummary,
    sample_ratio_mismatch,
    sequential_test,
)
from learnloop.registry import Registry, parse_version_ref
from learnloop.store.base import DocumentStore, EpisodeQuery, EpisodeStore

__all__ = ["EXPERIMENTS", "Experiments"]

logger = logging.getLogger(__name__)

EXPERIMENTS = "experiments"
_MAX_DECISIONS = 500


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
