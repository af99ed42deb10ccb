"""Rollouts fanned out as independent attempts, in this process or over Ray (extra ``ray``).

The lockstep :class:`~learnloop.train.rollout.RolloutCollector` steps N
environments together and samples the N actions of a tick from one shared
generator: which action attempt i takes depends on every other attempt's draws,
so its attempts cannot be split across machines and give the same episodes.
Here every attempt is self-contained instead: attempt i of a collection runs on
its own environment with

* the reset seed and options it was given (a seed left as None becomes
  :func:`attempt_seed` ``(base, i)``),
* its own action generator, seeded with :func:`attempt_seed` ``(base, i)``,
* one forward pass per step over its own observation (batch of one, so the
  arithmetic does not depend on how attempts are grouped),

where ``base`` is one draw from the caller's generator per collection. The
episodes therefore depend only on (policy weights, generator state, seeds,
options), never on where or in which order attempts run:
:class:`LocalExecutor` (this process) and :class:`RayExecutor` (Ray actors, the
policy shipped once per collection with ``ray.put``) return the same batch,
array for array.

:class:`AttemptCollector` puts an executor behind the collector interface that
GRPO and the evaluation use (``collect_episodes``, ``num_envs``, ``envs``,
``encoder``), so a learner trains unchanged on a cluster:

>>> from learnloop.train.policies import MLPPolicy
>>> collector = make_collector("learnloop/ToolUse-v0", 4, executor="local")
>>> policy = MLPPolicy(collector.encoder.dim, collector.num_actions, value_head=False)
>>> batch = collector.collect_episodes(policy, seeds=[1, 2, 3, 4], options=[{"task_index": 0}] * 4)
>>> len(batch.episodes), batch.actions.shape[1]
(4, 4)
>>> collector.close()

Episodes are recorded by the collector's recorder in the calling process (the
workers send back what they would have recorded), so workers need no store.
Attempts have no side effects on the workers, so a task lost with a dying actor
is simply run again (``max_task_retries``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import gymnasium as gym
import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(f"{__name__} needs torch: pip install 'learnloop[train]' ({exc})") from exc

from learnloop.errors import ClosedError, ConfigError
from learnloop.jobs.ray_launcher import RayConnection, connect_ray, import_ray
from learnloop.train.policies import Policy
from learnloop.train.rollout import (
    EpisodeRecorder,
    EpisodeSummary,
    ObservationEncoder,
    RolloutBatch,
    RolloutCollector,
    _Ticks,
)

__all__ = [
    "Attempt",
    "AttemptCollector",
    "AttemptExecutor",
    "AttemptResult",
    "AttemptRunner",
    "GymEnvFactory",
    "LocalExecutor",
    "RayConfig",
    "RayExecutor",
    "attempt_seed",
    "make_collector",
    "merge_attempts",
    "plan_attempts",
]

logger = logging.getLogger(__name__)

#: Builds one environment; must pickle (cloudpickle) to reach Ray workers.
EnvFactory = Callable[[], gym.Env[Any, Any]]

Executor = Literal["lockstep", "local", "ray"]


# --- seeds and plans ----------------------------------------------------------------------


def attempt_seed(base_seed: int, index: int) -> int:
    """A 63-bit seed for attempt ``index`` of a collection whose base seed is ``base_seed``.

    NumPy's ``SeedSequence(base_seed, spawn_key=(index,))``: seeds of different
    attempts are independent streams, and the same pair always gives the same seed.

    >>> attempt_seed(7, 0) == attempt_seed(7, 0), attempt_seed(7, 0) == attempt_seed(7, 1)
    (True, False)
    """
    if base_seed < 0 or index < 0:
        raise ConfigError(
            f"attempt seeds need base_seed >= 0 and index >= 0, got {base_seed} and {index}"
        )
    state = np.random.SeedSequence(base_seed, spawn_key=(index,)).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One episode to run: which column it fills, how the environment resets, how it samples."""

    index: int
    """Column of the attempt in the collection's batch."""
    reset_seed: int
    """Seed of the environment's reset."""
    options: Mapping[str, Any] | None
    """Reset options (e.g. ``{"task_index": 3}``)."""
    sample_seed: int
    """Seed of the attempt's own action generator."""


def plan_attempts(
    seeds: Sequence[int | None], options: Sequence[Mapping[str, Any] | None], *, base_seed: int
) -> list[Attempt]:
    """Attempt i resets to ``seeds[i]`` (or a derived seed) with ``options[i]``.

    >>> plan = plan_attempts([5, None], [None, {"task_index": 1}], base_seed=0)
    >>> plan[0].reset_seed, plan[1].reset_seed == attempt_seed(0, 1), plan[1].options
    (5, True, {'task_index': 1})
    """
    if len(seeds) != len(options):
        raise ConfigError(
            f"one seed and one options entry per attempt, got {len(seeds)} seeds and "
            f"{len(options)} options"
        )
    plan = []
    for i, (seed, option) in enumerate(zip(seeds, options, strict=True)):
        derived = attempt_seed(base_seed, i)
        plan.append(
            Attempt(
                index=i,
                reset_seed=derived if seed is None else int(seed),
                options=None if option is None else dict(option),
                sample_seed=derived,
            )
        )
    return plan


def _base_seed(generator: torch.Generator | None) -> int:
    """One draw from the caller's generator (torch's default one when None)."""
    return int(torch.randint(2**62, (1,), generator=generator).item())


# --- running attempts ---------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class AttemptResult:
    """One finished attempt: its per-step arrays (T steps), summary and recorder calls."""

    index: int
    """Column of the attempt in the collection's batch."""
    obs: np.ndarray
    """float32 (T, D): encoded observation before each action."""
    actions: np.ndarray
    """int64 (T,)."""
    log_probs: np.ndarray
    """float32 (T,): log pi(a_t|s_t) at collection time."""
    values: np.ndarray
    """float32 (T,): V(s_t) (zeros without a value head)."""
    rewards: np.ndarray
    """float64 (T,)."""
    dones: np.ndarray
    """float64 (T,): 1.0 on the last step."""
    terminated: np.ndarray
    """float64 (T,): 1.0 where the episode reached a terminal state."""
    action_masks: np.ndarray
    """int8 (T, A)."""
    reward_components: dict[str, np.ndarray]
    """info["reward_components"] per step, name -> float64 (T,)."""
    summary: EpisodeSummary
    """The attempt as the learner sees it (``env_index`` is the attempt's column)."""
    calls: tuple[tuple[Any, ...], ...] = ()
    """What the attempt would have recorded: ("begin"|"step"|"complete", ...) in order."""

    @classmethod
    def from_batch(
        cls, index: int, batch: RolloutBatch, calls: Sequence[tuple[Any, ...]] = ()
    ) -> AttemptResult:
        """Column 0 of a one-environment episode batch, copied out."""
        length = int(batch.valid[:, 0].sum())
        summary = dataclasses.replace(batch.episodes[0], env_index=index)
        return cls(
            index=index,
            obs=batch.obs[:length, 0].copy(),
            actions=batch.actions[:length, 0].copy(),
            log_probs=batch.log_probs[:length, 0].copy(),
            values=batch.values[:length, 0].copy(),
            rewards=batch.rewards[:length, 0].copy(),
            dones=batch.dones[:length, 0].copy(),
            terminated=batch.terminated[:length, 0].copy(),
            action_masks=batch.action_masks[:length, 0].copy(),
            reward_components={k: v[:length, 0].copy() for k, v in batch.reward_components.items()},
            summary=summary,
            calls=tuple(calls),
        )


class _CallLog:
    """An :class:`EpisodeRecorder` that keeps the calls, to be replayed where the store is."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._count = 0

    def begin(self, task: str, **fields: Any) -> Any:
        self._count += 1
        local_id = f"attempt-{self._count}"
        self.calls.append(("begin", local_id, task, fields))
        return local_id

    def step(self, episode_id: Any, action: str, **fields: Any) -> Any:
        self.calls.append(("step", episode_id, action, fields))

    def complete(self, episode_id: Any, **fields: Any) -> Any:
        self.calls.append(("complete", episode_id, fields))

    def drain(self) -> list[tuple[Any, ...]]:
        calls, self.calls = self.calls, []
        return calls


class AttemptRunner:
    """Runs attempts one after another on one environment (here, or as a Ray actor).

    Args:
        make_env: builds the environment (called once).
        record: keep what each attempt would record (replayed by the caller).
        agent_id: agent id of the recorded episodes.
    """

    def __init__(
        self, make_env: EnvFactory, *, record: bool = False, agent_id: str = "learnloop.train"
    ) -> None:
        self._log = _CallLog() if record else None
        self.collector = RolloutCollector([make_env()], recorder=self._log, agent_id=agent_id)

    def run(
        self, policy: Policy, attempts: Sequence[Attempt], *, max_steps: int, greedy: bool
    ) -> list[AttemptResult]:
        """Each attempt's episode, in the order given."""
        results = []
        for attempt in attempts:
            generator = torch.Generator().manual_seed(attempt.sample_seed)
            batch = self.collector.collect_episodes(
                policy,
                seeds=[attempt.reset_seed],
                options=[attempt.options],
                max_steps=max_steps,
                generator=generator,
                greedy=greedy,
            )
            calls = self._log.drain() if self._log is not None else ()
            results.append(AttemptResult.from_batch(attempt.index, batch, calls))
        return results

    def close(self) -> None:
        self.collector.close()


def merge_attempts(
    results: Sequence[AttemptResult], obs_dim: int, num_actions: int
) -> RolloutBatch:
    """Attempts as the columns of one episode-mode batch, (T, N) with T the longest.

    Ticks after an attempt ended are invalid, with zero observations and all-ones
    masks (as in :meth:`RolloutCollector.collect_episodes`).
    """
    ordered = sorted(results, key=lambda r: r.index)
    if [r.index for r in ordered] != list(range(len(ordered))):
        raise ConfigError(
            f"attempt results must have indices 0..{len(ordered) - 1}, got "
            f"{[r.index for r in ordered]}"
        )
    n = len(ordered)
    t = max((len(r.actions) for r in ordered), default=0)
    batch = _Ticks(t, n, obs_dim, num_actions, all_valid=False).to_batch(
        t, [r.summary for r in ordered]
    )
    for i, r in enumerate(ordered):
        steps = len(r.actions)
        batch.obs[:steps, i] = r.obs
        batch.actions[:steps, i] = r.actions
        batch.log_probs[:steps, i] = r.log_probs
        batch.values[:steps, i] = r.values
        batch.rewards[:steps, i] = r.rewards
        batch.dones[:steps, i] = r.dones
        batch.terminated[:steps, i] = r.terminated
        batch.action_masks[:steps, i] = r.action_masks
        batch.valid[:steps, i] = True
        for name, column in r.reward_components.items():
            if name not in batch.reward_components:
                batch.reward_components[name] = np.zeros((t, n), np.float64)
            batch.reward_components[name][:steps, i] = column
    return batch


# --- executors ----------------------------------------------------------------------------


class AttemptExecutor(Protocol):
    """Runs a collection's attempts somewhere and returns their results."""

    def run(
        self, policy: Policy, attempts: Sequence[Attempt], *, max_steps: int, greedy: bool
    ) -> list[AttemptResult]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs every attempt in this process, one after another (the reference for Ray)."""

    def __init__(
        self, make_env: EnvFactory, *, record: bool = False, agent_id: str = "learnloop.train"
    ) -> None:
        self._runner = AttemptRunner(make_env, record=record, agent_id=agent_id)

    def run(
        self, policy: Policy, attempts: Sequence[Attempt], *, max_steps: int, greedy: bool
    ) -> list[AttemptResult]:
        return self._runner.run(policy, attempts, max_steps=max_steps, greedy=greedy)

    def close(self) -> None:
        self._runner.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class RayConfig:
    """Where the Ray executor runs and how many rollout actors it starts."""

    connection: RayConnection = field(default_factory=RayConnection)
    """The Ray to join (``address="auto"``) or start here."""
    num_workers: int = 2
    """Rollout actors; a collection's attempts are split evenly over them."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves for each actor."""
    max_task_retries: int = 2
    """Times an attempt batch lost with its actor is run again (attempts have no side effects)."""

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ConfigError(f"RayConfig.num_workers must be >= 1, got {self.num_workers}")
        if not self.cpus_per_worker > 0:
            raise ConfigError(
                f"RayConfig.cpus_per_worker must be > 0, got {self.cpus_per_worker!r}; e.g. 1"
            )
        if self.max_task_retries < 0:
            raise ConfigError(
                f"RayConfig.max_task_retries must be >= 0, got {self.max_task_retries}"
            )


class RayExecutor:
    """Fans a collection's attempts out over ``config.num_workers`` Ray actors.

    Each actor builds its environment once and keeps it. Per collection the policy
    goes into the object store once (``ray.put``) and every actor runs a
    contiguous share of the attempts. Ray is started (or joined) if this process
    has not done so; the executor shuts it down on :meth:`close` only if it
    started it.

    Args:
        make_env: builds one environment; pickled to the actors.
        config: cluster address and worker count.
        record: actors send back what each attempt would record.
        agent_id: agent id of the recorded episodes.
    """

    def __init__(
        self,
        make_env: EnvFactory,
        config: RayConfig = RayConfig(),
        *,
        record: bool = False,
        agent_id: str = "learnloop.train",
    ) -> None:
        self.config = config
        self._ray = import_ray()
        self._owns_ray = connect_ray(config.connection)
        remote = self._ray.remote(AttemptRunner).options(
            num_cpus=config.cpus_per_worker,
            max_restarts=config.max_task_retries,
            max_task_retries=config.max_task_retries,
        )
        self._actors = [
            remote.remote(make_env, record=record, agent_id=agent_id)
            for _ in range(config.num_workers)
        ]
        self._closed = False

    def run(
        self, policy: Policy, attempts: Sequence[Attempt], *, max_steps: int, greedy: bool
    ) -> list[AttemptResult]:
        if self._closed:
            raise ClosedError("this RayExecutor is closed; create a new one")
        if not attempts:
            return []
        policy_ref = self._ray.put(policy)
        shares = np.array_split(np.arange(len(attempts)), min(len(self._actors), len(attempts)))
        futures = [
            actor.run.remote(
                policy_ref, [attempts[i] for i in share], max_steps=max_steps, greedy=greedy
            )
            for actor, share in zip(self._actors, shares, strict=False)
        ]
        return [result for part in self._ray.get(futures) for result in part]

    def close(self) -> None:
        """Stop the actors; shut Ray down if this executor started it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        if self._owns_ray:
            self._ray.shutdown()


# --- the collector ------------------------------------------------------------------------


class AttemptCollector:
    """The episode-mode collector interface over an :class:`AttemptExecutor`.

    Drop-in for :class:`RolloutCollector` where whole episodes are collected
    (GRPO, evaluation); :meth:`collect_steps` (PPO) needs the lockstep collector.

    Args:
        make_env: builds one environment (this process keeps one for the spaces
            and the task list; the executor builds its own).
        num_envs: attempts per collection by default (GRPO checks it equals its
            ``num_attempts``); ``collect_episodes`` runs any number given seeds.
        executor: where attempts run (:class:`LocalExecutor`, :class:`RayExecutor`).
        recorder: records every attempt as an episode (kind ``"rollout"``) here.
        agent_id: the agent id of the recorded episodes.
    """

    def __init__(
        self,
        make_env: EnvFactory,
        num_envs: int,
        executor: AttemptExecutor,
        *,
        recorder: EpisodeRecorder | None = None,
        agent_id: str = "learnloop.train",
    ) -> None:
        if num_envs < 1:
            raise ConfigError(f"AttemptCollector needs num_envs >= 1, got {num_envs}")
        env = make_env()
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ConfigError(
                f"only discrete action spaces train here, got {env.action_space!r}; "
                "pick an environment with a Discrete action space"
            )
        self.envs = [env]
        self.num_envs = num_envs
        self.num_actions = int(env.action_space.n)
        self.encoder = ObservationEncoder(env.observation_space)
        self.executor = executor
        self.recorder = recorder
        self.agent_id = agent_id

    def collect_episodes(
        self,
        policy: Policy,
        *,
        seeds: Sequence[int | None] | None = None,
        options: Sequence[Mapping[str, Any] | None] | None = None,
        max_steps: int = 1000,
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> RolloutBatch:
        """Run one episode per attempt (``num_envs`` without seeds or options).

        Same arguments and batch layout as :meth:`RolloutCollector.collect_episodes`;
        the actions come from the per-attempt generators (module docstring), whose
        base seed is one draw from ``generator``.
        """
        given = seeds if seeds is not None else options
        n = self.num_envs if given is None else len(given)
        seeds = list(seeds) if seeds is not None else [None] * n
        options = list(options) if options is not None else [None] * n
        if n < 1 or len(seeds) != len(options):
            raise ConfigError(
                f"collect_episodes runs at least one episode with one seed and one options "
                f"entry each, got {len(seeds)} seeds and {len(options)} options"
            )
        if max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {max_steps}")
        attempts = plan_attempts(seeds, options, base_seed=_base_seed(generator))
        results = self.executor.run(policy, attempts, max_steps=max_steps, greedy=greedy)
        if self.recorder is not None:
            results = [self._replay(r) for r in results]
        return merge_attempts(results, self.encoder.dim, self.num_actions)

    def _replay(self, result: AttemptResult) -> AttemptResult:
        """Write what the attempt recorded through this process's recorder."""
        assert self.recorder is not None
        ids: dict[Any, Any] = {}
        for call in result.calls:
            if call[0] == "begin":
                _, local_id, task, fields = call
                ids[local_id] = self.recorder.begin(task, **{**fields, "agent_id": self.agent_id})
            elif call[0] == "step":
                _, local_id, action, fields = call
                self.recorder.step(ids[local_id], action, **fields)
            else:
                _, local_id, fields = call
                self.recorder.complete(ids[local_id], **fields)
        local = result.summary.episode_id
        recorded = None if local is None or local not in ids else str(ids[local])
        summary = dataclasses.replace(result.summary, episode_id=recorded)
        return dataclasses.replace(result, summary=summary, calls=())

    def collect_steps(self, policy: Policy, num_steps: int, **kwargs: Any) -> RolloutBatch:
        """Not available: fixed-length segments need the lockstep collector."""
        raise ConfigError(
            "the attempt executors collect whole episodes (GRPO, evaluation); PPO's "
            "fixed-length segments need the lockstep RolloutCollector (executor 'lockstep')"
        )

    def state_dict(self) -> dict[str, Any]:
        """Nothing to save: every collection starts from fresh resets."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore (see :meth:`state_dict`)."""

    def close(self) -> None:
        """Close the executor and this process's environment."""
        self.executor.close()
        for env in self.envs:
            env.close()


# --- building one from an environment id --------------------------------------------------


@dataclass(frozen=True, slots=True)
class GymEnvFactory:
    """Builds one environment of a registered id (suite ids get their split); pickles."""

    env_id: str
    """A Gymnasium id, e.g. "learnloop/ToolUse-v0" or "CartPole-v1"."""
    split: Literal["train", "heldout"] = "train"
    """Task split of suite environments."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Extra arguments of :func:`~learnloop.train.run.make_envs` (``time_limit``) and
    ``gymnasium.make``."""

    def __call__(self) -> gym.Env[Any, Any]:
        from learnloop.train.run import make_envs

        return make_envs(self.env_id, 1, split=self.split, **dict(self.kwargs))[0]


def make_collector(
    env_id: str,
    num_envs: int,
    *,
    executor: Executor = "lockstep",
    ray: RayConfig | None = None,
    split: Literal["train", "heldout"] = "train",
    seed: int = 0,
    recorder: EpisodeRecorder | None = None,
    agent_id: str = "learnloop.train",
    time_limit: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> RolloutCollector | AttemptCollector:
    """The collector of a run: lockstep (default), per-attempt local, or per-attempt on Ray.

    ``"lockstep"`` is :class:`RolloutCollector` (PPO and GRPO, fastest on one
    machine); ``"local"`` and ``"ray"`` are :class:`AttemptCollector` s that give
    the same episodes as each other for the same seed (GRPO and evaluation).
    """
    if executor == "lockstep":
        from learnloop.train.run import make_envs

        envs = make_envs(
            env_id, num_envs, split=split, time_limit=time_limit, **dict(env_kwargs or {})
        )
        return RolloutCollector(envs, seed=seed, recorder=recorder, agent_id=agent_id)
    factory = GymEnvFactory(env_id, split, {"time_limit": time_limit, **dict(env_kwargs or {})})
    record = recorder is not None
    backend: AttemptExecutor
    if executor == "local":
        backend = LocalExecutor(factory, record=record, agent_id=agent_id)
    elif executor == "ray":
        backend = RayExecutor(factory, ray or RayConfig(), record=record, agent_id=agent_id)
    else:
        raise ConfigError(f"unknown executor {executor!r}; use 'lockstep', 'local' or 'ray'")
    return AttemptCollector(factory, num_envs, backend, recorder=recorder, agent_id=agent_id)
