"""Collecting 64 suite trajectories: lockstep, per-attempt in one process, per-attempt on Ray.

Prints, for the same policy and the same 64 (task, reset seed) pairs:

* the one-off costs of Ray: ``ray.init`` (a private Ray on 127.0.0.1) and the
  first collection (actors start, import torch, build their environments);
* the median time of one collection (``--repeats`` of them) with
  - ``lockstep``: :class:`RolloutCollector`, 64 environments, one batched
    forward pass per tick (the default collector);
  - ``local``: the per-attempt scheme in this process (:class:`LocalExecutor`);
  - ``ray``: the per-attempt scheme over ``--workers`` Ray actors;
* whether ``ray`` returned exactly the ``local`` episodes (every array of the
  batch, and the episode summaries).

``--step-wait-ms`` adds a sleep to every environment step, standing in for a
tool that waits on a service: that is where fanning out pays, since a worker
waits in parallel with the others.

    python benchmarks/bench_ray.py
    python benchmarks/bench_ray.py --step-wait-ms 5 --repeats 5
    python benchmarks/bench_ray.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from learnloop.jobs.ray_launcher import RayConnection, connect_ray
from learnloop.train.policies import MLPPolicy
from learnloop.train.ray_executor import (
    AttemptCollector,
    GymEnvFactory,
    LocalExecutor,
    RayConfig,
    RayExecutor,
)
from learnloop.train.rollout import RolloutCollector

SUITE = "learnloop/ToolUse-v0"
NUM_TRAJECTORIES = 64


class _SlowSteps(gym.Wrapper):  # type: ignore[type-arg]
    """Sleeps ``wait_s`` in every step (a tool waiting on a service)."""

    def __init__(self, env: gym.Env[Any, Any], wait_s: float) -> None:
        super().__init__(env)
        self.wait_s = wait_s

    def step(self, action: Any) -> Any:
        time.sleep(self.wait_s)
        return self.env.step(action)


@dataclass(frozen=True)
class SuiteFactory:
    """Builds one suite environment, optionally with slow steps (pickles to the actors)."""

    wait_s: float = 0.0

    def __call__(self) -> gym.Env[Any, Any]:
        env = GymEnvFactory(SUITE)()
        return _SlowSteps(env, self.wait_s) if self.wait_s > 0 else env


def median_time(collect: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        collect()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def same_batch(a: Any, b: Any) -> bool:
    names = ("obs", "actions", "log_probs", "values", "rewards", "dones", "terminated",
             "action_masks", "valid")
    arrays = all(np.array_equal(getattr(a, n), getattr(b, n)) for n in names)
    components = sorted(a.reward_components) == sorted(b.reward_components) and all(
        np.array_equal(v, b.reward_components[k]) for k, v in a.reward_components.items()
    )
    return arrays and components and a.episodes == b.episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed collections per variant")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the private Ray")
    parser.add_argument("--step-wait-ms", type=float, default=0.0,
                        help="sleep in every environment step (simulated tool latency)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    factory = SuiteFactory(args.step_wait_ms / 1000.0)

    local = AttemptCollector(factory, NUM_TRAJECTORIES, LocalExecutor(factory))
    lockstep = RolloutCollector([factory() for _ in range(NUM_TRAJECTORIES)], seed=0)
    policy = MLPPolicy(local.encoder.dim, local.num_actions, value_head=False, seed=0)
    num_tasks = len(local.envs[0].unwrapped.suite.tasks("train"))
    seeds = list(range(1000, 1000 + NUM_TRAJECTORIES))
    options = [{"task_index": i % num_tasks} for i in range(NUM_TRAJECTORIES)]

    def collect(collector: Any, seed: int = 0) -> Any:
        return collector.collect_episodes(policy, seeds=seeds, options=options,
                                          generator=torch.Generator().manual_seed(seed))

    started = time.perf_counter()
    connect_ray(RayConnection(num_cpus=args.num_cpus, log_to_driver=False))
    init_s = time.perf_counter() - started
    remote = AttemptCollector(factory, NUM_TRAJECTORIES,
                              RayExecutor(factory, RayConfig(num_workers=args.workers)))
    started = time.perf_counter()
    first = collect(remote)
    first_s = time.perf_counter() - started

    equal = all(same_batch(collect(local, s), collect(remote, s)) for s in range(5))
    steps = int(first.valid.sum())
    result = {
        "trajectories": NUM_TRAJECTORIES,
        "steps_per_collection": steps,
        "step_wait_ms": args.step_wait_ms,
        "ray_workers": args.workers,
        "cpus": os.cpu_count(),
        "ray_init_s": round(init_s, 2),
        "ray_first_collection_s": round(first_s, 2),
        "median_collection_s": {
            "lockstep": round(median_time(lambda: collect(lockstep), args.repeats), 4),
            "local": round(median_time(lambda: collect(local), args.repeats), 4),
            "ray": round(median_time(lambda: collect(remote), args.repeats), 4),
        },
        "ray_equals_local": equal,
    }
    remote.close()
    local.close()
    lockstep.close()
    import ray

    ray.shutdown()
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{NUM_TRAJECTORIES} suite trajectories ({steps} steps), step wait "
          f"{args.step_wait_ms:g} ms, {args.workers} Ray actors on {os.cpu_count()} cores")
    print(f"  ray.init {init_s:.1f} s; first Ray collection (actors start) {first_s:.1f} s")
    for name, seconds in result["median_collection_s"].items():
        print(f"  {name:>8}: {seconds * 1000:8.1f} ms per collection (median of {args.repeats})")
    print(f"  Ray returned the local episodes, array for array: {equal}")


if __name__ == "__main__":
    main()
