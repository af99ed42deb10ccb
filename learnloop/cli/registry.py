"""``learnloop registry list|show|label|diff|register|history``: versions and labels."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from learnloop.cli.options import add_json_flag, add_store_option, format_time, print_json

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "registry",
        help="list, show, label, diff and register versions of prompts, policies, checkpoints",
        description="Versions of prompts, bandit policies and checkpoints, and their labels.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="list resources with their labels")
    listing.add_argument("--kind", help="only resources of this kind (prompt, policy, checkpoint)")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="show a resource's versions, or one version")
    show.add_argument("name")
    which = show.add_mutually_exclusive_group()
    which.add_argument("--version", help="show this version (3 or v3)")
    which.add_argument("--label", help="show the version this label points at")
    show.set_defaults(handler=_show)

    label = actions.add_parser("label", help="point a label at a version")
    label.add_argument("name")
    label.add_argument("version", help="version number (3, v3) or another label to copy")
    label.add_argument("label")
    label.add_argument("--force", action="store_true", help="move a protected label")
    label.add_argument("--reason", help="why (kept in the label's history)")
    label.set_defaults(handler=_label)

    diff = actions.add_parser("diff", help="unified diff between two versions")
    diff.add_argument("name")
    diff.add_argument("a", help="version number or label")
    diff.add_argument("b", help="version number or label")
    diff.set_defaults(handler=_diff)

    register = actions.add_parser("register", help="register a file as a new version")
    register.add_argument("name")
    register.add_argument("--file", required=True, help="prompt text, JSON policy, or checkpoint")
    register.add_argument(
        "--kind", default="prompt",
        help="prompt (file text), policy (file parsed as JSON), checkpoint (the path itself)",
    )
    register.add_argument("--source", help="what made it (job id, optimizer run)")
    register.add_argument("--author", help="who registered it (default: the OS user)")
    register.add_argument("--candidate", action="store_true", help="also label it 'candidate'")
    register.add_argument("--no-dedupe", action="store_true",
                          help="create a new version even if the content exists")
    register.set_defaults(handler=_register)

    history = actions.add_parser("history", help="label moves: who moved what, when, why")
    history.add_argument("name")
    history.add_argument("--label", help="only this label")
    history.set_defaults(handler=_history)

    for sub in (listing, show, label, diff, register, history):
        add_store_option(sub)
        add_json_flag(sub)


def _registry(store: Any) -> Any:
    from learnloop.registry import Registry

    return Registry(store)


def _open(args: argparse.Namespace, *, create: bool = False) -> Any:
    """The store; only ``register`` may create it (a read of a mistyped path is an error)."""
    from learnloop.store import open_store

    return open_store(args.store, create=create)


def _version_dict(version: Any, *, content: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = version.to_dict()
    if not content:
        data.pop("content")
    return data


def _list(args: argparse.Namespace) -> int:
    with _open(args) as store:
        resources = _registry(store).resources(kind=args.kind)
    if args.json:
        print_json([{"name": r.name, "kind": r.kind, "num_versions": r.num_versions,
                     "labels": dict(r.labels)} for r in resources])
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not resources:
        console.print(f"No resources registered in {store.url}.")
        return 0
    table = Table(title=f"registry ({store.url})")
    for column in ("name", "kind", "versions", "labels"):
        table.add_column(column, overflow="fold")
    for r in resources:
        labels = ", ".join(f"{k}=v{v}" for k, v in sorted(r.labels.items()))
        table.add_row(r.name, r.kind, str(r.num_versions), labels)
    console.print(table)
    return 0


def _show(args: argparse.Namespace) -> int:
    with _open(args) as store:
        registry = _registry(store)
        ref = args.version or args.label
        if ref is None:
            versions = registry.versions(args.name)
            labels = registry.labels(args.name)
            if not versions:
                registry.get_version(args.name, 1)  # raises NotFoundError naming the fix
        else:
            version = registry.get(args.name, ref)
    if ref is not None:
        if args.json:
            print_json(_version_dict(version))
            return 0
        from rich.console import Console

        console = Console()
        console.print(f"[bold]{version.name} v{version.version}[/bold] ({version.kind})  "
                      f"by {version.author}, source {version.source or '-'}, "
                      f"{format_time(version.created_at)} UTC")
        console.print(f"sha256 {version.content_hash}")
        if version.artifact_sha256:
            console.print(f"artifact sha256 {version.artifact_sha256}")
        if version.metadata:
            console.print(f"metadata {json.dumps(dict(version.metadata), sort_keys=True)}")
        text = version.content if isinstance(version.content, str) else json.dumps(
            version.content, indent=2, sort_keys=True)
        console.print(text, markup=False, highlight=False)
        return 0
    if args.json:
        print_json({"name": args.name, "labels": labels,
                    "versions": [_version_dict(v, content=False) for v in versions]})
        return 0
    from rich.console import Console
    from rich.table import Table

    by_version: dict[int, list[str]] = {}
    for name, number in labels.items():
        by_version.setdefault(number, []).append(name)
    table = Table(title=f"{args.name} ({versions[0].kind})")
    for column in ("version", "created (UTC)", "author", "source", "sha256", "labels"):
        table.add_column(column, overflow="fold")
    for v in versions:
        table.add_row(f"v{v.version}", format_time(v.created_at), v.author, v.source or "-",
                      v.content_hash[:12], ", ".join(sorted(by_version.get(v.version, []))))
    Console().print(table)
    return 0


def _label(args: argparse.Namespace) -> int:
    with _open(args) as store:
        label = _registry(store).set_label(
            args.name, args.label, args.version, force=args.force, reason=args.reason
        )
    if args.json:
        print_json({"name": label.name, "label": label.label, "version": label.version})
    else:
        print(f"{label.name}:{label.label} -> v{label.version}")
    return 0


def _diff(args: argparse.Namespace) -> int:
    with _open(args) as store:
        registry = _registry(store)
        diff = registry.diff(args.name, args.a, args.b)
    if args.json:
        print_json({"name": args.name, "a": args.a, "b": args.b, "diff": diff})
    else:
        sys.stdout.write(diff)
    return 0


def _register(args: argparse.Namespace) -> int:
    from learnloop.errors import ConfigError

    content: Any
    try:
        if args.kind == "checkpoint":
            content = args.file
        else:
            with open(args.file, encoding="utf-8") as handle:
                text = handle.read()
            content = json.loads(text) if args.kind == "policy" else text
    except OSError as exc:
        raise ConfigError(
            f"cannot read --file {args.file!r}: {exc.strerror}; check the path"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"--file {args.file!r} is not JSON ({exc}); a policy must be a JSON file, or use "
            "--kind prompt"
        ) from None
    with _open(args, create=True) as store:
        registry = _registry(store)
        if args.candidate:
            version = registry.register_candidate(
                args.name, content, kind=args.kind, source=args.source, author=args.author
            )
        else:
            version = registry.register(args.name, content, kind=args.kind, source=args.source,
                                        author=args.author, dedupe=not args.no_dedupe)
    if args.json:
        print_json(_version_dict(version, content=False))
    else:
        print(f"{version.name} v{version.version} sha256:{version.content_hash[:12]}")
    return 0


def _history(args: argparse.Namespace) -> int:
    with _open(args) as store:
        moves = _registry(store).history(args.name, args.label)
    if args.json:
        print_json([m.to_dict() for m in moves])
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"label moves of {args.name}")
    for column in ("when (UTC)", "label", "from", "to", "by", "forced", "reason"):
        table.add_column(column, overflow="fold")
    for m in moves:
        table.add_row(format_time(m.at), m.label,
                      f"v{m.from_version}" if m.from_version is not None else "-",
                      f"v{m.to_version}", m.actor, "yes" if m.forced else "", m.reason or "")
    Console().print(table)
    return 0
