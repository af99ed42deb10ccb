"""Throughput of one tool-selection policy shared through Redis by many processes.

Starts ``redis-server`` on a free loopback port in a temporary directory (no
persistence), then, for each policy, runs ``--processes`` worker processes that each
apply ``--updates`` rewards through ``ToolSelector.update`` with a
:class:`~learnloop.bandits.redis_state.RedisPolicyState` (one Lua script per
update, run with EVALSHA: one round trip, atomic). Choices are made before the
clock starts, so the figure is updates per second, not decisions. After the run it
checks that nothing was lost: the shared update counter and the per-(context,
tool) counts must add up to exactly processes x updates. Stops the server at the
end.

    .venv/bin/python benchmarks/bench_redis.py                 # 8 processes x 5,000 updates
    .venv/bin/python benchmarks/bench_redis.py --processes 4 --updates 2000 --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

TOOLS = tuple(f"tool_{i}" for i in range(14))
TASKS = (
    "grep the logs for errors",
    "fetch the API status page",
    "run the test suite",
    "read the config file",
    "parse this csv table",
    "find papers about graph neural networks",
    "convert the report to markdown",
    "write the summary to a file",
)


@contextmanager
def redis_server(*, unix_socket: bool = False) -> Iterator[str]:
    """A throw-away redis-server on a free loopback port (and a Unix socket); yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: apt-get install redis-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="learnloop-redis-") as workdir:
        sock = os.path.join(workdir, "redis.sock")
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--unixsocket",
                sock,
                "--unixsocketperm",
                "700",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            import redis

            client = redis.Redis(host="127.0.0.1", port=port)
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.02)
            client.close()
            yield f"unix://{sock}" if unix_socket else f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _worker(
    url: str,
    policy_name: str,
    name: str,
    updates: int,
    seed: int,
    ready: mp.Barrier,
    results: mp.Queue,
) -> None:  # type: ignore[type-arg]
    import numpy as np

    from learnloop.bandits import ToolSelector, make_policy
    from learnloop.bandits.redis_state import RedisPolicyConfig, RedisPolicyState, connect_redis
    from learnloop.bandits.selector import default_featurizer

    featurizer = default_featurizer(policy_name)
    shared = RedisPolicyState(connect_redis(url), RedisPolicyConfig(name=name))
    selector = ToolSelector(
        make_policy(policy_name, dim=featurizer.dim),
        featurizer=featurizer,
        tools=TOOLS,
        seed=seed,
        shared=shared,
    )
    rng = np.random.default_rng(seed)
    choices = [selector.choose(TASKS[i % len(TASKS)]) for i in range(updates)]
    rewards = (rng.random(updates) < 0.5).astype(float).tolist()
    selector.update(choices[0], rewards[0])  # connect and load the scripts before the clock
    ready.wait()
    start, cpu = time.perf_counter(), time.process_time()
    for choice, reward in zip(choices[1:], rewards[1:], strict=True):
        selector.update(choice, reward)
    results.put((start, time.perf_counter(), updates - 1, time.process_time() - cpu))


def run(url: str, policy_name: str, processes: int, updates: int) -> dict[str, float]:
    from learnloop.bandits.redis_state import RedisPolicyConfig, RedisPolicyState, connect_redis

    name = f"bench-{policy_name}"
    shared = RedisPolicyState(connect_redis(url), RedisPolicyConfig(name=name))
    shared.clear()
    ctx = mp.get_context("spawn")
    ready, results = ctx.Barrier(processes), ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(url, policy_name, name, updates, seed, ready, results))
        for seed in range(processes)
    ]
    for w in workers:
        w.start()
    server_cpu = _server_cpu(shared.client)
    spans = [results.get(timeout=600) for _ in workers]
    server_cpu = _server_cpu(shared.client) - server_cpu
    for w in workers:
        w.join(60)
        if w.exitcode != 0:
            raise SystemExit(f"a worker failed with exit code {w.exitcode}")
    timed = sum(span[2] for span in spans)
    wall = max(span[1] for span in spans) - min(span[0] for span in spans)
    client_cpu = sum(span[3] for span in spans)
    expected = processes * updates
    counted = shared.num_updates()
    if policy_name in ("epsilon_greedy", "ucb1", "thompson"):
        per_entry = 0
        for key in shared.client.scan_iter(match=f"{shared.base}:ctx:*"):
            per_entry += sum(
                int(float(v)) for f, v in shared.client.hgetall(key).items() if f.startswith(b"n:")
            )
    else:
        per_entry = counted  # the linear state has no per-entry count; the counter must match
    shared.clear()
    return {
        "updates_per_s": timed / wall,
        "updates": expected,
        "counter": counted,
        "per_entry_counts": per_entry,
        "lost": expected - counted,
        "wall_s": wall,
        "client_cpu_us": 1e6 * client_cpu / timed,
        "server_cpu_us": 1e6 * server_cpu / timed,
        "ceiling_2_cores": 2e6 / (1e6 * (client_cpu + server_cpu) / timed),
    }


def _server_cpu(client: Any) -> float:
    """CPU seconds the server has used (user + system), from INFO."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--updates", type=int, default=5000, help="updates per process")
    parser.add_argument("--policies", nargs="+", default=["epsilon_greedy", "linear_thompson"])
    parser.add_argument(
        "--unix-socket", action="store_true", help="connect over a Unix socket instead of TCP"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out: dict[str, dict[str, float]] = {}
    print(
        f"{args.processes} processes x {args.updates} updates, one shared policy, over "
        f"{'a Unix socket' if args.unix_socket else 'TCP loopback'}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    with redis_server(unix_socket=args.unix_socket) as url:
        for policy in args.policies:
            out[policy] = row = run(url, policy, args.processes, args.updates)
            ok = row["lost"] == 0 and row["per_entry_counts"] == row["updates"]
            print(
                f"{policy:16s} {row['updates_per_s']:9.0f} updates/s   counter {row['counter']:.0f} / "
                f"{row['updates']:.0f}   per-entry counts {row['per_entry_counts']:.0f}   "
                f"{'0 lost' if ok else 'LOST UPDATES'}   CPU per update: clients "
                f"{row['client_cpu_us']:.0f} us + server {row['server_cpu_us']:.0f} us "
                f"(ceiling on 2 idle cores {row['ceiling_2_cores']:.0f}/s)"
            )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        print(json.dumps(out))
    return (
        0
        if all(r["lost"] == 0 and r["per_entry_counts"] == r["updates"] for r in out.values())
        else 1
    )


if __name__ == "__main__":
    raise SystemExit(main())
