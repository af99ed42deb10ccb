"""A group of agent attempts through the policy endpoint: 8 at once against 1.

The suite's LLM agent (:class:`OpenAISuiteAgent`, the official ``openai`` SDK)
attempts a train task through ``learnloop serve-policy``'s endpoint, each attempt
in its own episode (header ``X-Learnloop-Episode``), as a GRPO group would be
collected from an agent that knows nothing of the training. Repetition k runs
task k once alone, then 8 times at once from 8 threads, with the endpoint
batching concurrent calls (``max_batch=16`` and a 20 ms window, the defaults)
and, for comparison, serving them one by one (``max_batch=1``); the three are
interleaved so that all see the same machine load. Every call is captured in
the store, as in training.

The trainer's own collector (``SuiteChat.run``, what ``learnloop train grpo
--policy lm`` runs) is timed the same way: one attempt against a group of 8 at
the same task, generated as one batch (``--no-in-process`` skips it).

    .venv/bin/python benchmarks/bench_endpoint.py --model tiny
    .venv/bin/python benchmarks/bench_endpoint.py --model smollm2 --repeats 10 --json

Prints medians of the wall time per repetition, the ratios 8-at-once / 1, and
how many calls each generated batch held.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learnloop.envs.suite import SuiteConfig, ToolUseSuite
from learnloop.recorder import Recorder
from learnloop.store import open_store
from learnloop.train.lm.config import LMConfig
from learnloop.train.lm.endpoint import EPISODE_HEADER, PolicyServer, PolicyService
from learnloop.train.lm.model import load_language_model
from learnloop.train.lm.openai_agent import OpenAISuiteAgent, report_reward


def _loadavg() -> str:
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])


def run(args: argparse.Namespace) -> dict[str, Any]:
    import openai

    torch.set_num_threads(args.threads)
    suite = ToolUseSuite(SuiteConfig(seed=0))
    tasks = suite.train_tasks
    lm = load_language_model(LMConfig(model=args.model, lora=False))
    folder = Path(tempfile.mkdtemp(prefix="bench-endpoint-"))
    store = open_store(f"sqlite:///{folder / 'episodes.db'}")
    recorder = Recorder(store)
    service = PolicyService(
        lm, recorder=recorder, model_name="policy", batch_window_s=args.batch_window_ms / 1000
    )
    agent = OpenAISuiteAgent(suite, constrained=not args.free, max_tokens=args.max_tokens)
    times: dict[str, list[float]] = {"one": [], "eight_batched": [], "eight_one_by_one": []}
    calls: dict[str, list[int]] = {key: [] for key in times}
    with PolicyServer(service) as server, ThreadPoolExecutor(8) as pool:
        root = server.base_url[: -len("/v1")]
        base = openai.OpenAI(base_url=server.base_url, api_key="-", max_retries=0)
        clients = [base.with_options(timeout=600) for _ in range(8)]
        counter = iter(range(10**9))

        def attempt(slot: int, k: int) -> int:
            episode_id = f"ep-{next(counter)}"
            client = clients[slot].with_options(default_headers={EPISODE_HEADER: episode_id})
            rng = np.random.default_rng(k * 8 + slot)
            result = agent.attempt(client, tasks[k % len(tasks)], rng)
            report_reward(root, episode_id, 1.0 if result.success else 0.0)
            return len(result.tools)

        def timed(key: str, width: int, max_batch: int, k: int) -> None:
            service.max_batch = max_batch
            started = time.perf_counter()
            lengths = list(pool.map(lambda slot: attempt(slot, k), range(width)))
            times[key].append(time.perf_counter() - started)
            calls[key].append(sum(lengths))

        for k in range(args.warmup):
            timed("one", 1, 16, k)
        for key in times:
            times[key].clear()
            calls[key].clear()
        service.batch_sizes.clear()
        for k in range(args.repeats):
            timed("one", 1, 16, k)
            timed("eight_batched", 8, 16, k)
            timed("eight_one_by_one", 8, 1, k)
            print(
                f"repetition {k}: "
                + ", ".join(f"{key} {values[-1]:.3f} s" for key, values in times.items())
                + f" (load {_loadavg()})",
                file=sys.stderr,
                flush=True,
            )
    in_process = _in_process(lm, suite, args) if args.in_process else {}
    recorder.close()
    stored = store.count_episodes() if hasattr(store, "count_episodes") else None
    store.close()
    median = {key: statistics.median(values) for key, values in times.items()}
    return {
        "model": args.model,
        "threads": args.threads,
        "constrained": not args.free,
        "batch_window_ms": args.batch_window_ms,
        "repeats": args.repeats,
        **{f"{key}_s_median": value for key, value in median.items()},
        "ratio_eight_batched_over_one": median["eight_batched"] / median["one"],
        "ratio_eight_one_by_one_over_one": median["eight_one_by_one"] / median["one"],
        "calls_per_repetition_mean": {key: float(np.mean(values)) for key, values in calls.items()},
        "batch_sizes": dict(sorted(service.batch_sizes.items())),
        "episodes_stored": stored,
        **in_process,
        "loadavg_end": _loadavg(),
    }


def _in_process(lm: Any, suite: ToolUseSuite, args: argparse.Namespace) -> dict[str, Any]:
    """``SuiteChat.run`` on 1 attempt and on a group of 8 at the same task, interleaved."""
    from learnloop.train.lm.config import SamplingConfig
    from learnloop.train.lm.conversation import SuiteChat

    chat = SuiteChat(suite, lm, constrained=not args.free)
    sampling = SamplingConfig(max_new_tokens=min(args.max_tokens, chat.answer_tokens))
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    times: dict[int, list[float]] = {1: [], 8: []}
    for k in range(args.warmup + args.repeats):
        for width in (1, 8):
            task = suite.train_tasks[k % len(suite.train_tasks)]
            started = time.perf_counter()
            chat.run([task] * width, sampling, generator=generator, rng=rng)
            if k >= args.warmup:
                times[width].append(time.perf_counter() - started)
    one, eight = statistics.median(times[1]), statistics.median(times[8])
    return {
        "in_process_one_s_median": one,
        "in_process_eight_s_median": eight,
        "in_process_ratio_eight_over_one": eight / one,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny, smollm2 or a model folder")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--batch-window-ms", type=float, default=20.0)
    parser.add_argument("--free", action="store_true", help="unconstrained answers")
    parser.add_argument(
        "--no-in-process",
        dest="in_process",
        action="store_false",
        help="skip timing the trainer's own collector",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:36s} {value}")


if __name__ == "__main__":
    main()
