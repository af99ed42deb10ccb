"""PPO on CartPole-v1, learnloop vs Stable-Baselines3, plus update and rollout timings.

For each seed, both learners train until the mean return of the last 100 training
episodes reaches 475 (or the step budget runs out) and the environment steps
needed are printed, then the medians and their ratio (learnloop / SB3; <= 1.0
means learnloop needs no more steps). Both run with one torch thread.

* learnloop: ``learnloop.train`` with its *default* PPOConfig (what
  ``learnloop train ppo --env CartPole-v1`` does), nothing CartPole-specific.
* SB3: PPO with the rl-zoo tuned CartPole settings (n_envs 8, n_steps 32, batch
  256, gae_lambda 0.8, gamma 0.98, n_epochs 20, ent_coef 0, lr and clip linear
  from 0.001 and 0.2). SB3 is a benchmark-only dependency.

Also timed: one PPO update on a batch of 8x8 suite trajectories (8 environments,
8 complete episodes each), and collecting 8 suite trajectories concurrently vs one
(medians of many repetitions, with the environments' own share measured by
replaying the same episodes; and with a 2 ms wait per step, inline vs threads).

    python benchmarks/bench_ppo.py --seeds 5
    python benchmarks/bench_ppo.py --quick        # 1 seed, smaller budget
    python benchmarks/bench_ppo.py --only-collection --collect-repeats 3000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from learnloop.train.config import PPOConfig
from learnloop.train.policies import MLPPolicy, PolicyOutput
from learnloop.train.ppo import PPO, ppo_advantages, ppo_update
from learnloop.train.rollout import RolloutCollector, _concat
from learnloop.train.run import make_envs

TARGET = 475.0


def learnloop_steps(seed: int, budget: int) -> tuple[int | None, float]:
    config = PPOConfig()
    iterations = budget // config.batch_size
    collector = RolloutCollector(
        [gym.make("CartPole-v1") for _ in range(config.num_envs)], seed=seed
    )
    policy = MLPPolicy(collector.encoder.dim, collector.num_actions, seed=seed)
    ppo = PPO(policy, collector, config, num_iterations=iterations, seed=seed)
    started = time.process_time()
    for iteration in range(iterations):
        metrics = ppo.train_iteration(iteration)
        if len(ppo.recent_returns) == 100 and metrics["rollout/return_last100"] >= TARGET:
            return int(metrics["rollout/env_steps"]), time.process_time() - started
    return None, time.process_time() - started


def sb3_steps(seed: int, budget: int) -> tuple[int | None, float]:
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    def linear(start: float) -> Any:
        return lambda progress: progress * start

    class Stopper(BaseCallback):
        """Checks the last-100 mean after each rollout, as learnloop does per iteration."""

        def __init__(self) -> None:
            super().__init__()
            self.hit: int | None = None

        def _on_step(self) -> bool:
            return self.hit is None

        def _on_rollout_end(self) -> None:
            buffer = self.model.ep_info_buffer
            if (
                self.hit is None
                and len(buffer) == 100
                and np.mean([e["r"] for e in buffer]) >= TARGET
            ):
                self.hit = self.model.num_timesteps

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = SB3PPO(
        "MlpPolicy",
        env,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=linear(0.001),
        clip_range=linear(0.2),
        seed=seed,
        verbose=0,
        device="cpu",
    )
    callback = Stopper()
    started = time.process_time()
    model.learn(total_timesteps=budget, callback=callback)
    return callback.hit, time.process_time() - started


class LatencyWrapper(gym.Wrapper):  # type: ignore[type-arg]
    """Adds a fixed wait to every step: a tool that calls a service over the network."""

    def __init__(self, env: gym.Env, latency_s: float) -> None:  # type: ignore[type-arg]
        super().__init__(env)
        self.latency_s = latency_s

    def step(self, action: Any) -> Any:
        time.sleep(self.latency_s)
        return self.env.step(action)


def _replay_s(envs: list[Any], seeds: list[int], options: list[Any], actions: Any) -> float:
    """Seconds the environments alone take to replay episodes (same seeds and actions).

    ``actions`` is the batch's actions with -1 where the tick was not valid.
    """
    started = time.perf_counter()
    for i, env in enumerate(envs):
        env.reset(seed=seeds[i], options=options[i])
        for action in actions[:, i].tolist():
            if action >= 0:
                env.step(action)
    return time.perf_counter() - started


class CannedEnv(gym.Env):  # type: ignore[type-arg]
    """Replays one recorded suite reset and step at no cost: 2-step episodes."""

    def __init__(self, source: Any) -> None:
        self.observation_space, self.action_space = source.observation_space, source.action_space
        self.first = source.reset(seed=0, options={"task_index": 5})
        self.next = source.step(0)
        self.t = 0

    def reset(self, *, seed: Any = None, options: Any = None) -> Any:
        self.t = 0
        return self.first

    def step(self, action: Any) -> Any:
        self.t += 1
        obs, reward, _, truncated, info = self.next
        return obs, reward, self.t >= 2, truncated, info


class FixedPolicy:
    """Always action 0, at no cost: leaves the collector's own work to time."""

    def __init__(self, num_actions: int) -> None:
        self.num_actions = num_actions
        self.zeros = {n: torch.zeros(n, dtype=torch.int64) for n in (1, 8)}
        self.log_probs = {n: torch.zeros(n) for n in (1, 8)}

    def act(self, obs: Any, action_mask: Any = None, **_: Any) -> Any:
        n = obs.shape[0]
        return PolicyOutput(actions=self.zeros[n], log_probs=self.log_probs[n], values=None)


def collector_overhead_us(repeats: int) -> dict[str, float]:
    """Microseconds the collector itself spends on 1 and 8 two-step episodes."""
    source = make_envs("learnloop/ToolUse-v0", 1)[0]
    out = {}
    for width in (1, 8):
        collector = RolloutCollector([CannedEnv(source) for _ in range(width)])
        policy = FixedPolicy(collector.num_actions)
        times = []
        for k in range(repeats):
            started = time.perf_counter()
            collector.collect_episodes(policy, seeds=[k] * width)
            times.append(time.perf_counter() - started)
        out[f"collector_only_{width}x2_steps_us_median"] = 1e6 * statistics.median(times)
    return out


def policy_act_ms(policy: MLPPolicy, num_actions: int, repeats: int) -> dict[str, float]:
    """Milliseconds of one batched forward pass (act) over 1 and over 8 suite observations."""
    generator = torch.Generator().manual_seed(0)
    out = {}
    for width in (1, 8):
        obs = torch.zeros(width, policy.obs_dim)
        mask = torch.ones(width, num_actions, dtype=torch.int8)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            policy.act(obs, mask, generator=generator)
            times.append(time.perf_counter() - started)
        out[f"policy_act_{width}_rows_ms_median"] = 1e3 * statistics.median(times)
    return out


def collection_timings(repeats: int, *, latency_s: float = 0.002) -> dict[str, float]:
    """Collecting 8 suite trajectories in lockstep vs one, and the environments' share.

    Repetition k runs task k: one environment attempts it, and 8 environments
    attempt it together (one batched forward pass per tick), in alternating blocks
    of 50 repetitions so each loop runs in a steady state, as in training, while
    both see the same machine load.
    The same episodes are then replayed on the bare environments (same seeds and
    actions) to split the time into environment steps and everything else (policy
    forward, collector). Last, the same with every step waiting ``latency_s`` (a
    tool calling a service): inline vs on 8 threads (``step_workers=8``).
    """
    envs = make_envs("learnloop/ToolUse-v0", 8)
    policy = MLPPolicy(envs[0].observation_space.shape[0], int(envs[0].action_space.n), seed=0)
    policy.eval()
    collectors = {"one": RolloutCollector(envs[:1]), "eight": RolloutCollector(envs)}
    rows: dict[str, list[float]] = {
        key: [] for key in ("one", "eight", "env_one", "env_eight", "cpu_one", "cpu_eight")
    }
    played: dict[str, list[Any]] = {"one": [], "eight": []}
    block = 50  # alternate blocks: both loops see the same load, each in a steady state
    for first in range(0, repeats, block):
        for key, collector in collectors.items():
            width = collector.num_envs
            for k in range(first, min(first + block, repeats)):
                generator = torch.Generator().manual_seed(k)
                options = [{"task_index": k % 100}] * width
                started, started_cpu = time.perf_counter(), time.thread_time()
                batch = collector.collect_episodes(
                    policy, seeds=[k] * width, options=options, generator=generator
                )
                rows[key].append(time.perf_counter() - started)
                rows[f"cpu_{key}"].append(time.thread_time() - started_cpu)
                played[key].append(np.where(batch.valid, batch.actions, -1))
    for first in range(0, repeats, block):
        for key, width in (("one", 1), ("eight", 8)):
            rows[f"env_{key}"] += [
                _replay_s(envs[:width], [k] * width, [{"task_index": k % 100}] * width, actions)
                for k, actions in enumerate(played[key][first : first + block], start=first)
            ]
    median = {key: statistics.median(values[repeats // 10 :]) for key, values in rows.items()}
    slow = [LatencyWrapper(env, latency_s) for env in make_envs("learnloop/ToolUse-v0", 8)]
    io_rows: dict[str, list[float]] = {"io_one": [], "io_eight_inline": [], "io_eight_threads": []}
    io_collectors = {
        "io_one": RolloutCollector(slow[:1]),
        "io_eight_inline": RolloutCollector(slow),
        "io_eight_threads": RolloutCollector(slow, step_workers=8),
    }
    for k in range(max(repeats // 20, 5)):
        for key, collector in io_collectors.items():
            width = collector.num_envs
            started = time.perf_counter()
            collector.collect_episodes(
                policy,
                seeds=[k] * width,
                options=[{"task_index": k % 100}] * width,
                generator=torch.Generator().manual_seed(k),
            )
            io_rows[key].append(time.perf_counter() - started)
    for collector in io_collectors.values():
        collector.close()
    out = {f"collect_{key}_ms_median": 1e3 * value for key, value in median.items()}
    out["collect_ratio_eight_over_one"] = median["eight"] / median["one"]
    # the same on this thread's CPU time: less sensitive to other processes on the machine
    out["collect_cpu_ratio_eight_over_one"] = median["cpu_eight"] / median["cpu_one"]
    out["collect_ticks_one_mean"] = float(np.mean([len(a) for a in played["one"]]))
    out["collect_ticks_eight_mean"] = float(np.mean([len(a) for a in played["eight"]]))
    out["collect_other_one_ms"] = 1e3 * (median["one"] - median["env_one"])
    out["collect_other_eight_ms"] = 1e3 * (median["eight"] - median["env_eight"])
    out.update(policy_act_ms(policy, int(envs[0].action_space.n), repeats))
    out.update({f"collect_{k}_ms_median": 1e3 * statistics.median(v) for k, v in io_rows.items()})
    out["collect_io_ratio_threads_over_one"] = statistics.median(
        io_rows["io_eight_threads"]
    ) / statistics.median(io_rows["io_one"])
    out.update(collector_overhead_us(repeats))
    return out


def update_timing(repeats: int) -> dict[str, float]:
    """Seconds for one PPO update on a batch of 8x8 suite trajectories."""
    envs = make_envs("learnloop/ToolUse-v0", 8)
    collector = RolloutCollector(envs, seed=0)
    policy = MLPPolicy(collector.encoder.dim, collector.num_actions, seed=0)
    config = PPOConfig()
    generator = torch.Generator().manual_seed(0)
    # 8 rounds of 8 complete episodes, stacked in time (dones separate the episodes)
    batch = _concat(
        [
            collector.collect_episodes(
                policy, seeds=list(range(k * 8, k * 8 + 8)), generator=generator
            )
            for k in range(8)
        ]
    )
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate, eps=config.adam_eps)
    update_times = []
    for _ in range(repeats):
        advantages, returns = ppo_advantages(batch, gamma=config.gamma, lam=config.lam)
        started = time.perf_counter()
        ppo_update(
            policy,
            optimizer,
            batch,
            advantages,
            returns,
            config,
            clip_eps=0.2,
            rng=np.random.default_rng(0),
        )
        update_times.append(time.perf_counter() - started)
    return {
        "update_8x8_s_median": statistics.median(update_times),
        "update_8x8_transitions": float(batch.num_steps),
        "update_8x8_epochs": float(config.num_epochs),
    }


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=1))
        return
    for key, value in result.items():
        if key != "seeds":
            print(f"{key:40s} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--budget",
        type=int,
        default=100_000,
        help="env steps per run (the schedules anneal over it; rl-zoo uses 1e5 for CartPole)",
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 100k steps, fewer repeats")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument(
        "--only-collection",
        action="store_true",
        help="time only trajectory collection (8 vs 1), skip CartPole and the update",
    )
    parser.add_argument("--collect-repeats", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    collect_repeats = 200 if args.quick else args.collect_repeats
    if args.only_collection:
        result: dict[str, Any] = {"load_average_1min_before": os.getloadavg()[0]}
        result.update(collection_timings(collect_repeats))
        result["load_average_1min_after"] = os.getloadavg()[0]
        _print(result, args.json)
        return
    seeds = 1 if args.quick else args.seeds
    budget = 100_000 if args.quick else args.budget
    rows = []
    for seed in range(seeds):
        ours, ours_cpu = learnloop_steps(seed, budget)
        theirs, theirs_cpu = (None, 0.0) if args.skip_sb3 else sb3_steps(seed, budget)
        rows.append(
            {
                "seed": seed,
                "learnloop_steps": ours,
                "learnloop_cpu_s": round(ours_cpu, 1),
                "sb3_steps": theirs,
                "sb3_cpu_s": round(theirs_cpu, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    def median(key: str) -> float | None:
        values = [r[key] if r[key] is not None else float("inf") for r in rows]
        return statistics.median(values) if values else None

    result = {
        "seeds": rows,
        "target": TARGET,
        "budget": budget,
        "learnloop_median_steps": median("learnloop_steps"),
    }
    if not args.skip_sb3:
        result["sb3_median_steps"] = median("sb3_steps")
        result["ratio_learnloop_over_sb3"] = (
            result["learnloop_median_steps"] / result["sb3_median_steps"]
        )
    result.update(update_timing(repeats=3 if args.quick else 10))
    result["load_average_1min_before_collection"] = os.getloadavg()[0]
    result.update(collection_timings(collect_repeats))
    result["load_average_1min_after_collection"] = os.getloadavg()[0]
    _print(result, args.json)


if __name__ == "__main__":
    main()
