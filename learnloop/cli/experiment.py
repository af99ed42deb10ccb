"""``learnloop experiment start|status|stop|rollout``: A/B tests and staged rollouts."""

from __future__ import annotations

import argparse
from typing import Any

from learnloop.cli.options import add_json_flag, add_store_option, format_time, print_json

__all__ = ["add_parser", "render_report"]


def _share(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a share like 0.1 or 10%, got {text!r}"
        ) from None
    return value


def _guardrail(text: str) -> Any:
    """``METRIC[:lower|higher][:MARGIN]``, e.g. ``latency_s:lower:0.2``."""
    from learnloop.experiments import Guardrail

    parts = text.split(":")
    higher, margin = True, 0.0
    for part in parts[1:]:
        if part in ("lower", "higher"):
            higher = part == "higher"
            continue
        try:
            margin = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"cannot read guardrail {text!r}; use METRIC[:lower|higher][:MARGIN], e.g. "
                "latency_s:lower:0.2"
            ) from None
    return Guardrail(metric=parts[0], higher_is_better=higher, margin=margin)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="start, watch, step and stop A/B tests and staged rollouts of registry versions",
        description="A/B tests and staged rollouts of registry versions, with always-valid "
        "sequential tests, guardrails and automatic rollback.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    start = actions.add_parser("start", help="start an A/B test (or --rollout)")
    start.add_argument("name", help="experiment name (unique in the store)")
    start.add_argument("--resource", help="registry resource under test (default: NAME)")
    start.add_argument("--baseline", default="production",
                       help="baseline version or label (default: production)")
    start.add_argument("--candidate", default="candidate",
                       help="candidate version or label (default: candidate)")
    start.add_argument("--split", type=_share, default=0.5,
                       help="candidate traffic share of an A/B test (default 0.5)")
    start.add_argument("--rollout", action="store_true",
                       help="a staged rollout instead of a fixed split")
    start.add_argument("--salt", help="assignment salt (default: random)")
    from learnloop.cli.flags import add_config_flags
    from learnloop.experiments import ExperimentConfig, RolloutPolicy

    tests = start.add_argument_group("tests")
    add_config_flags(tests, ExperimentConfig, prefix="config", exclude=("guardrails",))
    tests.add_argument("--guardrail", type=_guardrail, action="append", default=[],
                       metavar="METRIC[:lower|higher][:MARGIN]",
                       help="a metric that must not get worse, tested one-sided (repeatable)")
    add_config_flags(start.add_argument_group("rollout (with --rollout)"), RolloutPolicy,
                     prefix="rollout")
    start.set_defaults(handler=_start)

    status = actions.add_parser("status", help="metrics and tests of one experiment, or a list")
    status.add_argument("name", nargs="?", help="experiment (omit to list them)")
    status.set_defaults(handler=_status)

    stop = actions.add_parser("stop", help="end an experiment; a winner gets the label")
    stop.add_argument("name")
    stop.add_argument("--winner", choices=("baseline", "candidate"),
                      help="arm to promote (default: none, everyone gets the baseline)")
    stop.add_argument("--reason", help="why (kept with the decision)")
    stop.set_defaults(handler=_stop)

    rollout = actions.add_parser("rollout", help="step a rollout once: advance, hold, roll back")
    rollout.add_argument("name")
    rollout.set_defaults(handler=_rollout)

    for sub in (start, status, stop, rollout):
        add_store_option(sub)
        add_json_flag(sub)


def _open(args: argparse.Namespace) -> Any:
    """The store, which must exist: an experiment compares versions registered in it."""
    from learnloop.store import open_store

    return open_store(args.store, create=False)


def _experiments(store: Any) -> Any:
    from learnloop.experiments import Experiments

    return Experiments(store)


def _start(args: argparse.Namespace) -> int:
    import dataclasses

    from learnloop.cli.flags import config_from_args
    from learnloop.experiments import ExperimentConfig, RolloutPolicy

    config = dataclasses.replace(config_from_args(ExperimentConfig, args, prefix="config"),
                                 guardrails=tuple(args.guardrail))
    with _open(args) as store:
        experiments = _experiments(store)
        if args.rollout:
            policy = config_from_args(RolloutPolicy, args, prefix="rollout")
            experiments.start_rollout(args.name, args.baseline, args.candidate,
                                      resource=args.resource, policy=policy, config=config,
                                      salt=args.salt)
        else:
            experiments.start_ab_test(args.name, args.baseline, args.candidate, args.split,
                                      resource=args.resource, config=config, salt=args.salt)
        report = experiments.status(args.name)
    _print_report(args, report)
    return 0


def _status(args: argparse.Namespace) -> int:
    with _open(args) as store:
        experiments = _experiments(store)
        if args.name is None:
            listed = experiments.list_experiments()
        else:
            report = experiments.status(args.name)
    if args.name is not None:
        _print_report(args, report)
        return 0
    rows = [{"name": e.name, "resource": e.resource, "status": e.status.value,
             "baseline": e.baseline, "candidate": e.candidate, "traffic": e.traffic,
             "kind": "rollout" if e.rollout else "ab", "created_at": e.created_at}
            for e in listed]
    if args.json:
        print_json(rows)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="experiments")
    for column in ("name", "resource", "kind", "status", "baseline", "candidate", "traffic",
                   "started (UTC)"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], r["resource"], r["kind"], r["status"], f"v{r['baseline']}",
                      f"v{r['candidate']}", f"{r['traffic']:.0%}", format_time(r["created_at"]))
    Console().print(table)
    return 0


def _stop(args: argparse.Namespace) -> int:
    with _open(args) as store:
        experiments = _experiments(store)
        experiments.stop_ab_test(args.name, winner=args.winner, reason=args.reason)
        report = experiments.status(args.name)
    _print_report(args, report)
    return 0


def _rollout(args: argparse.Namespace) -> int:
    with _open(args) as store:
        decision = _experiments(store).step_rollout(args.name)
    if args.json:
        print_json(decision.to_dict())
    else:
        print(f"{decision.action.value}: traffic {decision.traffic:.0%} - {decision.reason}")
    return 0


def _print_report(args: argparse.Namespace, report: Any) -> None:
    if args.json:
        print_json(report.to_dict())
        return
    from rich.console import Console

    render_report(report, Console())


def render_report(report: Any, console: Any) -> None:
    """Print an :class:`~learnloop.experiments.ExperimentReport` as rich tables."""
    from rich.table import Table

    from learnloop.experiments import Arm

    e = report.experiment
    kind = "rollout" if e.rollout else "A/B test"
    console.print(f"[bold]{e.name}[/bold] ({kind} of {e.resource}): {e.status.value}, "
                  f"candidate traffic {e.traffic:.0%}"
                  + (f", winner {e.winner.value}" if e.winner else ""))
    arms = Table(title="arms")
    metric_names = sorted({k for arm in report.arms.values() for k in arm.metrics})
    for column in ("arm", "version", "n", *metric_names):
        arms.add_column(column, justify="right")
    for arm in Arm:
        r = report.arms[arm]
        cells = []
        for name in metric_names:
            m = r.metrics.get(name)
            cells.append("-" if m is None else f"{m.mean:.4g} ±{m.variance ** 0.5:.2g}")
        arms.add_row(arm.value, f"v{r.version}", str(r.num_outcomes), *cells)
    console.print(arms)
    tests = Table(title=f"always-valid tests (alpha {e.config.alpha:g})")
    for column in ("metric", "role", "delta", "CI", "p", "p worse", "p better", "verdict"):
        tests.add_column(column, justify="right")
    for role, t in (("primary", report.primary), *(("guardrail", g) for g in report.guardrails)):
        verdict = ("not enough data" if not t.enough_data else "worse" if t.worse
                   else "better" if t.better else "no significant difference")
        tests.add_row(t.metric, role, f"{t.delta:+.4g}", f"[{t.ci_low:+.3g}, {t.ci_high:+.3g}]",
                      f"{t.p_value:.3g}", f"{t.p_worse:.3g}", f"{t.p_better:.3g}", verdict)
    console.print(tests)
    srm = "MISMATCH" if report.srm else "ok"
    console.print(f"sample ratio: p={report.srm_p_value:.3g} ({srm})")
    for d in e.decisions[-5:]:
        repeat = f" x{d.count}" if d.count > 1 else ""
        console.print(f"  {format_time(d.at)} {d.action.value}{repeat} -> {d.traffic:.0%}: "
                      f"{d.reason}", markup=False, highlight=False)
