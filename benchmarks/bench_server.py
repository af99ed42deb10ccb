"""The job server's four bars, each against a real ``learnloop serve`` on loopback.

1. status latency: 1,000 queued + 100 running jobs in the store; 16 concurrent
   clients (keep-alive connections) call ``training.get_status`` on random jobs;
   bar p95 <= 10 ms, p99 <= 25 ms.
2. ingest: ``episodes.record`` in batches over HTTP from 4 clients; bar >= 10,000
   steps/s, and every acknowledged episode is in the store afterwards.
3. crash: 4 PPO jobs running, ``kill -9`` of the server's process group (server
   and workers), restart on the same store: all 4 resume from their checkpoints
   and complete; every acknowledged episode is still there.
4. malformed: 1,000 bad requests (fuzzed bytes, wrong types, huge bodies, bad
   tokens): 1,000 well-formed error answers, the server still answers, the store
   passes ``PRAGMA integrity_check`` with its counts unchanged.

Run: ``python benchmarks/bench_server.py`` (``--quick`` for smaller sizes;
``--only status,ingest`` to pick bars). Needs the ``server`` and ``train`` extras.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from learnloop.jobs import JobStore
from learnloop.server.testing import ServerProcess
from learnloop.store import SqliteStore

TOKEN = "bench-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


class Connection:
    """A keep-alive HTTP/1.1 connection that posts JSON-RPC calls."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.ids = 0

    def post(self, body: bytes, headers: dict[str, str] = HEADERS) -> tuple[int, bytes]:
        self.conn.request("POST", "/rpc", body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def call(self, method: str, **params: Any) -> Any:
        self.ids += 1
        _, raw = self.post(json.dumps({"jsonrpc": "2.0", "method": method, "params": params,
                                            "id": self.ids}).encode())
        answer = json.loads(raw)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# --- 1. status latency ----------------------------------------------------------------


def bench_status(folder: Path, *, requests_per_client: int, clients: int = 16) -> dict[str, Any]:
    store_path = folder / "status.db"
    store = SqliteStore(store_path)
    jobs = JobStore(store)
    config = {"run": {"env": "CartPole-v1", "iterations": 100}, "algo": {}, "policy": {}}
    ids = []
    for i in range(1100):
        job = jobs.create("ppo", config, owner=f"owner-{i % 20}", output_dir=str(folder / "j"),
                          total_iterations=100)
        ids.append(job.id)
        if i >= 1000:  # 100 running, with progress and metrics like a real job's
            jobs.claim(job.id, "bench-worker")
            for it in range(1, 4):
                jobs.record_iteration(job.id, "bench-worker", iteration=it,
                                      metrics={"rollout/episode_return_mean": 20.0 + it,
                                               "train/loss": 0.1}, score=0.1 * it)
    store.close()
    latencies: list[float] = []
    lock = threading.Lock()
    with ServerProcess(store=f"sqlite:///{store_path}", token=TOKEN, jobs_dir=folder / "jobs",
                       log=folder / "status-server.log", args=["--workers", "0"]) as server:
        def client(seed: int) -> None:
            rng = random.Random(seed)
            conn = Connection(server.port)
            conn.call("training.get_status", job_id=ids[0])  # warm the connection
            mine = []
            for _ in range(requests_per_client):
                job_id = rng.choice(ids)
                started = time.perf_counter()
                result = conn.call("training.get_status", job_id=job_id)
                mine.append(time.perf_counter() - started)
                assert result["id"] == job_id
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        began = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - began
    ms = [x * 1000 for x in latencies]
    return {"requests": len(ms), "clients": clients, "p50_ms": percentile(ms, 50),
            "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99), "max_ms": max(ms),
            "mean_ms": statistics.fmean(ms), "requests_per_s": len(ms) / elapsed,
            "bar": "p95 <= 10 ms, p99 <= 25 ms",
            "pass": percentile(ms, 95) <= 10 and percentile(ms, 99) <= 25}


# --- 2. ingest ------------------------------------------------------------------------


def episode_batch(prefix: str, count: int, steps: int) -> bytes:
    episodes = [{
        "id": f"{prefix}-{i}", "task": f"find the config file {i}", "agent_id": "remote-agent",
        "kind": "task", "status": "success", "started_at": 1_700_000_000.0 + i,
        "ended_at": 1_700_000_001.0 + i,
        "steps": [{"index": s, "action": f"call tool_{s % 5}", "tool": f"tool_{s % 5}",
                   "state": {"query": "where is it", "attempt": s}, "result": {"ok": True},
                   "reward": 0.1, "success": True, "duration_s": 0.01}
                  for s in range(steps)],
    } for i in range(count)]
    return json.dumps({"jsonrpc": "2.0", "method": "episodes.record",
                       "params": {"episodes": episodes}, "id": prefix}).encode()


def bench_ingest(folder: Path, *, batches_per_client: int, clients: int = 4,
                 episodes_per_batch: int = 100, steps_per_episode: int = 10) -> dict[str, Any]:
    store_path = folder / "ingest.db"
    acknowledged = 0
    lock = threading.Lock()
    with ServerProcess(store=f"sqlite:///{store_path}", token=TOKEN, jobs_dir=folder / "jobs",
                       log=folder / "ingest-server.log", args=["--workers", "0"]) as server:
        bodies = [[episode_batch(f"c{c}-b{b}", episodes_per_batch, steps_per_episode)
                   for b in range(batches_per_client)] for c in range(clients)]

        def client(c: int) -> None:
            nonlocal acknowledged
            conn = Connection(server.port)
            for body in bodies[c]:
                status, raw = conn.post(body)
                answer = json.loads(raw)
                assert status == 200 and "result" in answer, raw[:300]
                with lock:
                    acknowledged += answer["result"]["steps"]

        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        began = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - began
        server.kill()  # durable when acknowledged: count after a kill -9
    store = SqliteStore(store_path)
    stored = sum(len(e.steps) for e in store.iter_episodes())
    store.close()
    rate = acknowledged / elapsed
    return {"steps_acknowledged": acknowledged, "steps_stored_after_kill_9": stored,
            "seconds": elapsed, "steps_per_s": rate,
            "batch": f"{episodes_per_batch} episodes x {steps_per_episode} steps",
            "clients": clients, "bar": ">= 10,000 steps/s, durable",
            "pass": rate >= 10_000 and stored == acknowledged}


# --- 3. kill -9 during 4 running jobs -------------------------------------------------


def bench_crash(folder: Path, *, iterations: int = 30) -> dict[str, Any]:
    store_url = f"sqlite:///{folder / 'crash.db'}"
    args = ["--workers", "4", "--max-per-owner", "4", "--heartbeat-s", "0.5",
            "--stale-after-s", "3"]
    config = {"run": {"env": "CartPole-v1", "iterations": iterations, "checkpoint_every": 5,
                      "eval_every": 10, "eval_episodes": 4, "record": False},
              "algo": {"num_envs": 4, "num_steps": 64}}
    server = ServerProcess(store=store_url, token=TOKEN, jobs_dir=folder / "jobs",
                           log=folder / "crash-server.log", args=args).start()
    conn = Connection(server.port)
    ids = [conn.call("training.start_ppo", config=config, owner="bench")["job_id"]
           for _ in range(4)]
    acked = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status, raw = conn.post(episode_batch(f"crash-{acked}", 10, 5))
        acked += 10 if status == 200 and "result" in json.loads(raw) else 0
        jobs = [conn.call("training.get_status", job_id=i) for i in ids]
        if all(j["status"] == "running" and j["checkpoints"] for j in jobs):
            break
        time.sleep(0.2)
    before = {j["id"]: (j["iteration"], j["checkpoints"][-1]["iteration"]) for j in jobs}
    server.kill()
    killed_at = time.monotonic()
    server = ServerProcess(store=store_url, token=TOKEN, jobs_dir=folder / "jobs",
                           log=folder / "crash-server.log", args=args).start()
    conn = Connection(server.port)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        jobs = [conn.call("training.get_status", job_id=i) for i in ids]
        if all(j["status"] in ("completed", "failed", "cancelled", "budget_exceeded")
               for j in jobs):
            break
        time.sleep(0.5)
    recovered_s = time.monotonic() - killed_at
    server.stop()
    store = SqliteStore(folder / "crash.db")
    stored = store.count_episodes()
    store.close()
    rows = [{"job": j["id"], "at_kill (iteration, checkpoint)": before[j["id"]],
             "status": j["status"], "attempts": j["attempts"],
             "resumed_from": (j.get("result") or {}).get("summary", {}).get("resumed_from"),
             "iterations": j["iteration"]} for j in jobs]
    ok = all(r["status"] == "completed" and r["attempts"] == 2
             and r["resumed_from"] == r["at_kill (iteration, checkpoint)"][1] for r in rows)
    return {"jobs": rows, "seconds_from_kill_to_all_completed": recovered_s,
            "episodes_acknowledged": acked, "episodes_stored": stored,
            "bar": "all 4 resume from their checkpoints and complete; nothing acked lost",
            "pass": ok and stored == acked}


# --- 4. malformed requests ------------------------------------------------------------


def bench_malformed(folder: Path, *, count: int = 1000) -> dict[str, Any]:
    store_path = folder / "fuzz.db"
    with ServerProcess(store=f"sqlite:///{store_path}", token=TOKEN, jobs_dir=folder / "jobs",
                       log=folder / "fuzz-server.log",
                       args=["--workers", "0", "--max-body-bytes", "1048576"]) as server:
        conn = Connection(server.port)
        conn.post(episode_batch("seed", 20, 3))
        job_id = conn.call("training.start_bandit", config={"decisions": 100,
                                                            "iterations": 2})["job_id"]
        rng = random.Random(0)
        values: list[Any] = [None, True, -1, 2**80, 1e308, "", "x" * 1000, [], {}, [[[]]],
                             {"job_id": None}, {"config": "x"}, {"episodes": [{"id": 1}]}]
        methods = ["training.get_status", "training.start_ppo", "episodes.record",
                   "training.cancel", "registry.get", "experiments.start", "nope", "", 5]
        well_formed = 0
        kinds: dict[str, int] = {}
        odd: list[dict[str, Any]] = []
        began = time.perf_counter()
        for i in range(count):
            kind = ["bytes", "types", "params", "huge", "token", "batch"][i % 6]
            headers = HEADERS
            if kind == "bytes":
                body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
            elif kind == "types":
                body = json.dumps({"jsonrpc": rng.choice(["2.0", "1.0", 2, None]),
                                   "method": rng.choice(methods),
                                   "params": rng.choice(values),
                                   "id": rng.choice([1, None, [], {}, 1.5])}).encode()
            elif kind == "params":
                params = {k: rng.choice(values) for k in rng.sample(
                    ["job_id", "config", "episodes", "limit", "owner", "budget", "name"], 3)}
                body = json.dumps({"jsonrpc": "2.0", "method": rng.choice(methods[:6]),
                                   "params": params, "id": i}).encode()
            elif kind == "huge":
                body = b'{"jsonrpc": "2.0", "method": "episodes.record", "params": {"x": "' + \
                    b"a" * (1_100_000 + rng.randrange(1000)) + b'"}, "id": 1}'
            elif kind == "token":
                body = b'{"jsonrpc": "2.0", "method": "training.list", "id": 1}'
                headers = {"Authorization": rng.choice(["", "Bearer", "Bearer bench-tokem",
                                                        "Basic bench-token", "Bearer " + "x" * 500]),
                           "Content-Type": "application/json"}
            else:
                body = json.dumps([rng.choice(values) for _ in range(rng.randrange(1, 5))]).encode()
            try:
                status, raw = conn.post(body, headers)
            except (http.client.HTTPException, OSError):
                conn = Connection(server.port)  # the server may close after a refused body
                continue
            answers = json.loads(raw)
            items = answers if isinstance(answers, list) else [answers]
            if items and all(isinstance(a, dict) and a.get("jsonrpc") == "2.0" and
                             isinstance(a.get("error", {}).get("code"), int) for a in items):
                well_formed += 1
                kinds[kind] = kinds.get(kind, 0) + 1
            else:
                odd.append({"kind": kind, "status": status, "sent": body[:200].decode(
                    errors="replace"), "answer": raw[:300].decode(errors="replace")})
        elapsed = time.perf_counter() - began
        alive = Connection(server.port).call("training.get_status", job_id=job_id)["id"] == job_id
    db = sqlite3.connect(store_path)
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    episodes = db.execute("SELECT COUNT(*) FROM episodes").fetchone()[0]
    job_docs = db.execute("SELECT COUNT(*) FROM documents WHERE collection = 'jobs'").fetchone()[0]
    db.close()
    return {"requests": count, "well_formed_error_answers": well_formed, "by_kind": kinds,
            "seconds": elapsed, "server_still_answers": alive, "integrity_check": integrity,
            "episodes_in_store": episodes, "jobs_in_store": job_docs, "not_errors": odd[:5],
            "bar": "1,000 well-formed errors, server answering, store intact",
            "pass": well_formed == count and alive and integrity == "ok" and episodes == 20
            and job_docs == 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--only", default="status,ingest,crash,malformed")
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        folder = Path(tmp)
        if "status" in chosen:
            results["status"] = bench_status(folder, requests_per_client=100 if args.quick
                                             else 500)
            print(json.dumps({"status": results["status"]}, indent=1), flush=True)
        if "ingest" in chosen:
            results["ingest"] = bench_ingest(folder, batches_per_client=5 if args.quick else 25)
            print(json.dumps({"ingest": results["ingest"]}, indent=1), flush=True)
        if "crash" in chosen:
            results["crash"] = bench_crash(folder, iterations=15 if args.quick else 30)
            print(json.dumps({"crash": results["crash"]}, indent=1), flush=True)
        if "malformed" in chosen:
            results["malformed"] = bench_malformed(folder)
            print(json.dumps({"malformed": results["malformed"]}, indent=1), flush=True)
    print("summary:", {name: r["pass"] for name, r in results.items()})


if __name__ == "__main__":
    main()
