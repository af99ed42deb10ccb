"""``learnloop train bandit``: learn tool selection on the built-in suite or on logged choices.

Prints held-out success (expected, from the suite's true success probabilities)
of the untrained and the trained policy and writes ``learned_policy.json``.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]

POLICY_CHOICES = (
    "epsilon_greedy_keyword",
    "epsilon_greedy",
    "ucb1",
    "thompson",
    "linucb",
    "squarecb",
    "linear_thompson",
)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bandit",
        help="learn which tool to call for a task (contextual bandit)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--policy",
        default="linear_thompson",
        choices=POLICY_CHOICES,
        help="learner (default: linear_thompson)",
    )
    parser.add_argument("--decisions", type=int, default=5000, help="tool decisions to learn from")
    parser.add_argument("--seed", type=int, default=0, help="seed of the suite and the learner")
    parser.add_argument("--output-dir", default=".", help="where learned_policy.json is written")
    parser.add_argument(
        "--store", default=None, help="store URL: record every choice (with its propensity) there"
    )
    parser.add_argument(
        "--from-store",
        default=None,
        help="learn from the choices logged in this store instead of the suite",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json
    import os

    import numpy as np

    from learnloop.bandits import ToolSelector, make_policy
    from learnloop.bandits.selector import default_featurizer, heldout_success
    from learnloop.envs import SuiteConfig, ToolUseSuite
    from learnloop.errors import ConfigError

    if args.decisions < 1:
        raise ConfigError(f"--decisions must be >= 1, got {args.decisions}")
    if not os.path.isdir(args.output_dir):
        os.makedirs(args.output_dir, exist_ok=True)
    suite = ToolUseSuite(SuiteConfig(seed=args.seed))
    featurizer = default_featurizer(args.policy)

    def fresh() -> ToolSelector:
        return ToolSelector(
            make_policy(args.policy, dim=featurizer.dim, seed=args.seed),
            featurizer=featurizer,
            tools=suite.tools,
            seed=args.seed,
            name=args.policy,
        )

    before = heldout_success(fresh(), suite)
    selector = fresh()
    recorder = store = None
    if args.store:
        from learnloop.recorder import Recorder
        from learnloop.store import open_store

        store = open_store(args.store)
        recorder = Recorder(store)
    learned_from = "suite"
    rng = np.random.default_rng(args.seed + 1)
    try:
        if args.from_store:
            from learnloop.bandits.ope import load_logs
            from learnloop.cli.bandit import no_logs_message, open_existing_store
            from learnloop.errors import InvalidInputError

            source = open_existing_store(args.from_store, "--from-store")
            try:
                logs = load_logs(source)
            finally:
                source.close()
            if not logs:
                raise InvalidInputError(no_logs_message(args.from_store))
            for log in logs:
                for tool in log.candidates:
                    selector.add_tool(tool)
                choice = selector.choose(log.task, log.candidates)
                # replay: learn the logged tool's reward (not the new choice's)
                replay = type(choice)(
                    tool=log.tool,
                    context=choice.context,
                    propensity=log.propensity,
                    policy_version=choice.policy_version,
                    candidates=log.candidates,
                    arm=selector.tools.index(log.tool),
                )
                selector.update(replay, log.reward)
            learned_from = f"{len(logs)} logged choices"
        else:
            decisions = 0
            while decisions < args.decisions:
                task = suite.train_tasks[int(rng.integers(len(suite.train_tasks)))]
                for sub in task.subtasks[: args.decisions - decisions]:
                    choice = selector.choose(sub.text)
                    outcome = suite.execute(sub, choice.tool, rng)
                    reward = 1.0 if outcome.success else 0.0
                    selector.update(choice, reward)
                    if recorder is not None:
                        eid = recorder.begin(
                            sub.text,
                            agent_id=f"bandit-{args.policy}",
                            kind="tool_call",
                            versions={"policy": choice.policy_version},
                        )
                        recorder.step(
                            eid,
                            f"call {choice.tool}",
                            tool=choice.tool,
                            state={**choice.log_state(), "task": sub.text},
                            reward=reward,
                            success=outcome.success,
                            duration_s=outcome.duration_s,
                        )
                        recorder.complete(eid, status="success" if outcome.success else "failure")
                    decisions += 1
    finally:
        if recorder is not None:
            recorder.close()
        if store is not None:
            store.close()
    after = heldout_success(selector, suite)
    path = os.path.join(args.output_dir, "learned_policy.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(selector.to_dict(), fh)
    result = {
        "policy": args.policy,
        "learned_from": learned_from,
        "updates": selector.num_updates,
        "heldout_success_before": before,
        "heldout_success_after": after,
        "output": path,
        "reward": "suite success (1/0)",
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"policy {args.policy}: learned from {learned_from} ({selector.num_updates} updates)")
        print(f"held-out success  before {before:.3f}  after {after:.3f}")
        print(f"wrote {path}")
    return 0
