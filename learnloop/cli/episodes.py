"""``learnloop episodes list|show|export|import|stats``: look into the store."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from learnloop.cli.options import (
    add_json_flag,
    add_store_option,
    count,
    format_time,
    parse_time,
    print_json,
)

__all__ = ["add_parser"]

_STATUSES = ("in_progress", "success", "failure", "aborted", "timeout", "evicted")


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", help="only episodes of this agent id")
    parser.add_argument("--kind", help="only episodes of this kind (task, subtask, rollout...)")
    parser.add_argument(
        "--status", action="append", choices=_STATUSES, help="only this status (repeatable)"
    )
    parser.add_argument("--task-contains", metavar="TEXT", help="only tasks containing TEXT")
    parser.add_argument(
        "--since", type=parse_time, help="started at or after (6h, 2026-11-20, epoch)"
    )
    parser.add_argument("--until", type=parse_time, help="started before this time")
    parser.add_argument("--parent", metavar="ID", help="only the direct children of episode ID")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "episodes",
        help="list, show, export, import and count recorded episodes",
        description="Look into the episodes in the store.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="list episodes, newest first")
    add_store_option(listing)
    add_json_flag(listing)
    _add_filters(listing)
    listing.add_argument("--limit", type=count, default=20, help="how many (default 20)")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="show one episode with its steps")
    add_store_option(show)
    add_json_flag(show)
    show.add_argument("episode_id", metavar="ID")
    show.add_argument("--tree", action="store_true", help="also list its sub-episodes, recursively")
    show.set_defaults(handler=_show)

    export = actions.add_parser("export", help="write episodes as JSONL (one per line)")
    add_store_option(export)
    _add_filters(export)
    export.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    export.add_argument("--limit", type=count, help="at most this many")
    export.set_defaults(handler=_export)

    importing = actions.add_parser("import", help="add episodes from a JSONL file (all or nothing)")
    add_store_option(importing)
    add_json_flag(importing)
    importing.add_argument("file", help="JSONL file, or - for stdin")
    importing.set_defaults(handler=_import)

    stats = actions.add_parser("stats", help="counts and rewards by status and agent")
    add_store_option(stats)
    add_json_flag(stats)
    _add_filters(stats)
    stats.set_defaults(handler=_stats)


def _query(args: argparse.Namespace, **extra: Any) -> Any:
    from learnloop.store import EpisodeQuery

    return EpisodeQuery(
        agent_id=args.agent,
        kind=args.kind,
        statuses=tuple(args.status) if args.status else None,
        task_contains=args.task_contains,
        started_after=args.since,
        started_before=args.until,
        parent_id=args.parent,
        **extra,
    )


def _open(args: argparse.Namespace, *, create: bool = False) -> Any:
    """The store; reading commands refuse a SQLite file that does not exist."""
    from learnloop.store import open_store

    return open_store(args.store, create=create)


def _summary(episode: Any) -> dict[str, Any]:
    return {
        "id": episode.id,
        "task": episode.task,
        "agent_id": episode.agent_id,
        "kind": episode.kind,
        "status": episode.status.value,
        "total_reward": episode.total_reward,
        "num_steps": len(episode.steps),
        "started_at": episode.started_at,
        "duration_s": episode.duration,
        "parent_id": episode.parent_id,
    }


def _list(args: argparse.Namespace) -> int:
    with _open(args) as store:
        episodes = store.query_episodes(_query(args, limit=args.limit, newest_first=True))
        total = store.count_episodes(_query(args))
    if args.json:
        print_json({"total": total, "episodes": [_summary(e) for e in episodes]})
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not episodes:
        console.print(f"No episodes in {store.url} match.")
        return 0
    table = Table(title=f"{len(episodes)} of {total} episodes ({store.url})")
    for column in ("id", "started (UTC)", "agent", "status", "steps", "reward", "task"):
        table.add_column(column, overflow="fold")
    for e in episodes:
        table.add_row(
            e.id[:12],
            format_time(e.started_at),
            e.agent_id,
            e.status.value,
            str(len(e.steps)),
            f"{e.total_reward:.3g}",
            e.task[:60],
        )
    console.print(table)
    return 0


def _tree(store: Any, episode_id: str, depth: int = 0) -> list[tuple[int, Any]]:
    rows = []
    for child in store.children(episode_id) if hasattr(store, "children") else []:
        rows.append((depth, child))
        if depth < 20:
            rows.extend(_tree(store, child.id, depth + 1))
    return rows


def _show(args: argparse.Namespace) -> int:
    with _open(args) as store:
        episode = store.get_episode(args.episode_id)
        tree = _tree(store, episode.id) if args.tree else []
    if args.json:
        data = episode.to_dict()
        if args.tree:
            data["children"] = [{"depth": d, **_summary(c)} for d, c in tree]
        print_json(data)
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{episode.id}[/bold]  {episode.status.value}  agent={episode.agent_id}")
    console.print(f"task: {episode.task}")
    if episode.parent_id:
        console.print(f"parent: {episode.parent_id}")
    console.print(
        f"started {format_time(episode.started_at)}, duration "
        f"{episode.duration if episode.duration is not None else '-'} s, total reward "
        f"{episode.total_reward:.4g}"
    )
    if episode.status_reason:
        console.print(f"reason: {episode.status_reason}")
    if episode.outcome is not None:
        console.print(f"outcome: {dict(episode.outcome)}")
    table = Table(title="steps and observations")
    for column in ("#", "action / source", "tool", "ok", "reward", "result / content"):
        table.add_column(column, overflow="fold")
    items = sorted([*episode.steps, *episode.observations], key=lambda item: item.index)
    for item in items:
        if hasattr(item, "action"):
            table.add_row(
                str(item.index),
                item.action,
                item.tool or "",
                "" if item.success is None else ("yes" if item.success else "no"),
                f"{item.reward:.3g}",
                str(item.result if item.error is None else item.error)[:80],
            )
        else:
            table.add_row(str(item.index), f"[{item.source}]", "", "", "", str(item.content)[:80])
    console.print(table)
    for depth, child in tree:
        console.print(
            f"{'  ' * (depth + 1)}└ {child.id[:12]} {child.status.value} {child.task[:60]}"
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    from learnloop.store.jsonl import export_jsonl

    with _open(args) as store:
        query = _query(args, limit=args.limit)
        if args.output == "-":
            count = export_jsonl(store, sys.stdout, query)
        else:
            with open(args.output, "w", encoding="utf-8") as out:
                count = export_jsonl(store, out, query)
    sys.stderr.write(f"exported {count} episodes\n")
    return 0


def _import(args: argparse.Namespace) -> int:
    from learnloop.store.jsonl import import_jsonl

    with _open(args, create=True) as store:
        if args.file == "-":
            count = import_jsonl(store, sys.stdin)
        else:
            try:
                source = open(args.file, encoding="utf-8")
            except OSError as exc:
                sys.stderr.write(f"learnloop: error: cannot read {args.file!r}: {exc.strerror}\n")
                return 1
            with source:
                count = import_jsonl(store, source)
    if args.json:
        print_json({"imported": count})
    else:
        print(f"imported {count} episodes")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from collections import defaultdict

    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    steps = 0
    with _open(args) as store:
        for episode in store.iter_episodes(_query(args)):
            groups[(episode.agent_id, episode.status.value)].append(episode.total_reward)
            steps += len(episode.steps)
    rows: list[dict[str, Any]] = [
        {
            "agent_id": agent,
            "status": status,
            "episodes": len(rewards),
            "mean_reward": sum(rewards) / len(rewards),
        }
        for (agent, status), rewards in sorted(groups.items())
    ]
    total = sum(r["episodes"] for r in rows)
    if args.json:
        print_json({"episodes": total, "steps": steps, "groups": rows})
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{total} episodes, {steps} steps")
    for column in ("agent", "status", "episodes", "mean reward"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["agent_id"], row["status"], str(row["episodes"]), f"{row['mean_reward']:.3g}"
        )
    Console().print(table)
    return 0
