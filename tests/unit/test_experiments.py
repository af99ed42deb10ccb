"""Experiments: assignment, statistics against hand-worked numbers, rollout, rollback."""

from __future__ import annotations

import doctest
import hashlib
import logging
import math
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import learnloop.experiments
import learnloop.experiments.assignment
import learnloop.experiments.core
import learnloop.experiments.records
import learnloop.experiments.rollout
import learnloop.experiments.statistics
from learnloop.episode import Episode
from learnloop.errors import (
    ClosedError,
    ConfigError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from learnloop.experiments import (
    Action,
    Arm,
    ExperimentConfig,
    Experiments,
    ExperimentStatus,
    Guardrail,
    MetricSummary,
    RolloutPolicy,
    assign_arm,
    bucket_of,
    confidence_sequence,
    msprt_log_lr,
    msprt_one_sided_log_lr,
    sample_ratio_mismatch,
    sequential_test,
)
from learnloop.registry import Registry
from learnloop.store import SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path):
    with SqliteStore(tmp_path / "experiments.db") as s:
        yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def experiments(store, clock: Clock) -> Experiments:
    registry = Registry(store, clock=clock)
    registry.register("planner", "baseline prompt")
    registry.register("planner", "candidate prompt")
    registry.set_label("planner", "production", 1)
    return Experiments(store, registry, clock=clock)


# --- package -------------------------------------------------------------------------

SUBMODULES = [
    learnloop.experiments.assignment,
    learnloop.experiments.core,
    learnloop.experiments.records,
    learnloop.experiments.rollout,
    learnloop.experiments.statistics,
]


@pytest.mark.parametrize("module", SUBMODULES, ids=lambda module: module.__name__)
def test_docstring_examples_run(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0
    # records and rollout carry no examples; the others must keep theirs.
    has_examples = module not in (learnloop.experiments.records, learnloop.experiments.rollout)
    assert (result.attempted > 0) == has_examples


def test_public_names_are_exported() -> None:
    exported = set(learnloop.experiments.__all__)
    assert all(hasattr(learnloop.experiments, name) for name in exported)
    for module in SUBMODULES:
        internal = {"EXPERIMENTS", "REWARD", "SUCCESS"}  # importable, not in __all__
        assert set(module.__all__) - internal <= exported, module.__name__


# --- assignment ----------------------------------------------------------------------

# (salt, unit id, first 8 bytes of sha256(f"{salt}:{unit}") in hex, bucket)
VECTORS = [
    ("s1", "user-42", "8ff20d42b4b51235", 1781),
    ("s", "user-42", "7bff765b4ab30519", 1145),
    ("salt", "0", "6d75c42104e8175e", 5838),
    ("salt", "1", "73a035a1e681b590", 4688),
    ("abc", "unit-7", "b9f801a710ba6884", 8964),
    ("", "", "e7ac0786668e0ff0", 4368),
]


@pytest.mark.parametrize(("salt", "unit", "prefix", "bucket"), VECTORS)
def test_bucket_test_vectors(salt: str, unit: str, prefix: str, bucket: int) -> None:
    digest = hashlib.sha256(f"{salt}:{unit}".encode()).hexdigest()
    assert digest[:16] == prefix
    assert int(prefix, 16) % 10_000 == bucket
    assert bucket_of(salt, unit) == bucket


def test_a_10_90_split_over_100k_units_lands_within_half_a_point() -> None:
    share = sum(assign_arm("split-salt", f"user-{i}", 0.1)[0] is Arm.CANDIDATE
                for i in range(100_000)) / 100_000
    assert abs(share - 0.10) < 0.005


def test_raising_the_traffic_only_moves_units_to_the_candidate() -> None:
    before = {u: assign_arm("x", f"u{u}", 0.1)[0] for u in range(2000)}
    after = {u: assign_arm("x", f"u{u}", 0.5)[0] for u in range(2000)}
    assert all(after[u] is Arm.CANDIDATE for u in before if before[u] is Arm.CANDIDATE)
    assert sum(a is Arm.CANDIDATE for a in after.values()) > sum(
        a is Arm.CANDIDATE for a in before.values())


def test_assignment_is_the_same_in_another_process(experiments: Experiments, store) -> None:
    experiments.start_ab_test("ab", 1, 2, 0.3, resource="planner")
    units = [f"user-{i}" for i in range(40)]
    here = [experiments.assign("ab", u).version for u in units]
    code = (
        "import sys\n"
        "from learnloop.store import SqliteStore\n"
        "from learnloop.experiments import Experiments\n"
        "store = SqliteStore(sys.argv[1])\n"
        "exp = Experiments(store)\n"
        "print(','.join(str(exp.assign('ab', f'user-{i}').version) for i in range(40)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, store.path], capture_output=True,
                         text=True, check=True, timeout=60)
    assert [int(v) for v in out.stdout.strip().split(",")] == here
    assert set(here) == {1, 2}
    a = experiments.assign("ab", "user-3")
    assert a.metadata == {"experiment": "ab", "experiment_arm": a.arm.value}
    assert a.versions == {"planner": f"v{a.version}"}


# --- statistics ----------------------------------------------------------------------


def test_metric_summary_merges_like_a_direct_computation() -> None:
    s = MetricSummary.of([1.0, 2.0]).merge(MetricSummary.of([3.0, 4.0]))
    assert (s.count, s.mean, s.m2) == (4, 2.5, 5.0)  # 2.25 + .25 + .25 + 2.25
    assert s.variance == pytest.approx(5.0 / 3.0)
    assert MetricSummary().merge(s) == s and s.merge(MetricSummary()) == s


def test_msprt_matches_hand_computed_values() -> None:
    # V = 0.001, tau^2 = 0.01: 0.5 ln(0.001/0.011) = -1.198948,
    # tau^2 delta^2 / (2 V (V + tau^2)) = 1e-4 / 2.2e-5 = 4.545455
    assert msprt_log_lr(0.1, 0.001, 0.1) == pytest.approx(3.346507, abs=1e-6)
    assert msprt_log_lr(-0.1, 0.001, 0.1) == msprt_log_lr(0.1, 0.001, 0.1)
    # z = 0.01 / sqrt(1.1e-5) = 3.015113; ln(2 Phi(z)) = ln(1.997431) = 0.691861
    assert msprt_one_sided_log_lr(0.1, 0.001, 0.1) == pytest.approx(4.038368, abs=1e-5)
    # no difference: 2 Phi(0) = 1, so one-sided equals two-sided
    assert msprt_one_sided_log_lr(0.0, 0.001, 0.1) == pytest.approx(msprt_log_lr(0.0, 0.001, 0.1))
    assert msprt_one_sided_log_lr(-50.0, 1e-6, 0.1) == -math.inf


def test_confidence_sequence_is_where_the_test_stops_rejecting() -> None:
    low, high = confidence_sequence(0.1, 0.001, 0.1, 0.05)
    # half width sqrt(V (V + tau^2) / tau^2 * (ln 11 + 2 ln 20)) = sqrt(0.0011 * 8.389360)
    assert high - 0.1 == pytest.approx(math.sqrt(0.0011 * (math.log(11) + 2 * math.log(20))))
    assert high - 0.1 == pytest.approx(0.096064, abs=1e-6)
    for edge in (low, high):  # Lambda(delta - d) = 1 / alpha on the boundary
        assert msprt_log_lr(0.1 - edge, 0.001, 0.1) == pytest.approx(math.log(20))


def test_sample_ratio_mismatch_chi_square() -> None:
    # chi2 = 100^2/5000 + 100^2/5000 = 4; p = erfc(sqrt(2)) = 0.0455003
    assert sample_ratio_mismatch(5100, 4900, 0.5) == pytest.approx(0.0455003, abs=1e-7)
    # 10/90: expected 1000/9000 of 10000; observed 1100/8900: chi2 = 10 + 1.1111 = 11.1111
    assert sample_ratio_mismatch(8900, 1100, 0.1) == pytest.approx(
        math.erfc(math.sqrt(11.111111 / 2)), rel=1e-6)
    assert sample_ratio_mismatch(0, 0, 0.5) == 1.0
    assert sample_ratio_mismatch(10, 0, 0.0) == 1.0 and sample_ratio_mismatch(10, 1, 0.0) == 0.0


def test_sequential_test_directions_margins_and_minimum_samples() -> None:
    good = MetricSummary.of([1.0] * 70 + [0.0] * 30)
    bad = MetricSummary.of([1.0] * 40 + [0.0] * 60)
    few = MetricSummary.of([0.0] * 5)
    assert not sequential_test(good, few).enough_data
    assert sequential_test(good, few).p_worse == 1.0
    t = sequential_test(good, bad)
    assert t.delta == pytest.approx(-0.3)
    assert t.worse and t.significant and not t.better
    assert t.ci_low < -0.3 < t.ci_high < 0
    # lower is better (e.g. latency): the same numbers mean the candidate improved
    t = sequential_test(good, bad, higher_is_better=False)
    assert t.better and not t.worse
    # a margin larger than the drop tolerates it
    assert not sequential_test(good, bad, margin=0.35).worse
    # p-values fall as the effect grows
    worse = MetricSummary.of([1.0] * 20 + [0.0] * 80)
    assert sequential_test(good, worse).p_worse < sequential_test(good, bad).p_worse


# --- lifecycle -----------------------------------------------------------------------


def test_start_checks_its_arguments(experiments: Experiments) -> None:
    with pytest.raises(ConfigError, match="traffic_split"):
        experiments.start_ab_test("x", 1, 2, 1.5, resource="planner")
    with pytest.raises(NotFoundError, match="no version 9"):
        experiments.start_ab_test("x", 1, 9, 0.5, resource="planner")
    experiments.start_ab_test("x", "production", "latest", 0.5, resource="planner")
    assert (experiments.get("x").baseline, experiments.get("x").candidate) == (1, 2)
    with pytest.raises(ConflictError, match="already has a running experiment 'x'"):
        experiments.start_ab_test("y", 1, 2, 0.5, resource="planner")
    experiments.stop_ab_test("x")
    with pytest.raises(ConflictError, match="named 'x' already exists"):
        experiments.start_ab_test("x", 1, 2, 0.5, resource="planner")
    with pytest.raises(NotFoundError, match="no experiment named 'zz'"):
        experiments.status("zz")
    with pytest.raises(ConfigError, match="stages"):
        RolloutPolicy(stages=(0.5, 0.25, 1.0))
    with pytest.raises(ConfigError, match=r"end at 1\.0"):
        RolloutPolicy(stages=(0.1, 0.5))
    with pytest.raises(ConfigError, match="alpha"):
        ExperimentConfig(alpha=0.0)


def test_outcomes_aggregate_per_arm(experiments: Experiments) -> None:
    experiments.start_ab_test("ab", 1, 2, 0.5, resource="planner")
    experiments.record_outcome("ab", "baseline", success=True, reward=1.0,
                               metrics={"latency_s": 2.0})
    experiments.record_outcomes("ab", Arm.BASELINE, successes=[False, True], rewards=[0.0, 0.5],
                                metrics={"latency_s": [4.0, 3.0]})
    experiments.record_outcome("ab", "candidate", success=False)
    report = experiments.status("ab")
    base = report.arms[Arm.BASELINE]
    assert base.num_outcomes == 3 and base.version == 1
    assert base.success_rate == pytest.approx(2 / 3)
    assert base.mean_reward == pytest.approx(0.5)
    assert base.metrics["latency_s"].mean == pytest.approx(3.0)
    assert base.metrics["latency_s"].variance == pytest.approx(1.0)
    assert report.arms[Arm.CANDIDATE].success_rate == 0.0
    assert not report.primary.enough_data and report.primary.p_value == 1.0
    with pytest.raises(InvalidInputError, match="one value per outcome"):
        experiments.record_outcomes("ab", "baseline", successes=[True], rewards=[1.0, 2.0])
    with pytest.raises(InvalidInputError, match="reserved"):
        experiments.record_outcome("ab", "baseline", success=True, metrics={"reward": 1.0})
    with pytest.raises(InvalidInputError, match="finite"):
        experiments.record_outcome("ab", "baseline", success=True, reward=math.nan)


def test_concurrent_outcome_writers_lose_nothing(experiments: Experiments) -> None:
    experiments.start_ab_test("ab", 1, 2, 0.5, resource="planner")

    def work() -> None:
        for _ in range(25):
            experiments.record_outcome("ab", "candidate", success=True, reward=1.0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert experiments.status("ab").arms[Arm.CANDIDATE].num_outcomes == 100


def test_episodes_feed_the_same_metrics(experiments: Experiments, store) -> None:
    experiments.start_ab_test("ab", 1, 2, 0.5, resource="planner")
    episodes = []
    for i, (arm, status, reward) in enumerate(
        [("baseline", "success", 1.0), ("baseline", "failure", -1.0), ("candidate", "success", 2.0)]
    ):
        a = experiments.assign("ab", f"user-{i}")
        episodes.append(Episode.new(
            f"task {i}", status=status, terminal_reward=reward, started_at=10.0, ended_at=12.5,
            metadata={**a.metadata, "experiment_arm": arm, "tokens": 100 * (i + 1)},
            versions={"planner": "v1" if arm == "baseline" else "v2"},
        ))
    store.add_episodes(episodes)
    for episode in episodes:
        experiments.record_episode("ab", episode)
    audit = experiments.episode_metrics("ab", store)
    report = experiments.status("ab")
    for arm in Arm:
        assert audit[arm].num_outcomes == report.arms[arm].num_outcomes
        for key in ("success", "reward", "tokens", "duration_s"):
            assert audit[arm].metrics[key].mean == pytest.approx(report.arms[arm].metrics[key].mean)
    assert report.arms[Arm.BASELINE].metrics["tokens"].mean == 150.0
    assert report.arms[Arm.BASELINE].metrics["duration_s"].mean == 2.5
    # without the arm in metadata the version decides
    plain = Episode.new("t", status="success", metadata={"experiment": "ab"},
                        versions={"planner": "v2"})
    experiments.record_episode("ab", plain)
    assert experiments.status("ab").arms[Arm.CANDIDATE].num_outcomes == 2
    with pytest.raises(InvalidInputError, match="not 'ab'"):
        experiments.record_episode("ab", Episode.new("t", metadata={"experiment": "other"}))


def test_stop_with_a_winner_moves_production(experiments: Experiments, caplog) -> None:
    experiments.start_ab_test("ab", 1, 2, 0.5, resource="planner")
    experiments.record_outcomes("ab", "candidate", successes=[True] * 40)
    experiments.record_outcomes("ab", "baseline", successes=[True, False] * 20)
    stopped = experiments.stop_ab_test("ab", winner="candidate", reason="clear win")
    assert stopped.status is ExperimentStatus.COMPLETED and stopped.winner is Arm.CANDIDATE
    assert experiments.registry.get("planner", "production").version == 2
    move = experiments.registry.history("planner", "production")[-1]
    assert move.forced and "clear win" in (move.reason or "")
    assert {experiments.assign("ab", f"u{i}").version for i in range(50)} == {2}
    with caplog.at_level(logging.WARNING, logger="learnloop.experiments"):
        assert experiments.record_outcome("ab", "candidate", success=True) is False
    assert "dropped 1 outcome" in caplog.text
    with pytest.raises(ClosedError, match="is completed"):
        experiments.stop_ab_test("ab")
    assert experiments.list_experiments(status="completed")[0].name == "ab"


def test_stop_without_winner_sends_everyone_to_the_baseline(experiments: Experiments) -> None:
    experiments.start_ab_test("ab", 1, 2, 0.9, resource="planner")
    assert experiments.stop_ab_test("ab").status is ExperimentStatus.STOPPED
    assert {experiments.assign("ab", f"u{i}").version for i in range(50)} == {1}
    assert experiments.registry.get("planner", "production").version == 1


# --- staged rollout ------------------------------------------------------------------


def feed(experiments: Experiments, name: str, rng: np.random.Generator, num_units: int,
         p: dict[Arm, float], tick: int, latency: dict[Arm, float] | None = None) -> None:
    assigner = experiments.assigner(name)
    arms = [assigner(f"{name}-{tick}-{i}").arm for i in range(num_units)]
    draws = rng.random(num_units)
    for arm in Arm:
        picked = [bool(d < p[arm]) for a, d in zip(arms, draws, strict=True) if a is arm]
        metrics = None
        if latency is not None:
            metrics = {"latency_s": list(rng.normal(latency[arm], 0.5, len(picked)))}
        experiments.record_outcomes(name, arm, successes=picked, metrics=metrics)


def drive(experiments: Experiments, clock: Clock, name: str, rng: np.random.Generator,
          p: dict[Arm, float], *, units: int = 400, latency: dict[Arm, float] | None = None,
          max_ticks: int = 200) -> list[float]:
    """Step a rollout to its end; returns the traffic after each step."""
    traffic = []
    for tick in range(max_ticks):
        feed(experiments, name, rng, units, p, tick, latency)
        clock.now += 600.0
        decision = experiments.step_rollout(name)
        traffic.append(decision.traffic)
        if experiments.get(name).status is not ExperimentStatus.RUNNING:
            break
    return traffic


def test_a_regression_rolls_back_before_half_traffic(
    experiments: Experiments, clock: Clock
) -> None:
    experiments.start_rollout("ro", 1, 2, resource="planner", salt="fixed")
    traffic = drive(experiments, clock, "ro", np.random.default_rng(0),
                    {Arm.BASELINE: 0.6, Arm.CANDIDATE: 0.45})
    experiment = experiments.get("ro")
    assert experiment.status is ExperimentStatus.ROLLED_BACK
    assert max(traffic[:-1]) < 0.5 and traffic[-1] == 0.0
    last = experiment.decisions[-1]
    assert last.action is Action.ROLLBACK and "significantly worse: success" in last.reason
    assert experiments.registry.get("planner", "production").version == 1
    assert {experiments.assign("ro", f"u{i}").version for i in range(50)} == {1}
    with pytest.raises(ClosedError):
        experiments.step_rollout("ro")


def test_rollback_restores_production_if_it_was_moved(
    experiments: Experiments, clock: Clock
) -> None:
    experiments.registry.set_label("planner", "production", 2, force=True)
    experiments.start_rollout("ro", 1, 2, resource="planner")
    drive(experiments, clock, "ro", np.random.default_rng(1),
          {Arm.BASELINE: 0.7, Arm.CANDIDATE: 0.3})
    assert experiments.get("ro").status is ExperimentStatus.ROLLED_BACK
    assert experiments.registry.get("planner", "production").version == 1


def test_a_better_candidate_is_promoted_stage_by_stage(
    experiments: Experiments, clock: Clock
) -> None:
    experiments.start_rollout("ro", 1, 2, resource="planner",
                              policy=RolloutPolicy(min_samples_per_stage=300, min_duration_s=1800))
    traffic = drive(experiments, clock, "ro", np.random.default_rng(2),
                    {Arm.BASELINE: 0.6, Arm.CANDIDATE: 0.7})
    experiment = experiments.get("ro")
    assert experiment.status is ExperimentStatus.COMPLETED
    assert sorted(set(traffic)) == [0.1, 0.25, 0.5, 1.0] and traffic == sorted(traffic)
    actions = [d.action for d in experiment.decisions]
    assert actions[0] is Action.START and actions[-1] is Action.COMPLETE
    assert actions.count(Action.ADVANCE) == 2
    # consecutive holds in a stage are one record
    holds = [d for d in experiment.decisions if d.action is Action.HOLD]
    assert len(holds) <= 3 and sum(d.count for d in holds) == len(traffic) - 3
    assert experiments.registry.get("planner", "production").version == 2


def test_a_stage_waits_for_its_minimum_duration(experiments: Experiments, clock: Clock) -> None:
    experiments.start_rollout("ro", 1, 2, resource="planner",
                              policy=RolloutPolicy(min_samples_per_stage=50, min_duration_s=3600))
    feed(experiments, "ro", np.random.default_rng(3), 2000, {a: 0.5 for a in Arm}, 0)
    clock.now = 1800.0
    decision = experiments.step_rollout("ro")
    assert decision.action is Action.HOLD and "1800/3600 s" in decision.reason
    decision = experiments.step_rollout("ro", now=3600.0)
    assert decision.action is Action.ADVANCE and decision.traffic == 0.25


def test_a_guardrail_fires_on_its_own(experiments: Experiments, clock: Clock) -> None:
    config = ExperimentConfig(guardrails=(Guardrail(metric="latency_s", higher_is_better=False,
                                                    margin=0.1),))
    experiments.start_rollout("ro", 1, 2, resource="planner", config=config)
    drive(experiments, clock, "ro", np.random.default_rng(4), {a: 0.6 for a in Arm},
          latency={Arm.BASELINE: 1.0, Arm.CANDIDATE: 1.5})
    experiment = experiments.get("ro")
    assert experiment.status is ExperimentStatus.ROLLED_BACK
    assert "latency_s" in experiment.decisions[-1].reason
    assert "success" not in experiment.decisions[-1].reason


def test_sample_ratio_mismatch_holds_the_rollout(experiments: Experiments) -> None:
    experiments.start_rollout("ro", 1, 2, resource="planner",
                              policy=RolloutPolicy(min_samples_per_stage=10, min_duration_s=0))
    experiments.record_outcomes("ro", "baseline", successes=[True, False] * 500)
    experiments.record_outcomes("ro", "candidate", successes=[True, False] * 200)  # 29%, not 10%
    assert experiments.status("ro").srm
    decision = experiments.step_rollout("ro", now=10.0)
    assert decision.action is Action.HOLD and "sample ratio mismatch" in decision.reason


def test_a_finished_rollout_reports_no_sample_ratio_mismatch(experiments: Experiments) -> None:
    """The counts of the last stage (at 50%) are not judged against the final 100%."""
    policy = RolloutPolicy(stages=(0.5, 1.0), min_samples_per_stage=10, min_duration_s=0)
    experiments.start_rollout("ro", 1, 2, resource="planner", policy=policy)
    experiments.record_outcomes("ro", "baseline", successes=[True, False] * 100)
    experiments.record_outcomes("ro", "candidate", successes=[True, False] * 100)
    assert experiments.step_rollout("ro", now=10.0).action is Action.COMPLETE
    report = experiments.status("ro")
    assert report.experiment.traffic == 1.0 and not report.srm


def test_step_rollout_refuses_an_ab_test(experiments: Experiments) -> None:
    experiments.start_ab_test("ab", 1, 2, 0.5, resource="planner")
    with pytest.raises(ConfigError, match="not a rollout"):
        experiments.step_rollout("ab")


# --- the bars, small here; the full-size runs are marked slow ------------------------


def aa_false_positive_rate(experiments: Experiments, num: int, peeks: int, units: int) -> float:
    rng = np.random.default_rng(11)
    hits = 0
    for i in range(num):
        name = f"aa-{i}"
        experiments.start_ab_test(name, 1, 1, 0.5, resource="planner", salt=name)
        significant = False
        for peek in range(peeks):
            feed(experiments, name, rng, units, {a: 0.6 for a in Arm}, peek)
            significant |= experiments.status(name).primary.significant
        experiments.stop_ab_test(name)
        hits += significant
    return hits / num


def rollout_rates(experiments: Experiments, clock: Clock, num: int, p_candidate: float) -> tuple[
        float, float]:
    rng = np.random.default_rng(int(p_candidate * 100))
    early, complete = 0, 0
    for i in range(num):
        name = f"ro-{p_candidate}-{i}"
        experiments.start_rollout(name, 1, 2, resource="planner", salt=name)
        p = {Arm.BASELINE: 0.6, Arm.CANDIDATE: p_candidate}
        traffic = drive(experiments, clock, name, rng, p, units=500)
        status = experiments.get(name).status
        early += status is ExperimentStatus.ROLLED_BACK and max(traffic[:-1] or [0.1]) < 0.5
        complete += status is ExperimentStatus.COMPLETED
    return early / num, complete / num


def test_aa_tests_peeked_often_rarely_reject(experiments: Experiments) -> None:
    assert aa_false_positive_rate(experiments, num=30, peeks=20, units=100) <= 0.1


def test_rollout_bars_small(experiments: Experiments, clock: Clock) -> None:
    early, _ = rollout_rates(experiments, clock, 10, 0.5)
    assert early >= 0.9
    _, complete = rollout_rates(experiments, clock, 5, 0.7)
    assert complete == 1.0


@pytest.mark.slow
def test_aa_false_positive_rate_full(experiments: Experiments) -> None:
    assert aa_false_positive_rate(experiments, num=200, peeks=20, units=200) <= 0.05


@pytest.mark.slow
def test_rollout_bars_full(experiments: Experiments, clock: Clock) -> None:
    early, _ = rollout_rates(experiments, clock, 200, 0.5)
    assert early >= 0.95
    _, complete = rollout_rates(experiments, clock, 200, 0.7)
    assert complete == 1.0
