"""Recorder → PostgreSQL throughput: one process, many processes, and batch write methods.

Episodes of 10 steps, each step carrying ~1 KB of state (10 fields of ~100
characters; ~12 KB of JSON per episode), as in ``bench_store.py``.

1. **Write methods**: prepared rows written with ``PostgresStore.add_episode_rows`` in
   batches (store cost only), once per ``write_method`` (COPY through a staging table,
   pipelined executemany, one INSERT over unnest arrays).
2. **One process**: episodes recorded through :class:`learnloop.recorder.Recorder`.
3. **N writer processes** (default 8), each with its own Recorder and store, into one
   database at once. A step counts only once its process's ``flush()`` returned
   (committed, durable: ``fsync=on``, ``synchronous_commit=on``). Afterwards the
   stored ids are compared with the ids every process completed: nothing lost,
   nothing duplicated.

Sections 2 and 3 also run the same processes with a store that discards every row,
right before each PostgreSQL run: the recorder's own ceiling on this machine at that
moment (the machine may be shared; compare the two lines, not runs across days).

Without ``--url`` a throw-away server is started (``tests/pg_service.py``) and
stopped at the end. Every section writes into a fresh schema.

Run: ``python benchmarks/bench_postgres.py [--url postgresql://...] [--processes 8]
[--episodes 1000] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pg_service import PostgresServer, drop_schemas, new_schema

from learnloop.episode import Episode, Step
from learnloop.recorder import Recorder
from learnloop.store.postgres import WRITE_METHODS, PostgresStore
from learnloop.store.sqlite import episode_row

WORDS = (
    "search read write file parse json value error status code path user name list "
    "item index count fetch query result table column row token model agent tool"
).split()
STEPS_PER_EPISODE = 10


def make_state(rng: random.Random) -> dict[str, Any]:
    return {f"field_{i}": " ".join(rng.choice(WORDS) for _ in range(16))[:100] for i in range(10)}


def record(recorder: Recorder, num_episodes: int, seed: int, agent: str) -> list[str]:
    """Record ``num_episodes`` episodes; returns their ids."""
    rng = random.Random(seed)
    states = [make_state(rng) for _ in range(64)]
    ids = []
    for e in range(num_episodes):
        eid = recorder.begin(
            f"task {seed}-{e}: {rng.choice(WORDS)} the {rng.choice(WORDS)}", agent_id=agent
        )
        for s in range(STEPS_PER_EPISODE):
            recorder.step(
                eid,
                "call tool",
                tool=rng.choice(WORDS),
                state=states[(e * STEPS_PER_EPISODE + s) % len(states)],
                result={"ok": True, "rows": s},
                reward=1.0,
                success=True,
                duration_s=0.01,
            )
        recorder.complete(eid, status="success" if e % 4 else "failure")
        ids.append(eid)
    return ids


def prepared_rows(num_episodes: int, seed: int) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    states = [make_state(rng) for _ in range(64)]
    rows = []
    for e in range(num_episodes):
        steps = [
            Step.new(s, "call tool", tool=rng.choice(WORDS), state=states[(e * 10 + s) % 64])
            for s in range(STEPS_PER_EPISODE)
        ]
        rows.append(episode_row(Episode.new(f"task {seed}-{e}", steps=steps, status="success")))
    return rows


def bench_write_methods(url: str, num_episodes: int, batch: int, repeats: int) -> None:
    rows = prepared_rows(num_episodes, seed=1)
    body_kb = statistics.mean(len(r[-1]) for r in rows) / 1024
    print(
        f"\n1. write methods: {num_episodes} prepared episodes x {STEPS_PER_EPISODE} steps "
        f"(~{body_kb:.1f} KB JSON each), batches of {batch}, one process, best of {repeats}"
    )
    for method in WRITE_METHODS:
        rates = []
        for _ in range(repeats):
            schema, schema_url = new_schema(url, "bench")
            store = PostgresStore(schema_url, write_method=method)
            started = time.perf_counter()
            for i in range(0, len(rows), batch):
                store.add_episode_rows(rows[i : i + batch])
            elapsed = time.perf_counter() - started
            assert store.count_episodes() == len(rows)
            store.close()
            drop_schemas(url, [schema])
            rates.append(len(rows) / elapsed)
        best = max(rates)
        print(
            f"   {method:<12} {best:8.0f} episodes/s  {best * STEPS_PER_EPISODE:9.0f} steps/s  "
            f"{best * body_kb / 1024:6.1f} MB/s   (runs: {', '.join(f'{r:.0f}' for r in rates)})"
        )


class DiscardingStore:
    """Accepts rows and keeps nothing: the recorder's cost without a store."""

    def add_episode_rows(self, rows: Any) -> None:
        pass

    def add_episodes(self, episodes: Any) -> None:
        pass

    def get_episode(self, episode_id: str) -> Episode:
        raise KeyError(episode_id)

    def close(self) -> None:
        pass


def _writer(url: str | None, num_episodes: int, seed: int, barrier: Any, out: Any) -> None:
    store: Any = PostgresStore(url, max_connections=2) if url else DiscardingStore()
    recorder = Recorder(store)
    barrier.wait()
    started = time.time()
    ids = record(recorder, num_episodes, seed, f"agent-{seed}")
    recorder.flush()  # durable from here on
    finished = time.time()
    recorder.close()
    store.close()
    out.put((started, finished, ids))


def run_writers(url: str | None, num_processes: int, per_process: int) -> list[Any]:
    """Start the writer processes together; returns (started, finished, ids) of each."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(num_processes)
    out = ctx.Queue()
    workers = [
        ctx.Process(target=_writer, args=(url, per_process, seed, barrier, out))
        for seed in range(num_processes)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise SystemExit(f"writer process failed with exit code {worker.exitcode}")
    return results


def bench_discarding(num_processes: int, per_process: int) -> float:
    results = run_writers(None, num_processes, per_process)
    elapsed = max(r[1] for r in results) - min(r[0] for r in results)
    rate = num_processes * per_process * STEPS_PER_EPISODE / elapsed
    print(f"   {num_processes} process(es), rows discarded (no store):   {rate:,.0f} steps/s")
    return rate


def bench_processes(url: str, num_processes: int, per_process: int) -> float:
    bench_discarding(num_processes, per_process)
    schema, schema_url = new_schema(url, "bench")
    PostgresStore(schema_url).close()  # migrate once, before the clock starts
    results = run_writers(schema_url, num_processes, per_process)
    started = min(r[0] for r in results)
    finished = max(r[1] for r in results)
    completed = [i for r in results for i in r[2]]
    store = PostgresStore(schema_url)
    stored_count = store.count_episodes()
    with store._connection() as conn:  # the raw ids, to check for duplicates and losses
        stored_ids = [row[0] for row in conn.execute("SELECT id FROM episodes").fetchall()]
    store.close()
    drop_schemas(url, [schema])
    lost = set(completed) - set(stored_ids)
    duplicated = len(stored_ids) - len(set(stored_ids)) + len(completed) - len(set(completed))
    extra = set(stored_ids) - set(completed)
    steps = len(completed) * STEPS_PER_EPISODE
    rate = steps / (finished - started)
    print(
        f"   {num_processes} process(es) x {per_process} episodes into PostgreSQL: {steps} steps in "
        f"{finished - started:.2f} s = {rate:,.0f} steps/s durable "
        f"({len(completed) / (finished - started):,.0f} episodes/s); stored {stored_count}, "
        f"lost {len(lost)}, duplicated {duplicated}, unexpected {len(extra)}"
    )
    if lost or duplicated or extra or stored_count != len(completed):
        raise SystemExit("FAILED: stored episodes differ from the completed ones")
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing database (default: start a throw-away server)")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=1000, help="episodes per process")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256, help="episodes per batch (section 1)")
    parser.add_argument("--skip-methods", action="store_true")
    args = parser.parse_args(argv)

    server = None
    url = args.url
    if url is None:
        server = PostgresServer.start()
        url = server.create_database("learnloop_bench")
        print(f"throw-away server: {url} (fsync=on, synchronous_commit=on)")
    try:
        if not args.skip_methods:
            bench_write_methods(url, 2000, args.batch, args.repeats)
        print(f"\n2. Recorder, one process ({args.episodes} episodes), best of {args.repeats}")
        single = max(bench_processes(url, 1, args.episodes) for _ in range(args.repeats))
        print(
            f"\n3. Recorder, {args.processes} writer processes ({args.episodes} episodes each), "
            f"best of {args.repeats}"
        )
        many = max(bench_processes(url, args.processes, args.episodes) for _ in range(args.repeats))
        print(
            f"\nsummary: 1 process {single:,.0f} steps/s; {args.processes} processes {many:,.0f} steps/s"
        )
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
