"""Tool-selection bandits on the built-in suite's stream: regret and selection latency.

The stream: tasks drawn uniformly from the suite's train split, one decision per
sub-task (its text is the context), reward = the suite's success (1/0), drawn with
common random numbers so every learner faces the same draws. From the middle of
the run ``web_search`` and ``code_grep`` degrade to success <= 0.1. Regret at
decision t = max_a p(s_t, a, t) - p(s_t, chosen, t) with the suite's true
probabilities. The suite seed is the run seed, so every seed is a new suite
(new probabilities, new phrasings), not only new draws.

Vowpal Wabbit (``--cb_explore_adf``, words of the task as shared features, crossed
with the tool) and MABWiser run side by side in the same process.

    python benchmarks/bench_bandits.py                       # 20,000 decisions x seeds 0-4
    python benchmarks/bench_bandits.py --seeds 5 6 7 8 9 --quick   # unseen seeds, no LinUCB/MABWiser
    python benchmarks/bench_bandits.py --decisions 2000 --seeds 1 --skip-vw --skip-mabwiser

The learners' settings were chosen on seeds 2 and 3; seeds 5 and above were never
used for tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from learnloop.bandits import ToolSelector, make_policy
from learnloop.bandits.contexts import HashedTextFeaturizer, KeywordFeaturizer, tokenize
from learnloop.envs import SuiteConfig, ToolUseSuite

DEGRADED = ("web_search", "code_grep")


@dataclass
class Stream:
    texts: list[str]
    probs: np.ndarray  # (T, num_tools) true success probability at each decision
    draws: np.ndarray  # (T,) uniforms: success = draw < p(chosen)
    tools: tuple[str, ...]


def make_stream(seed: int, decisions: int) -> Stream:
    suite = ToolUseSuite(SuiteConfig(seed=seed, degrade_tools=DEGRADED, degrade_at=decisions // 2))
    rng = np.random.default_rng(10_000 + seed)
    texts: list[str] = []
    rows: list[np.ndarray] = []
    type_row = {t: i for i, t in enumerate(suite.task_types)}
    before, after = suite.success_matrix(0), suite.success_matrix(decisions)
    while len(texts) < decisions:
        task = suite.train_tasks[int(rng.integers(len(suite.train_tasks)))]
        for sub in task.subtasks:
            if len(texts) == decisions:
                break
            matrix = before if len(texts) < decisions // 2 else after
            texts.append(sub.text)
            rows.append(matrix[type_row[sub.task_type]])
    return Stream(texts, np.array(rows), rng.random(decisions), suite.tools)


# --- learners --------------------------------------------------------------------------------

Learner = Callable[[Stream, int], np.ndarray]  # returns the chosen tool index per decision


def run_selector(make: Callable[[], ToolSelector]) -> Learner:
    def run(stream: Stream, seed: int) -> np.ndarray:
        selector = make()
        for tool in stream.tools:
            selector.add_tool(tool)
        chosen = np.empty(len(stream.texts), dtype=np.intp)
        for t, text in enumerate(stream.texts):
            choice = selector.choose(text)
            chosen[t] = choice.arm
            selector.update(choice, float(stream.draws[t] < stream.probs[t, choice.arm]))
        return chosen

    return run


def learnloop_learners(seed: int, *, quick: bool = False) -> dict[str, Learner]:
    hashed = lambda: HashedTextFeaturizer()  # noqa: E731
    learners = {
        "epsilon_greedy_keyword (spec)": run_selector(
            lambda: ToolSelector(
                make_policy("epsilon_greedy"), featurizer=KeywordFeaturizer(), seed=seed
            )
        ),
        "ucb1 (keyword)": run_selector(
            lambda: ToolSelector(make_policy("ucb1"), featurizer=KeywordFeaturizer(), seed=seed)
        ),
        "thompson (keyword)": run_selector(
            lambda: ToolSelector(
                make_policy("thompson", seed=seed), featurizer=KeywordFeaturizer(), seed=seed
            )
        ),
        "linucb (hashed 256)": run_selector(
            lambda: ToolSelector(
                make_policy("linucb", dim=256, epsilon=0.0),
                featurizer=HashedTextFeaturizer(dim=256),
                seed=seed,
            )
        ),
        "squarecb (hashed)": run_selector(
            lambda: ToolSelector(make_policy("squarecb"), featurizer=hashed(), seed=seed)
        ),
        "linear_thompson (hashed)": run_selector(
            lambda: ToolSelector(make_policy("linear_thompson"), featurizer=hashed(), seed=seed)
        ),
    }
    if quick:
        del learners["linucb (hashed 256)"]
    return learners


_VW_ESCAPE = re.compile(r"[|:\s]")


def vw_learner(args: str) -> Learner:
    def run(stream: Stream, seed: int) -> np.ndarray:
        import vowpalwabbit

        ws = vowpalwabbit.Workspace(f"--cb_explore_adf {args} -q sa --quiet --random_seed {seed}")
        rng = np.random.default_rng(seed)
        actions = [f"|a tool={tool}" for tool in stream.tools]
        chosen = np.empty(len(stream.texts), dtype=np.intp)
        for t, text in enumerate(stream.texts):
            shared = "shared |s " + " ".join(tokenize(text))
            pmf = np.asarray(ws.predict([shared, *actions]), dtype=np.float64)
            a = int(rng.choice(pmf.size, p=pmf / pmf.sum()))
            chosen[t] = a
            reward = float(stream.draws[t] < stream.probs[t, a])
            lines = [shared, *actions]
            lines[1 + a] = f"0:{-reward}:{pmf[a]} {actions[a]}"
            ws.learn(lines)
        ws.finish()
        return chosen

    return run


def mabwiser_learner(policy: str, dim: int = 64, batch: int = 100) -> Learner:
    def run(stream: Stream, seed: int) -> np.ndarray:
        from mabwiser.mab import MAB, LearningPolicy

        featurizer = HashedTextFeaturizer(dim=dim)
        lp = {"LinUCB": LearningPolicy.LinUCB(alpha=1.0), "LinTS": LearningPolicy.LinTS(alpha=0.5)}[
            policy
        ]
        arms = list(stream.tools)
        mab = MAB(arms=arms, learning_policy=lp, seed=seed)
        x = np.stack([featurizer(text).dense() for text in stream.texts])
        index = {a: i for i, a in enumerate(arms)}
        chosen = np.empty(len(stream.texts), dtype=np.intp)
        rng = np.random.default_rng(seed)
        for start in range(0, len(stream.texts), batch):  # updates in mini-batches
            xb = x[start : start + batch]
            if start == 0:
                picks = [arms[int(i)] for i in rng.integers(len(arms), size=len(xb))]
            else:
                picks = mab.predict(xb)
                picks = picks if isinstance(picks, list) else [picks]
            idx = np.array([index[p] for p in picks])
            chosen[start : start + len(xb)] = idx
            rewards = (
                stream.draws[start : start + len(xb)]
                < stream.probs[start + np.arange(len(xb)), idx]
            ).astype(float)
            if start == 0:
                mab.fit([arms[i] for i in idx], rewards, xb)
            else:
                mab.partial_fit([arms[i] for i in idx], rewards, xb)
        return chosen

    return run


def regret(stream: Stream, chosen: np.ndarray) -> float:
    picked = stream.probs[np.arange(chosen.size), chosen]
    return float((stream.probs.max(axis=1) - picked).sum())


# --- latency ---------------------------------------------------------------------------------


def selection_latency(
    policy: str, num_tools: int = 30, calls: int = 20_000, seed: int = 0
) -> dict[str, float]:
    """choose() latency in microseconds with num_tools tools, after a warm-up of updates."""
    suite = ToolUseSuite(SuiteConfig(seed=seed))
    featurizer = (
        KeywordFeaturizer()
        if policy in ("epsilon_greedy", "ucb1", "thompson")
        else HashedTextFeaturizer(dim=256 if policy == "linucb" else 1024)
    )
    selector = ToolSelector(
        make_policy(policy, dim=featurizer.dim),
        featurizer=featurizer,
        tools=[f"tool_{i}" for i in range(num_tools)],
        seed=seed,
    )
    texts = [s.text for task in suite.train_tasks for s in task.subtasks]
    rng = np.random.default_rng(seed)
    for text in texts[:2000]:
        choice = selector.choose(text)
        selector.update(choice, float(rng.random() < 0.5))
    samples = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        text = texts[i % len(texts)]
        start = clock()
        selector.choose(text)
        samples[i] = clock() - start
    return {
        "median_us": float(np.median(samples) / 1e3),
        "p99_us": float(np.percentile(samples, 99) / 1e3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3, 4],
        help="suite seeds (each is a new suite); 5 and above were never used for tuning",
    )
    parser.add_argument(
        "--quick", action="store_true", help="skip LinUCB and MABWiser (the slow ones)"
    )
    parser.add_argument("--skip-vw", action="store_true")
    parser.add_argument("--skip-mabwiser", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--latency-only", action="store_true", help="only the choose() latency")
    parser.add_argument(
        "--only", default="", help="comma-separated substrings of learner names to run"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    seeds = [] if args.latency_only else list(args.seeds)
    results: dict[str, list[float]] = {}
    times: dict[str, float] = {}
    for seed in seeds:
        stream = make_stream(seed, args.decisions)
        learners = learnloop_learners(seed, quick=args.quick)
        if not args.skip_vw:
            learners["vw squarecb"] = vw_learner("--squarecb")
            learners["vw softmax lambda=10"] = vw_learner("--softmax --lambda 10")
            learners["vw softmax lambda=30"] = vw_learner("--softmax --lambda 30")
        if not (args.skip_mabwiser or args.quick):
            learners["mabwiser LinUCB (hashed 64, batch 100)"] = mabwiser_learner("LinUCB")
        for name, learner in learners.items():
            if args.only and not any(s in name for s in args.only.split(",")):
                continue
            start = time.perf_counter()
            chosen = learner(stream, seed)
            times[name] = times.get(name, 0.0) + time.perf_counter() - start
            results.setdefault(name, []).append(regret(stream, chosen))
            print(
                f"seed {seed} {name:42s} regret {results[name][-1]:8.1f}",
                file=sys.stderr,
                flush=True,
            )

    if seeds:
        print_regret(results, times, seeds, args.decisions)
    latency = {}
    if not args.skip_latency:
        print(
            "\nchoose() latency, 30 tools, in-process, propensity included "
            f"(featurization cached per text); load average {os.getloadavg()[0]:.2f}:"
        )
        for policy in (
            "epsilon_greedy",
            "ucb1",
            "thompson",
            "linucb",
            "squarecb",
            "linear_thompson",
        ):
            latency[policy] = selection_latency(policy)
            print(
                f"  {policy:18s} median {latency[policy]['median_us']:7.1f} us   p99 {latency[policy]['p99_us']:7.1f} us"
            )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        rows = {
            name: {
                "regret_mean": statistics.fmean(values),
                "regret": values,
                "us_per_decision": 1e6 * times[name] / (len(values) * args.decisions),
            }
            for name, values in results.items()
        }
        print(json.dumps({"regret": rows, "latency": latency}))
    return 0


def print_regret(
    results: dict[str, list[float]], times: dict[str, float], seeds: list[int], decisions: int
) -> None:
    print(
        f"reward: suite success (1/0); {decisions} decisions x seeds {seeds}; "
        f"{', '.join(DEGRADED)} degrade to <= 0.1 at decision {decisions // 2}"
    )
    per_seed = "".join(f"{'seed ' + str(s):>9s}" for s in seeds)
    print(f"{'learner':44s} {'regret mean':>11s}{per_seed} {'us/decision':>12s}")
    for name, values in results.items():
        us = 1e6 * times[name] / (len(values) * decisions)
        cells = "".join(f"{v:9.1f}" for v in values)
        print(f"{name:44s} {statistics.fmean(values):11.1f}{cells} {us:12.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
