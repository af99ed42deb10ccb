"""``learnloop serve``: run the JSON-RPC training server (extra ``server``).

Binds 127.0.0.1 by default. Every method needs the bearer token from ``--token``
or ``$LEARNLOOP_SERVER_TOKEN``; ``/healthz``, ``/openrpc.json`` and ``/metrics``
answer without it (``--metrics-auth`` protects ``/metrics`` too). Jobs run in
worker processes, at most ``--workers`` at once; a job whose worker died is
requeued and resumes from its latest checkpoint.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the JSON-RPC server for training jobs, episodes and the registry",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0: any)")
    parser.add_argument("--workers", type=int, default=2,
                        help="jobs run at once by this server (default 2; 0: run none)")
    parser.add_argument("--max-per-owner", type=int, default=2,
                        help="jobs of one owner running at once (default 2)")
    parser.add_argument("--store", metavar="URL",
                        help="store URL (default $LEARNLOOP_STORE, else sqlite:///learnloop.db)")
    parser.add_argument("--token", help="bearer token (default $LEARNLOOP_SERVER_TOKEN)")
    parser.add_argument("--jobs-dir", default="jobs", help="folder of the jobs' outputs")
    parser.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024,
                        help="largest request body accepted (default 16 MiB)")
    parser.add_argument("--owner-monthly-usd", type=float, default=100.0,
                        help="each owner's LLM budget per calendar month (default 100)")
    parser.add_argument("--heartbeat-s", type=float, default=2.0,
                        help="seconds between a running job's heartbeats")
    parser.add_argument("--stale-after-s", type=float, default=30.0,
                        help="requeue a running job silent for this long (its worker died)")
    parser.add_argument("--launcher", choices=("process", "thread", "ray"), default="process",
                        help="run each job in its own process (default), in a thread, or in a "
                        "Ray actor (extra 'ray')")
    parser.add_argument("--ray-address", metavar="ADDRESS",
                        help="with --launcher ray: the cluster to join ('auto': the local "
                        "'ray start'); default: start Ray here")
    parser.add_argument("--metrics-auth", action="store_true",
                        help="require the token on GET /metrics too")
    parser.set_defaults(handler=run)


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~learnloop.server.ServerConfig` the flags describe."""
    from learnloop.jobs import BudgetPolicy, PoolConfig
    from learnloop.server import ServerConfig
    from learnloop.server.client import resolve_token

    pool = PoolConfig(
        max_workers=args.workers, max_per_owner=args.max_per_owner,
        heartbeat_s=args.heartbeat_s, stale_after_s=args.stale_after_s,
        budgets=BudgetPolicy(owner_monthly_usd=args.owner_monthly_usd),
    )
    return ServerConfig(
        host=args.host, port=args.port, token=resolve_token(args.token), store=args.store,
        jobs_dir=args.jobs_dir, max_body_bytes=args.max_body_bytes,
        metrics_require_auth=args.metrics_auth, launcher=args.launcher,
        ray_address=args.ray_address, pool=pool,
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    try:
        import uvicorn
    except ImportError as exc:
        raise ImportError(
            f"'learnloop serve' needs the 'server' extra: pip install 'learnloop[server]' ({exc})"
        ) from exc
    from learnloop.server import create_app

    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, log_level=args.log_level.lower(),
        access_log=False, lifespan="on", timeout_graceful_shutdown=int(
            config.pool.shutdown_grace_s) + 5,
    ))
    server.run()
    return 0
