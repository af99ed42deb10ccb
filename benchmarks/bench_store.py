"""Recorder → SQLite throughput and store query latency.

Episodes of 10 steps, each step carrying ~1 KB of state (10 fields of ~100
characters), recorded through :class:`learnloop.recorder.Recorder` into a fresh
SQLite store. A step counts only once ``flush()`` has returned, i.e. once it is
durable. Redaction and bounds are on, as by default.

Peer, same run and same data shape: OpenTelemetry's SDK recording one span per
step with the same attributes into its in-memory exporter (not durable), if
``opentelemetry-sdk`` is installed.

``--breakdown`` also prints where the time goes, one thread: the recorder alone
(a store that keeps nothing) with and without redaction, on this data and on
"busy" data whose every value holds what the redaction prefilter must look at
closer (``:``, ``-``, ``_``, ``=``, capitals: URLs, snake_case, key=value), and
SQLite alone (the same prepared rows written by the store, in the recorder's
batches).

Run: ``python benchmarks/bench_store.py [--episodes 4000] [--repeats 3] [--breakdown]``
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from learnloop.recorder import Recorder, RecorderConfig
from learnloop.store import EpisodeQuery, SqliteStore

WORDS = (
    "search read write file parse json value error status code path user name list "
    "item index count fetch query result table column row token model agent tool"
).split()


BUSY_WORDS = (
    "https://api.example.com/v1/items?page=2 file_path=/tmp/x-1 Status: OK user_id=42 "
    "Content-Type: application/json X-Request-Id: 3f2a-9b Total_Count=7 AWS_REGION=eu-west-1"
).split()


def make_state(rng: random.Random, words: Sequence[str] = WORDS) -> dict[str, Any]:
    return {f"field_{i}": " ".join(rng.choice(words) for _ in range(16))[:100] for i in range(10)}


def record(
    recorder: Recorder, num_episodes: int, seed: int, agent: str, words: Sequence[str] = WORDS
) -> None:
    rng = random.Random(seed)
    states = [make_state(rng, words) for _ in range(64)]
    for e in range(num_episodes):
        eid = recorder.begin(
            f"task {seed}-{e}: {rng.choice(WORDS)} the {rng.choice(WORDS)}", agent_id=agent
        )
        for s in range(10):
            recorder.step(
                eid,
                "call tool",
                tool=rng.choice(WORDS),
                state=states[(e * 10 + s) % len(states)],
                result={"ok": True, "rows": s},
                reward=1.0,
                success=True,
                duration_s=0.01,
            )
        recorder.complete(eid, status="success" if e % 4 else "failure")


def throughput(num_episodes: int, num_threads: int) -> tuple[float, Path]:
    folder = Path(tempfile.mkdtemp())
    store = SqliteStore(folder / "bench.db")
    recorder = Recorder(store, RecorderConfig(max_open_episodes=10_000))
    per_thread = num_episodes // num_threads
    started = time.perf_counter()
    threads = [
        threading.Thread(target=record, args=(recorder, per_thread, t, f"agent-{t}"))
        for t in range(num_threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.flush()
    elapsed = time.perf_counter() - started
    recorder.close()
    stored = store.count_episodes()
    assert stored == per_thread * num_threads, (stored, per_thread * num_threads)
    store.close()
    return per_thread * num_threads * 10 / elapsed, folder / "bench.db"


class _KeepNothing:
    """A store that keeps nothing: what is left is the recorder's own cost."""

    def add_episode_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        pass


def recorder_alone_us_per_step(num_episodes: int, *, redact: bool, busy: bool) -> float:
    recorder = Recorder(
        _KeepNothing(), RecorderConfig(max_open_episodes=10_000, redact_secrets=redact)
    )
    started = time.perf_counter()
    record(recorder, num_episodes, 0, "agent-0", BUSY_WORDS if busy else WORDS)
    recorder.flush()
    elapsed = time.perf_counter() - started
    recorder.close()
    return elapsed / (num_episodes * 10) * 1e6


def sqlite_alone_us_per_step(num_episodes: int) -> float:
    """The rows the recorder would write, written by the store alone."""
    rows: list[tuple[Any, ...]] = []

    class Keep:
        def add_episode_rows(self, batch: Sequence[tuple[Any, ...]]) -> None:
            rows.extend(batch)

    recorder = Recorder(Keep(), RecorderConfig(max_open_episodes=10_000))
    record(recorder, num_episodes, 0, "agent-0")
    recorder.close()
    store = SqliteStore(Path(tempfile.mkdtemp()) / "alone.db")
    batch = RecorderConfig().batch_size
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        store.add_episode_rows(rows[start : start + batch])
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed / (num_episodes * 10) * 1e6


def print_breakdown(num_episodes: int, repeats: int) -> None:
    def best(measure: Any, **kwargs: Any) -> float:
        return min(measure(num_episodes, **kwargs) for _ in range(repeats))

    for busy in (False, True):
        data = "busy data" if busy else "this data"
        with_redaction = best(recorder_alone_us_per_step, redact=True, busy=busy)
        without = best(recorder_alone_us_per_step, redact=False, busy=busy)
        print(
            f"recorder alone, 1 thread, {data}: {with_redaction:.2f} us/step with redaction, "
            f"{without:.2f} without (best of {repeats})"
        )
    print(
        f"sqlite alone (the same rows, batches of {RecorderConfig().batch_size}): "
        f"{best(sqlite_alone_us_per_step):.2f} us/step"
    )


def otel_throughput(num_episodes: int) -> float | None:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    rng = random.Random(0)
    states = [make_state(rng) for _ in range(64)]
    started = time.perf_counter()
    for e in range(num_episodes):
        with tracer.start_as_current_span(f"task {e}"):
            for s in range(10):
                with tracer.start_as_current_span("call tool") as span:
                    span.set_attributes(states[(e * 10 + s) % len(states)])
                    span.set_attribute("reward", 1.0)
    elapsed = time.perf_counter() - started
    assert len(exporter.get_finished_spans()) == num_episodes * 11
    return num_episodes * 10 / elapsed


def query_latency(path: Path) -> dict[str, float]:
    store = SqliteStore(path)
    ids = [e.id for e in store.query_episodes(EpisodeQuery(limit=500))]
    timings_get, timings_page = [], []
    for i in range(300):
        t = time.perf_counter()
        store.get_episode(ids[i % len(ids)])
        timings_get.append(time.perf_counter() - t)
    query = EpisodeQuery(agent_id="agent-0", statuses=("failure",), limit=50, newest_first=True)  # type: ignore[arg-type]
    for _ in range(50):
        t = time.perf_counter()
        page = store.query_episodes(query)
        timings_page.append(time.perf_counter() - t)
    assert page
    store.close()
    return {
        "get_median_ms": statistics.median(timings_get) * 1e3,
        "page50_median_ms": statistics.median(timings_page) * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true", help="also print where the time goes")
    args = parser.parse_args()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {args.episodes} episodes x 10 steps, ~1 KB state/step"
    )
    results: dict[str, list[float]] = {"1 thread": [], "4 threads": []}
    db = None
    for _ in range(args.repeats):
        rate, db = throughput(args.episodes, 1)
        results["1 thread"].append(rate)
        rate, _ = throughput(args.episodes, 4)
        results["4 threads"].append(rate)
    for name, rates in results.items():
        print(
            f"recorder -> sqlite, {name:9s}: median {statistics.median(rates):>9,.0f} steps/s durable  (runs: {', '.join(f'{r:,.0f}' for r in rates)})"
        )
    peer = otel_throughput(args.episodes)
    if peer is None:
        print("peer (opentelemetry-sdk in-memory spans): not installed, skipped")
    else:
        ours = statistics.median(results["1 thread"])
        print(
            f"peer: opentelemetry-sdk, in-memory exporter: {peer:>9,.0f} spans/s (not durable); learnloop/peer = {ours / peer:.1f}x"
        )
    assert db is not None
    latency = query_latency(db)
    print(
        f"get by id: median {latency['get_median_ms']:.3f} ms; filtered page of 50 (agent+status, newest first): median {latency['page50_median_ms']:.2f} ms"
    )
    if args.breakdown:
        print_breakdown(args.episodes, args.repeats)
    with open("/proc/loadavg") as loadavg:  # the machine is shared: say how busy it was
        print(f"load average after the run: {loadavg.read().split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
