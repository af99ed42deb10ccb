"""``learnloop bandit evaluate``: off-policy estimates of a policy's value on logged choices."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "no_logs_message", "open_existing_store", "parse_since", "run_evaluate"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("bandit", help="tool-selection policies: evaluate on logs")
    commands = parser.add_subparsers(dest="bandit_command", metavar="COMMAND", required=True)
    evaluate = commands.add_parser(
        "evaluate",
        help="estimate a policy's value on logged choices (IPS, SNIPS, DR)",
        description="Estimate what a policy would have earned on the choices logged in the "
        "store (steps whose state has a propensity), with 95%% intervals.",
    )
    evaluate.add_argument(
        "--policy",
        required=True,
        help="learned_policy.json, or a policy name (untrained, e.g. ucb1)",
    )
    evaluate.add_argument(
        "--since",
        default=None,
        help="only episodes started at/after this ISO date-time or Unix time",
    )
    evaluate.add_argument("--store", default=None, help="store URL (default: $LEARNLOOP_STORE)")
    evaluate.add_argument("--agent-id", default=None, help="only this agent's episodes")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.set_defaults(handler=run_evaluate)


def parse_since(value: str | None) -> float | None:
    """Unix time from ``value`` (a number, or an ISO 8601 date/date-time; naive means UTC)."""
    from datetime import UTC, datetime

    from learnloop.errors import ConfigError

    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"--since {value!r} is neither a Unix time nor an ISO date-time; "
            "e.g. 2026-01-31 or 2026-01-31T12:00:00+00:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def open_existing_store(url: str | None, flag: str = "--store") -> Any:
    """Open a store to read logs from; a SQLite file that does not exist is an error.

    (Opening it would create an empty database and report "no logs", which hides a
    mistyped path.)
    """
    from learnloop.store import open_store

    return open_store(url, create=False, flag=flag)


def no_logs_message(url: str | None, since: str | None = None, agent_id: str | None = None) -> str:
    """Why there is nothing to learn from or evaluate on, and how to get logs."""
    from learnloop.store import resolve_store_url

    where = resolve_store_url(url)
    if since:
        where += f" since {since}"
    if agent_id:
        where += f" for agent {agent_id!r}"
    return (
        f"no logged tool choices in {where}: a choice is a step with a tool and a state "
        "holding 'propensity' and 'candidates'; record some with 'learnloop train bandit "
        "--store URL' or a ToolAgent with a recorder, or widen --since/--agent-id"
    )


def run_evaluate(args: argparse.Namespace) -> int:
    import json
    import os

    from learnloop.bandits import ToolSelector, make_policy
    from learnloop.bandits.ope import evaluate, load_logs, selector_target
    from learnloop.bandits.selector import POLICIES, default_featurizer
    from learnloop.errors import ConfigError, InvalidInputError

    if os.path.isfile(args.policy):
        with open(args.policy, encoding="utf-8") as fh:
            selector = ToolSelector.from_dict(json.load(fh))
    elif args.policy in POLICIES or args.policy == "epsilon_greedy_keyword":
        featurizer = default_featurizer(args.policy)
        selector = ToolSelector(make_policy(args.policy, dim=featurizer.dim), featurizer=featurizer)
    else:
        raise ConfigError(
            f"--policy {args.policy!r} is neither a file nor a policy name ({sorted(POLICIES)})"
        )
    since = parse_since(args.since)
    store = open_existing_store(args.store)
    try:
        logs = load_logs(store, since=since, agent_id=args.agent_id)
    finally:
        store.close()
    if not logs:
        raise InvalidInputError(no_logs_message(args.store, args.since, args.agent_id))
    for log in logs:
        for tool in log.candidates:
            selector.add_tool(tool)
    result = evaluate(logs, selector_target(selector))
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    print(
        f"{result.num_logs} logged choices; logging policy earned {result.logged_value:.4f}; "
        f"effective sample size {result.effective_sample_size:.1f}"
    )
    for name, est in (("IPS", result.ips), ("SNIPS", result.snips), ("DR", result.dr)):
        print(f"{name:6s} {est.value:.4f}  95% CI [{est.low:.4f}, {est.high:.4f}]")
    return 0
