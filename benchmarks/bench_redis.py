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
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

TOOLS = tuple(f"tool_{i}" for i in range(14))
TASKS = (
    "grep the logs for errors", "fetch the API status page", "run the test suite",
    "read the config file", "parse this csv table", "find papers about graph neural networks",
    "convert the report to markdown", "write the summary to a file",
)


@contextmanager
def redis_server() -> Iterator[str]:
    """A throw-away redis-server on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: apt-get install redis-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="learnloop-redis-") as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _worker(url: str, policy_name: str, name: str, updates: int, seed: int,
            ready: mp.Barrier, results: mp.Queue) -> None:  # type: ignore[type-arg]
    import numpy as np

    from learnloop.bandits import ToolSelector, make_policy
    from learnloop.bandits.redis_state import RedisPolicyConfig, RedisPolicyState, connect_redis
    from learnloop.bandits.selector import default_featurizer

    featurizer = default_featurizer(policy_name)
    shared = RedisPolicyState(connect_redis(url), RedisPolicyConfig(name=name))
    selector = ToolSelector(make_policy(policy_name, dim=featurizer.dim), featurizer=featurizer,
                            tools=TOOLS, seed=seed, shared=shared)
    rng = np.random.default_rng(seed)
    choices = [selector.choose(TASKS[i % len(TASKS)]) for i in range(updates)]
    rewards = (rng.random(updates) < 0.5).astype(float).tolist()
    selector.update(choices[0], rewards[0])  # connect and load the scripts before the clock
    ready.wait()
    start = time.perf_counter()
    for choice, reward in zip(choices[1:], rewards[1:], strict=True):
        selector.update(choice, reward)
    results.put((start, time.perf_counter(), updates - 1))


def run(url: str, policy_name: str, processes: int, updates: int) -> dict[str, float]:
    from learnloop.bandits.redis_state import RedisPolicyConfig, RedisPolicyState, connect_redis

    name = f"bench-{policy_name}"
    shared = RedisPolicyState(connect_redis(url), RedisPolicyConfig(name=name))
    shared.clear()
    ctx = mp.get_context("spawn")
    ready, results = ctx.Barrier(processes), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(url, policy_name, name, updates, seed, ready, results))
               for seed in range(processes)]
    for w in workers:
        w.start()
    spans = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join(60)
        if w.exitcode != 0:
            raise SystemExit(f"a worker failed with exit code {w.exitcode}")
    timed = sum(n for _, _, n in spans)
    wall = max(end for _, end, _ in spans) - min(start for start, _, _ in spans)
    expected = processes * updates
    counted = shared.num_updates()
    if policy_name in ("epsilon_greedy", "ucb1", "thompson"):
        per_entry = 0
        for key in shared.client.scan_iter(match=f"{shared.base}:ctx:*"):
            per_entry += sum(int(float(v)) for f, v in shared.client.hgetall(key).items()
                             if f.startswith(b"n:"))
    else:
        per_entry = counted  # the linear state has no per-entry count; the counter must match
    shared.clear()
    return {"updates_per_s": timed / wall, "updates": expected, "counter": counted,
            "per_entry_counts": per_entry, "lost": expected - counted, "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--updates", type=int, default=5000, help="updates per process")
    parser.add_argument("--policies", nargs="+", default=["epsilon_greedy", "linear_thompson"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out: dict[str, dict[str, float]] = {}
    print(f"{args.processes} processes x {args.updates} updates, one shared policy, "
          f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    with redis_server() as url:
        for policy in args.policies:
            out[policy] = row = run(url, policy, args.processes, args.updates)
            ok = row["lost"] == 0 and row["per_entry_counts"] == row["updates"]
            print(f"{policy:16s} {row['updates_per_s']:9.0f} updates/s   counter {row['counter']:.0f} / "
                  f"{row['updates']:.0f}   per-entry counts {row['per_entry_counts']:.0f}   "
                  f"{'0 lost' if ok else 'LOST UPDATES'}")
    if args.json:
        print(json.dumps(out))
    return 0 if all(r["lost"] == 0 and r["per_entry_counts"] == r["updates"] for r in out.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
