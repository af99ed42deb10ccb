"""``learnloop jobs start|status|list|cancel|pause|resume|evaluate|export``: a client of
``learnloop serve``.

Connects to ``--server`` (default ``$LEARNLOOP_SERVER_URL``, else
http://127.0.0.1:8765) with the bearer token from ``--token`` or
``$LEARNLOOP_SERVER_TOKEN``. Uses only the standard library.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from learnloop.cli.options import add_json_flag, format_time, print_json

__all__ = ["add_parser"]

_TYPES = ("ppo", "grpo", "bandit", "apo")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "jobs", help="start, watch, pause, resume, cancel, evaluate and export training jobs",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="queue a job")
    start.add_argument("type", choices=_TYPES)
    start.add_argument("--config", metavar="FILE_OR_JSON",
                       help="the runner's config: a JSON file or inline JSON object")
    start.add_argument("--owner", default="default", help="owner (budgets are per owner)")
    start.add_argument("--max-cost-usd", type=float, help="job budget in dollars")
    start.add_argument("--max-wall-s", type=float, help="job budget in seconds of wall time")
    start.add_argument("--max-rollouts", type=int, help="job budget in episodes")
    start.set_defaults(handler=_start)
    status = actions.add_parser("status", help="one job's status")
    status.add_argument("job_id")
    status.add_argument("--metrics", type=int, default=0, help="include the latest N metrics rows")
    status.set_defaults(handler=_status)
    listing = actions.add_parser("list", help="list jobs")
    listing.add_argument("--status", help="only jobs with this status")
    listing.add_argument("--owner", help="only this owner's jobs")
    listing.add_argument("--type", choices=_TYPES, help="only jobs of this type")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (<= 1000)")
    listing.set_defaults(handler=_list)
    for name, help_text in (("cancel", "cancel a job (what was saved is kept)"),
                            ("pause", "pause a job after its next checkpoint"),
                            ("resume", "resume a paused job from its latest checkpoint")):
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument("job_id")
        sub.set_defaults(handler=_control, method=f"training.{name}")
    evaluate = actions.add_parser("evaluate", help="evaluate a job's best or latest checkpoint")
    evaluate.add_argument("job_id")
    evaluate.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    evaluate.set_defaults(handler=_evaluate)
    export = actions.add_parser("export", help="a job's episodes as JSONL")
    export.add_argument("job_id", nargs="?", help="the job (omit to export every episode)")
    export.add_argument("--output", "-o", default="-", help="file to write (default stdout)")
    export.add_argument("--page-size", type=int, default=500, help="episodes per request")
    export.set_defaults(handler=_export)
    for sub in (start, status, listing, evaluate, export, *[
            actions.choices[n] for n in ("cancel", "pause", "resume")]):
        sub.add_argument("--server", metavar="URL",
                         help="server URL (default $LEARNLOOP_SERVER_URL, else "
                         "http://127.0.0.1:8765)")
        sub.add_argument("--token", help="bearer token (default $LEARNLOOP_SERVER_TOKEN)")
        add_json_flag(sub)


def _client(args: argparse.Namespace) -> Any:
    from learnloop.server.client import RpcClient

    return RpcClient(args.server, token=args.token)


def _read_config(text: str | None) -> dict[str, Any]:
    from learnloop.errors import ConfigError

    if not text:
        return {}
    source = text
    if not text.lstrip().startswith("{"):
        try:
            with open(text, encoding="utf-8") as handle:
                source = handle.read()
        except OSError as exc:
            raise ConfigError(f"cannot read --config {text!r}: {exc}") from None
    try:
        config = json.loads(source)
    except ValueError as exc:
        raise ConfigError(f"--config is not valid JSON ({exc}); pass a JSON object") from None
    if not isinstance(config, dict):
        raise ConfigError(f"--config must be a JSON object, got {type(config).__name__}")
    return config


def _show(args: argparse.Namespace, result: Any, text: str) -> int:
    if args.json:
        print_json(result)
    else:
        print(text)
    return 0


def _start(args: argparse.Namespace) -> int:
    budget = {k: v for k, v in (("max_cost_usd", args.max_cost_usd),
                                ("max_wall_s", args.max_wall_s),
                                ("max_rollouts", args.max_rollouts)) if v is not None}
    params: dict[str, Any] = {"config": _read_config(args.config), "owner": args.owner}
    if budget:
        params["budget"] = budget
    result = _client(args).call(f"training.start_{args.type}", **params)
    return _show(args, result, f"queued {args.type} job {result['job_id']}")


def _status(args: argparse.Namespace) -> int:
    job = _client(args).call("training.get_status", job_id=args.job_id,
                             metrics_limit=args.metrics)
    progress = f"{job['iteration']}/{job['total_iterations'] or '?'}"
    lines = [f"{job['id']} ({job['type']}, owner {job['owner']}): {job['status']}"
             + (f" [{job['requested']} requested]" if job.get("requested") else ""),
             f"  iteration {progress}, best score {job['best_score']}, spend "
             f"${job['spend']['cost_usd']:.4f} / {job['spend']['wall_s']:.1f} s / "
             f"{job['spend']['rollouts']} rollouts"]
    if job.get("status_reason"):
        lines.append(f"  reason: {job['status_reason']}")
    if job.get("error"):
        lines.append(f"  error: {job['error']['message']}")
    if job.get("checkpoints"):
        lines.append(f"  latest checkpoint: {job['checkpoints'][-1]['path']}")
    return _show(args, job, "\n".join(lines))


def _list(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("status", args.status), ("owner", args.owner),
                                ("type", args.type)) if v is not None}
    result = _client(args).call("training.list", limit=args.limit, **params)
    rows = [f"{j['job_id']}  {j['type']:<6} {j['status']:<15} {j['iteration']:>5}/"
            f"{j['total_iterations'] or '?':<5} {j['owner']:<12} {format_time(j['created_at'])}"
            for j in result["jobs"]]
    return _show(args, result, "\n".join(rows) if rows else "no jobs")


def _control(args: argparse.Namespace) -> int:
    result = _client(args).call(args.method, job_id=args.job_id)
    return _show(args, result, f"{result['job_id']}: {result['status']} ({result['message']})")


def _evaluate(args: argparse.Namespace) -> int:
    result = _client(args).call("training.evaluate", job_id=args.job_id,
                                checkpoint=args.checkpoint)
    return _show(args, result, f"{args.job_id} @ iteration {result['iteration']} "
                 f"({result['which']}): score {result['score']:.4f}")


def _export(args: argparse.Namespace) -> int:
    client = _client(args)
    kwargs: dict[str, Any] = {"page_size": args.page_size}
    if args.job_id:
        kwargs["job_id"] = args.job_id
    else:
        kwargs["filter"] = {}
    if args.output == "-":
        count = client.export(sys.stdout, **kwargs)
    else:
        with open(args.output, "w", encoding="utf-8") as handle:
            count = client.export(handle, **kwargs)
        print(f"wrote {count} episodes to {args.output}", file=sys.stderr)
    return 0
