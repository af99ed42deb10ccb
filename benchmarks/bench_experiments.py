"""Benchmark the experiment machinery against its bars, by simulation.

1. Assignment: share of 100,000 unit ids that a 10/90 split sends to the candidate
   (bar: within 0.5 points of 10%), and assignments per second.
2. A/A tests: N experiments (same version on both sides), each looked at K times;
   the rate of experiments ever declared significant (bar: <= 5%).
3. Staged rollout (10% -> 25% -> 50% -> 100%, default RolloutPolicy) of a candidate
   10 points worse on success: rate rolled back before 50% traffic (bar: >= 95%);
   one 10 points better: rate reaching 100% (bar: all, reported as a rate); and an
   equal candidate: rate of (false) rollbacks.

Everything goes through the real Experiments API on a SQLite store in a temporary
folder; outcomes are Bernoulli draws from a seeded numpy generator.

    python benchmarks/bench_experiments.py              # full: 200 simulations each
    python benchmarks/bench_experiments.py --num-sims 40 --json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import numpy as np

from learnloop.experiments import (
    Arm,
    ExperimentConfig,
    Experiments,
    ExperimentStatus,
    RolloutPolicy,
    assign_arm,
    bucket_of,
)
from learnloop.registry import Registry
from learnloop.store import SqliteStore


class FakeClock:
    """Simulated time: the rollout's stage durations pass without sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def bench_assignment(num_units: int = 100_000) -> dict[str, float]:
    units = [f"user-{i}" for i in range(num_units)]
    start = time.perf_counter()
    buckets = [bucket_of("bench-salt", u) for u in units]
    bucket_s = time.perf_counter() - start
    share = sum(1 for b in buckets if b < 1000) / num_units
    start = time.perf_counter()
    arms = [assign_arm("bench-salt", u, 0.1)[0] for u in units]
    arm_s = time.perf_counter() - start
    assert sum(a is Arm.CANDIDATE for a in arms) / num_units == share
    with tempfile.TemporaryDirectory() as tmp, SqliteStore(os.path.join(tmp, "a.db")) as store:
        registry = Registry(store)
        registry.register("res", "v1")
        registry.register("res", "v2")
        experiments = Experiments(store, registry)
        experiments.start_ab_test("split", 1, 2, 0.1, resource="res", salt="bench-salt")
        assigner = experiments.assigner("split")
        start = time.perf_counter()
        for u in units:
            assigner(u)
        assigner_s = time.perf_counter() - start
        start = time.perf_counter()
        for u in units[:5000]:
            experiments.assign("split", u)
        store_s = (time.perf_counter() - start) / 5000 * num_units
    return {
        "num_units": num_units,
        "candidate_share_at_10pct": share,
        "bucket_of_per_s": num_units / bucket_s,
        "assign_arm_per_s": num_units / arm_s,
        "assigner_per_s": num_units / assigner_s,
        "experiments_assign_per_s": num_units / store_s,
    }


def run_aa(experiments: Experiments, index: int, rng: np.random.Generator, *, num_peeks: int,
           units_per_peek: int, p: float) -> bool:
    """One A/A test; True when any look declares the arms different."""
    name = f"aa-{index}"
    experiments.start_ab_test(name, 1, 1, 0.5, resource="res", salt=name)
    assigner = experiments.assigner(name)
    significant = False
    for peek in range(num_peeks):
        arms = [assigner(f"{name}-u{peek}-{i}").arm for i in range(units_per_peek)]
        successes = rng.random(units_per_peek) < p
        for arm in Arm:
            picked = [bool(s) for a, s in zip(arms, successes, strict=True) if a is arm]
            experiments.record_outcomes(name, arm, successes=picked)
        significant |= experiments.status(name).primary.significant
    experiments.stop_ab_test(name, reason="A/A done")
    return significant


def run_rollout(experiments: Experiments, clock: FakeClock, index: int, rng: np.random.Generator,
                *, p_baseline: float, p_candidate: float, units_per_tick: int, tick_s: float,
                policy: RolloutPolicy, max_ticks: int = 400) -> dict[str, Any]:
    """One staged rollout driven to its end; returns its status and the traffic it reached."""
    name = f"ro-{index}-{p_candidate}"
    experiments.start_rollout(name, 1, 2, resource="res", policy=policy, salt=name)
    max_traffic = policy.stages[0]
    for tick in range(max_ticks):
        assigner = experiments.assigner(name)
        arms = [assigner(f"{name}-u{tick}-{i}").arm for i in range(units_per_tick)]
        draws = rng.random(units_per_tick)
        for arm in Arm:
            p = p_candidate if arm is Arm.CANDIDATE else p_baseline
            picked = [bool(d < p) for a, d in zip(arms, draws, strict=True) if a is arm]
            experiments.record_outcomes(name, arm, successes=picked)
        clock.now += tick_s
        decision = experiments.step_rollout(name, now=clock.now)
        if experiments.get(name).status is ExperimentStatus.RUNNING:
            max_traffic = max(max_traffic, decision.traffic)
            continue
        experiment = experiments.get(name)
        reached = max_traffic if experiment.status is ExperimentStatus.ROLLED_BACK else 1.0
        return {"status": experiment.status.value, "max_traffic": reached, "ticks": tick + 1}
    return {"status": "running", "max_traffic": max_traffic, "ticks": max_ticks}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-sims", type=int, default=200, help="simulations per scenario")
    parser.add_argument("--num-peeks", type=int, default=20, help="looks per A/A test")
    parser.add_argument("--units-per-peek", type=int, default=200, help="A/A units per look")
    parser.add_argument("--units-per-tick", type=int, default=500, help="rollout units per tick")
    parser.add_argument("--tick-s", type=float, default=600.0, help="simulated seconds per tick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"assignment": bench_assignment()}
    policy = RolloutPolicy()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp, SqliteStore(os.path.join(tmp, "b.db")) as store:
        clock = FakeClock()
        registry = Registry(store, clock=clock)
        registry.register("res", "baseline prompt")
        registry.register("res", "candidate prompt")
        experiments = Experiments(store, registry, clock=clock)
        start = time.perf_counter()
        aa = [run_aa(experiments, i, rng, num_peeks=args.num_peeks,
                     units_per_peek=args.units_per_peek, p=0.6) for i in range(args.num_sims)]
        results["aa"] = {
            "num_experiments": args.num_sims, "num_peeks": args.num_peeks,
            "units_per_peek": args.units_per_peek, "alpha": ExperimentConfig().alpha,
            "false_positive_rate": sum(aa) / len(aa), "seconds": time.perf_counter() - start,
        }
        for label, p_candidate in (("worse", 0.5), ("better", 0.7), ("equal", 0.6)):
            start = time.perf_counter()
            runs = [run_rollout(experiments, clock, i, rng, p_baseline=0.6, p_candidate=p_candidate,
                                units_per_tick=args.units_per_tick, tick_s=args.tick_s,
                                policy=policy) for i in range(args.num_sims)]
            results[f"rollout_{label}"] = {
                "p_baseline": 0.6, "p_candidate": p_candidate, "num_sims": len(runs),
                "rolled_back": sum(r["status"] == "rolled_back" for r in runs) / len(runs),
                "rolled_back_before_50pct": sum(
                    r["status"] == "rolled_back" and r["max_traffic"] < 0.5 for r in runs
                ) / len(runs),
                "reached_100pct": sum(r["status"] == "completed" for r in runs) / len(runs),
                "mean_ticks": float(np.mean([r["ticks"] for r in runs])),
                "seconds": time.perf_counter() - start,
            }
    results["policy"] = policy.to_dict()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        a = results["assignment"]
        print(f"assignment: 10% split -> {a['candidate_share_at_10pct']:.4%} of "
              f"{a['num_units']:,} ids; bucket_of {a['bucket_of_per_s']:,.0f}/s, Assigner "
              f"{a['assigner_per_s']:,.0f}/s, Experiments.assign (store read) "
              f"{a['experiments_assign_per_s']:,.0f}/s")
        aa_r = results["aa"]
        print(f"A/A: {aa_r['num_experiments']} experiments x {aa_r['num_peeks']} peeks: "
              f"false-positive rate {aa_r['false_positive_rate']:.1%} (alpha 5%)")
        for label in ("worse", "better", "equal"):
            r = results[f"rollout_{label}"]
            print(f"rollout, candidate {r['p_candidate']:.0%} vs baseline {r['p_baseline']:.0%}: "
                  f"rolled back {r['rolled_back']:.1%} (before 50%: "
                  f"{r['rolled_back_before_50pct']:.1%}), reached 100% {r['reached_100pct']:.1%}, "
                  f"{r['mean_ticks']:.1f} ticks, {r['seconds']:.1f} s")
    return results


if __name__ == "__main__":
    main()
