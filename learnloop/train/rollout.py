"""Rollout collection: N environments stepped concurrently, one batched forward pass.

The :class:`RolloutCollector` holds N Gymnasium environments and advances them in
lockstep: at each tick it asks the policy for N actions in one forward pass over
the N observations, and steps every environment (inline, or on a thread pool when
``step_workers > 0`` for environments that wait on I/O). Observations are written
straight into the batch's preallocated arrays, so the collector adds little per
step beyond the environments' own time. The policy cost is shared: N attempts
call the policy as often as one does. Stepping costs N times one step when steps
are Python compute (inline); when steps wait on I/O (a tool calling a service),
the thread pool overlaps them and N attempts take about as long as one.

Two modes:

* :meth:`RolloutCollector.collect_steps` (PPO): a fixed number of steps per
  environment; environments persist across calls and reset themselves when an
  episode ends.
* :meth:`RolloutCollector.collect_episodes` (GRPO, evaluation): every environment
  is reset (to a given seed and reset options, e.g. the same task for a group)
  and runs exactly one episode.

Each attempt is recorded as an episode when a recorder is given. A failing
attempt (the environment raised) is recorded as failed and collection goes on.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(f"{__name__} needs torch: pip install 'learnloop[train]' ({exc})") from exc

from learnloop.errors import ConfigError, InvalidInputError
from learnloop.train.policies import Policy

__all__ = [
    "EpisodeRecorder",
    "EpisodeSummary",
    "ObservationEncoder",
    "RolloutBatch",
    "RolloutCollector",
]

logger = logging.getLogger(__name__)


class EpisodeRecorder(Protocol):
    """The part of :class:`learnloop.recorder.Recorder` the collector writes through."""

    # Read-only callables rather than methods: the recorder's keyword-only signatures
    # would not match methods declared with **fields.
    @property
    def begin(self) -> Callable[..., Any]: ...

    @property
    def step(self) -> Callable[..., Any]: ...

    @property
    def complete(self) -> Callable[..., Any]: ...


class ObservationEncoder:
    """Turns observations of a Gymnasium space into flat float32 vectors.

    Box observations are flattened; Discrete ones become one-hot vectors; any
    other space goes through :func:`gymnasium.spaces.flatten`.
    """

    def __init__(self, space: gym.Space[Any]) -> None:
        self.space = space
        try:
            self.dim = int(gym.spaces.flatdim(space))
        except (NotImplementedError, ValueError) as exc:
            raise ConfigError(
                f"cannot flatten observation space {space!r} ({exc}); wrap the environment "
                "so that it returns a Box observation"
            ) from None
        self._box = isinstance(space, gym.spaces.Box)
        self._flat_shape = (self.dim,)

    def __call__(self, obs: Any) -> np.ndarray:
        """The observation as a new float32 vector of length ``dim``."""
        out = np.empty(self.dim, np.float32)
        self.encode_into(obs, out)
        return out

    def encode_into(self, obs: Any, out: np.ndarray) -> None:
        """Write the observation into ``out`` (a float32 row of length ``dim``), no copy kept."""
        if self._box:
            if type(obs) is np.ndarray and obs.shape == self._flat_shape:
                out[...] = obs  # already flat: the common case, without the reshape call
                return
            flat = np.reshape(obs, -1)
        else:
            flat = np.asarray(gym.spaces.flatten(self.space, obs), np.float32).reshape(-1)
        if flat.shape[0] != self.dim:
            raise InvalidInputError(
                f"observation has {flat.shape[0]} values, the space {self.space!r} has "
                f"{self.dim}; the environment must return observations of its space"
            )
        out[...] = flat


@dataclass(frozen=True, slots=True, kw_only=True)
class EpisodeSummary:
    """One finished attempt, as the learner and the evaluation see it."""

    env_index: int
    """Which of the N environments ran it."""
    total_reward: float
    """Sum of its rewards."""
    length: int
    """Number of steps."""
    success: bool | None
    """info["task_success"] (else "is_success", else "success") at the end, if reported."""
    num_correct_tools: int = 0
    """Steps whose action was the task's best tool (suite environments)."""
    num_tool_decisions: int = 0
    """Steps where the best tool was known."""
    error: str | None = None
    """The exception message when the environment failed."""
    task: str = ""
    """The task text (info["task_text"]) or the environment id."""
    episode_id: str | None = None
    """The recorded episode's id, when a recorder is attached."""

    @property
    def tool_accuracy(self) -> float | None:
        if self.num_tool_decisions == 0:
            return None
        return self.num_correct_tools / self.num_tool_decisions


@dataclass(slots=True, kw_only=True)
class RolloutBatch:
    """Per-step data of N environments over T ticks, arrays shaped (T, N, ...)."""

    obs: np.ndarray
    """Encoded observations before each action, float32 (T, N, D)."""
    actions: np.ndarray
    """int64 (T, N)."""
    log_probs: np.ndarray
    """log pi_old(a_t|s_t) at collection time, float32 (T, N)."""
    values: np.ndarray
    """V(s_t) at collection time (zeros without a value head), float32 (T, N)."""
    rewards: np.ndarray
    """float64 (T, N)."""
    dones: np.ndarray
    """1.0 where the episode ended after step t (terminated, truncated or failed)."""
    terminated: np.ndarray
    """1.0 where the episode reached a terminal state (no bootstrap)."""
    truncated_values: np.ndarray
    """V(final observation) where the episode was truncated, else 0 (bootstrap it)."""
    action_masks: np.ndarray
    """int8 (T, N, A), 1 for available actions."""
    valid: np.ndarray
    """bool (T, N): False for ticks after an environment's episode ended (episode mode)."""
    reward_components: dict[str, np.ndarray] = field(default_factory=dict)
    """info["reward_components"] per step, name -> float64 (T, N)."""
    last_values: np.ndarray
    """V(s_T) of the observation after the last tick, (N,), for bootstrapping."""
    episodes: list[EpisodeSummary] = field(default_factory=list)
    """Attempts that finished during this rollout."""

    @property
    def num_steps(self) -> int:
        """Valid transitions in the batch."""
        return int(self.valid.sum())


@dataclass(slots=True)
class _Slot:
    """What the collector tracks for one environment's episode between ticks."""

    info: dict[str, Any]
    total_reward: float = 0.0
    length: int = 0
    num_correct: int = 0
    num_decisions: int = 0
    episode_id: Any = None


class _Ticks:
    """The arrays of a rollout under construction, written in place tick by tick.

    Row ``t`` of ``obs``/``masks`` is what the policy sees at tick ``t``; stepping
    environment i writes its next observation straight into row ``t + 1``, so no
    per-tick stacking or copying is needed. Grows by doubling when an episode runs
    past the capacity.
    """

    def __init__(self, capacity: int, n: int, d: int, a: int, *, all_valid: bool) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity + 1, n, d), np.float32)
        self.masks = np.ones((capacity + 1, n, a), np.int8)
        self.actions = np.zeros((capacity, n), np.int64)
        self.log_probs = np.zeros((capacity, n), np.float32)
        self.values = np.zeros((capacity, n), np.float32)
        self.rewards = np.zeros((capacity, n), np.float64)
        self.dones = np.zeros((capacity, n), np.float64)
        self.terminated = np.zeros((capacity, n), np.float64)
        self.truncated_values = np.zeros((capacity, n), np.float64)
        self.valid = np.full((capacity, n), all_valid, bool)
        #: (tick, env, info["reward_components"]) of every step that reported them.
        self.components: list[tuple[int, int, Mapping[str, float]]] = []
        #: env -> encoded final observation of episodes truncated at the current tick.
        self.truncated_obs: dict[int, np.ndarray] = {}

    def grow(self, capacity: int) -> None:
        """Enlarge to ``capacity`` ticks, keeping what was written."""
        for name in ("obs", "masks"):
            old = getattr(self, name)
            new = np.zeros((capacity + 1, *old.shape[1:]), old.dtype)
            if name == "masks":
                new[:] = 1
            new[: old.shape[0]] = old
            setattr(self, name, new)
        for name in (
            "actions",
            "log_probs",
            "values",
            "rewards",
            "dones",
            "terminated",
            "truncated_values",
            "valid",
        ):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)
        self.capacity = capacity

    def to_batch(self, num_ticks: int, episodes: list[EpisodeSummary]) -> RolloutBatch:
        """The first ``num_ticks`` ticks as a :class:`RolloutBatch` (views, not copies)."""
        n = self.rewards.shape[1]
        components: dict[str, np.ndarray] = {}
        for t, i, values in self.components:
            for name, value in values.items():
                column = components.get(name)
                if column is None:
                    column = components[name] = np.zeros((num_ticks, n), np.float64)
                column[t, i] = float(value)
        return RolloutBatch(
            obs=self.obs[:num_ticks],
            actions=self.actions[:num_ticks],
            log_probs=self.log_probs[:num_ticks],
            values=self.values[:num_ticks],
            rewards=self.rewards[:num_ticks],
            dones=self.dones[:num_ticks],
            terminated=self.terminated[:num_ticks],
            truncated_values=self.truncated_values[:num_ticks],
            action_masks=self.masks[:num_ticks],
            valid=self.valid[:num_ticks],
            reward_components=components,
            last_values=np.zeros(n, np.float32),
            episodes=episodes,
        )


def _success_of(info: Mapping[str, Any]) -> bool | None:
    for key in ("task_success", "is_success", "success"):
        if key in info and info[key] is not None:
            return bool(info[key])
    return None


class RolloutCollector:
    """Steps N Gymnasium environments in lockstep with one batched policy call.

    Args:
        envs: the N environments (discrete action space, same spaces for all).
        seed: seeds the first reset of environment i with ``seed + i``.
        recorder: records every attempt as an episode (kind ``"rollout"``) when given.
        agent_id: the agent id of the recorded episodes.
        step_workers: threads stepping the environments concurrently (0: inline,
            fastest when a step is cheap compute; use N when steps wait on I/O).
    """

    def __init__(
        self,
        envs: Sequence[gym.Env[Any, Any]],
        *,
        seed: int = 0,
        recorder: EpisodeRecorder | None = None,
        agent_id: str = "learnloop.train",
        step_workers: int = 0,
    ) -> None:
        if not envs:
            raise ConfigError("RolloutCollector needs at least one environment")
        action_space = envs[0].action_space
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ConfigError(
                f"only discrete action spaces train here, got {action_space!r}; "
                "pick an environment with a Discrete action space"
            )
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        self.num_actions = int(action_space.n)
        self._action_start = int(action_space.start)
        self.encoder = ObservationEncoder(envs[0].observation_space)
        self.seed = seed
        self.recorder = recorder
        self.agent_id = agent_id
        self._pool = ThreadPoolExecutor(step_workers) if step_workers > 0 else None
        self._slots: list[_Slot] | None = None
        # Observation and mask of each environment between collect_steps calls.
        self._obs = np.zeros((self.num_envs, self.encoder.dim), np.float32)
        self._masks = np.ones((self.num_envs, self.num_actions), np.int8)
        self._mask_shape = (self.num_actions,)
        self._env_name = getattr(envs[0].spec, "id", None) or type(envs[0].unwrapped).__name__
        if recorder is not None and any(
            getattr(env.unwrapped, "recorder", None) is not None for env in self.envs
        ):
            logger.info("the environments record their own episodes; the collector will not")
            self.recorder = None

    @classmethod
    def from_factory(
        cls, make_env: Callable[[int], gym.Env[Any, Any]], num_envs: int, **kwargs: Any
    ) -> RolloutCollector:
        """Build with ``make_env(i)`` for i in range(num_envs)."""
        return cls([make_env(i) for i in range(num_envs)], **kwargs)

    def close(self) -> None:
        """Complete in-flight recorded episodes as aborted; close environments and threads."""
        if self.recorder is not None and self._slots is not None:
            for slot in self._slots:
                if slot.episode_id is not None:
                    self.recorder.complete(
                        slot.episode_id, status="aborted", reason="rollout collector closed"
                    )
                    slot.episode_id = None
        for env in self.envs:
            env.close()
        if self._pool is not None:
            self._pool.shutdown()

    # --- per-environment helpers -----------------------------------------------------

    def _write_mask(self, info: Mapping[str, Any], out: np.ndarray) -> None:
        mask = info.get("action_mask")
        if type(mask) is np.ndarray and mask.shape == self._mask_shape:
            out[...] = mask
            return
        if mask is None:
            out[...] = 1
            return
        mask = np.asarray(mask)
        if mask.size != self.num_actions:
            raise InvalidInputError(
                f"info['action_mask'] has {mask.size} entries for {self.num_actions} "
                "actions; the environment must give one flag per action"
            )
        out[...] = mask.reshape(-1)

    def _reset(
        self,
        i: int,
        obs_out: np.ndarray,
        mask_out: np.ndarray,
        *,
        seed: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> _Slot:
        """Reset env i, writing its first observation and mask into the given rows."""
        obs, info = self.envs[i].reset(seed=seed, options=dict(options) if options else None)
        self.encoder.encode_into(obs, obs_out)
        self._write_mask(info, mask_out)
        return _Slot(info=info)

    def _task_of(self, slot: _Slot) -> str:
        return str(slot.info.get("task_text") or self._env_name)

    def _action_name(self, slot: _Slot, action: int) -> tuple[str, str | None]:
        tools = slot.info.get("tools")
        if tools is not None and 0 <= action < len(tools):
            return str(tools[action]), str(tools[action])
        return str(action + self._action_start), None

    def _step_env(
        self, i: int, action: int
    ) -> tuple[Any, float, bool, bool, dict[str, Any], str | None]:
        try:
            obs, reward, terminated, truncated, info = self.envs[i].step(
                action + self._action_start
            )
        except Exception as exc:  # an attempt failing is data: record it and go on
            logger.warning("environment %d failed on action %d: %r", i, action, exc)
            return None, 0.0, True, False, {}, f"{type(exc).__name__}: {exc}"
        reward = float(reward)
        if not math.isfinite(reward):
            return None, 0.0, True, False, info, f"non-finite reward {reward!r}"
        return obs, reward, bool(terminated), bool(truncated), info, None

    def _record_step(
        self, slot: _Slot, action: int, reward: float, info: Mapping[str, Any], error: str | None
    ) -> None:
        assert self.recorder is not None
        if slot.episode_id is None:
            slot.episode_id = self.recorder.begin(
                self._task_of(slot),
                agent_id=self.agent_id,
                kind="rollout",
                metadata={"env": self._env_name},
            )
        name, tool = self._action_name(slot, action)
        components = info.get("reward_components")
        state = {"subtask": slot.info["subtask_text"]} if "subtask_text" in slot.info else None
        success = info.get("success")
        self.recorder.step(
            slot.episode_id,
            name,
            tool=tool,
            state=state,
            result=info.get("output"),
            reward=reward,
            reward_components=dict(components) if components else None,
            success=False if error is not None else (None if success is None else bool(success)),
            error=error if error is not None else info.get("error"),
            duration_s=info.get("duration_s"),
        )

    def _finish(
        self, i: int, slot: _Slot, info: Mapping[str, Any], error: str | None
    ) -> EpisodeSummary:
        success = False if error is not None else _success_of(info)
        if self.recorder is not None and slot.episode_id is not None:
            status = "failure" if error is not None or success is False else "success"
            self.recorder.complete(
                slot.episode_id,
                status=status,
                outcome={"total_reward": slot.total_reward, "length": slot.length},
                reason=error,
            )
        return EpisodeSummary(
            env_index=i,
            total_reward=slot.total_reward,
            length=slot.length,
            success=success,
            num_correct_tools=slot.num_correct,
            num_tool_decisions=slot.num_decisions,
            error=error,
            task=self._task_of(slot),
            episode_id=None if slot.episode_id is None else str(slot.episode_id),
        )

    def _advance(self, ticks: _Ticks, t: int, i: int, action: int) -> EpisodeSummary | None:
        """Step env i at tick t, writing into ``ticks``; the summary if its episode ended."""
        slots = self._slots
        assert slots is not None
        slot = slots[i]
        best = slot.info.get("best_tool")
        if best is not None:
            name, _ = self._action_name(slot, action)
            slot.num_decisions += 1
            slot.num_correct += int(name == str(best))
        obs, reward, terminated, truncated, info, error = self._step_env(i, action)
        slot.total_reward += reward
        slot.length += 1
        if self.recorder is not None:
            self._record_step(slot, action, reward, info, error)
        ticks.rewards[t, i] = reward
        components = info.get("reward_components")
        if components:
            ticks.components.append((t, i, components))
        if error is not None:
            terminated = True
        if terminated or truncated:
            ticks.dones[t, i] = 1.0
            if terminated:
                ticks.terminated[t, i] = 1.0
            else:
                final = np.empty(self.encoder.dim, np.float32)
                self.encoder.encode_into(obs, final)
                ticks.truncated_obs[i] = final
            return self._finish(i, slot, info, error)
        self.encoder.encode_into(obs, ticks.obs[t + 1, i])
        self._write_mask(info, ticks.masks[t + 1, i])
        slot.info = info
        return None

    # --- policy calls ----------------------------------------------------------------

    @staticmethod
    def _act(
        policy: Policy,
        ticks: _Ticks,
        t: int,
        generator: torch.Generator | None,
        greedy: bool,
    ) -> list[int]:
        """One batched forward pass over row t; stores and returns the actions."""
        out = policy.act(
            torch.from_numpy(ticks.obs[t]),
            torch.from_numpy(ticks.masks[t]),
            generator=generator,
            greedy=greedy,
        )
        actions = out.actions.numpy()
        ticks.actions[t] = actions
        ticks.log_probs[t] = out.log_probs.numpy()
        if out.values is not None:
            ticks.values[t] = out.values.numpy()
        result: list[int] = actions.tolist()
        return result

    @staticmethod
    def _values_of(policy: Policy, obs: np.ndarray) -> np.ndarray:
        predict = getattr(policy, "predict_values", None)
        if predict is None:
            return np.zeros(len(obs), np.float32)
        with torch.no_grad():
            values = predict(torch.from_numpy(obs))
        return np.zeros(len(obs), np.float32) if values is None else values.numpy()

    def _step_all(
        self, ticks: _Ticks, t: int, actions: list[int], active: Sequence[int]
    ) -> list[EpisodeSummary | None]:
        if self._pool is None:
            return [self._advance(ticks, t, i, actions[i]) for i in active]
        return list(self._pool.map(lambda i: self._advance(ticks, t, i, actions[i]), active))

    # --- the two modes ---------------------------------------------------------------

    def collect_steps(
        self,
        policy: Policy,
        num_steps: int,
        *,
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> RolloutBatch:
        """Run every environment for ``num_steps`` steps (episodes continue across calls)."""
        n, d, a = self.num_envs, self.encoder.dim, self.num_actions
        if self._slots is None:
            self._slots = [
                self._reset(i, self._obs[i], self._masks[i], seed=self.seed + i) for i in range(n)
            ]
        slots = self._slots
        ticks = _Ticks(num_steps, n, d, a, all_valid=True)
        ticks.obs[0], ticks.masks[0] = self._obs, self._masks
        episodes: list[EpisodeSummary] = []
        everyone = range(n)
        for t in range(num_steps):
            actions = self._act(policy, ticks, t, generator, greedy)
            for i, summary in enumerate(self._step_all(ticks, t, actions, everyone)):
                if summary is not None:
                    episodes.append(summary)
                    slots[i] = self._reset(i, ticks.obs[t + 1, i], ticks.masks[t + 1, i])
            if ticks.truncated_obs:
                keys = sorted(ticks.truncated_obs)
                final = np.stack([ticks.truncated_obs[k] for k in keys])
                ticks.truncated_values[t, keys] = self._values_of(policy, final)
                ticks.truncated_obs.clear()
        self._obs[:], self._masks[:] = ticks.obs[num_steps], ticks.masks[num_steps]
        batch = ticks.to_batch(num_steps, episodes)
        batch.last_values = self._values_of(policy, self._obs)
        return batch

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
        """Reset environment i to (``seeds[i]``, ``options[i]``) and run one episode each.

        With K seeds (or options), only the first K environments run (all N by
        default) and the batch has K columns. An episode still running after
        ``max_steps`` counts as truncated. Ticks after an environment's episode
        ended are marked invalid in the batch.
        """
        d, a = self.encoder.dim, self.num_actions
        given = seeds if seeds is not None else options
        n = self.num_envs if given is None else len(given)
        seeds = list(seeds) if seeds is not None else [None] * n
        options = list(options) if options is not None else [None] * n
        if len(seeds) != len(options) or not 1 <= n <= self.num_envs:
            raise ConfigError(
                f"collect_episodes runs 1 to {self.num_envs} episodes with one seed and one "
                f"options entry each, got {len(seeds)} seeds and {len(options)} options"
            )
        ticks = _Ticks(min(max_steps, 8), n, d, a, all_valid=False)
        self._slots = [
            self._reset(i, ticks.obs[0, i], ticks.masks[0, i], seed=seeds[i], options=options[i])
            for i in range(n)
        ]
        episodes: list[EpisodeSummary] = []
        active = list(range(n))
        t = 0
        while active and t < max_steps:
            if t == ticks.capacity:
                ticks.grow(min(2 * ticks.capacity, max_steps))
            actions = self._act(policy, ticks, t, generator, greedy)
            ticks.valid[t, active] = True
            still: list[int] = []
            for i, summary in zip(active, self._step_all(ticks, t, actions, active), strict=True):
                if summary is None:
                    still.append(i)
                else:
                    episodes.append(summary)
            ticks.truncated_obs.clear()  # episode mode does not bootstrap
            active = still
            t += 1
        for i in active:  # ran out of steps: truncate
            ticks.dones[t - 1, i] = 1.0
            episodes.append(self._finish(i, self._slots[i], {}, None))
        episodes.sort(key=lambda e: e.env_index)
        self._slots = None  # the next collect_steps starts from fresh resets
        return ticks.to_batch(t, episodes)

    # --- checkpointing ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The environments and in-flight episodes, pickled (for exact resumption)."""
        slots = None
        if self._slots is not None:
            slots = [
                (
                    self._obs[i].copy(),
                    self._masks[i].copy(),
                    s.info,
                    s.total_reward,
                    s.length,
                    s.num_correct,
                    s.num_decisions,
                )
                for i, s in enumerate(self._slots)
            ]
        import cloudpickle  # type: ignore[import-untyped]  # a Gymnasium dependency

        try:  # cloudpickle also pickles closures (e.g. the suite's quality checks)
            envs = cloudpickle.dumps(self.envs)
        except Exception as exc:  # not every environment pickles; resume then reseeds
            logger.warning("environments cannot be pickled (%r); a resume will reset them", exc)
            envs = None
        return {"envs": envs, "slots": pickle.dumps(slots)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; in-flight episodes get a new recorded episode."""
        if state.get("envs") is None:
            self._slots = None
            return
        self.envs = pickle.loads(state["envs"])
        slots = pickle.loads(state["slots"])
        if slots is None:
            self._slots = None
            return
        self._slots = []
        for i, (obs, mask, *rest) in enumerate(slots):
            self._obs[i], self._masks[i] = obs, mask
            self._slots.append(_Slot(*rest))


def _empty_batch(t: int, n: int, d: int, a: int) -> RolloutBatch:
    """A batch of ``t`` ticks of ``n`` environments, all zeros (masks all ones), all valid."""
    return _Ticks(t, n, d, a, all_valid=True).to_batch(t, [])


def _concat(batches: Sequence[RolloutBatch]) -> RolloutBatch:
    """Stack batches of the same environments in time (episodes end at their dones)."""
    if not batches:
        raise ConfigError("_concat needs at least one batch")
    first = batches[0]
    n = first.rewards.shape[1]
    names = sorted({k for b in batches for k in b.reward_components})
    components = {
        k: np.concatenate(
            [b.reward_components.get(k, np.zeros((b.rewards.shape[0], n))) for b in batches]
        )
        for k in names
    }
    return RolloutBatch(
        obs=np.concatenate([b.obs for b in batches]),
        actions=np.concatenate([b.actions for b in batches]),
        log_probs=np.concatenate([b.log_probs for b in batches]),
        values=np.concatenate([b.values for b in batches]),
        rewards=np.concatenate([b.rewards for b in batches]),
        dones=np.concatenate([b.dones for b in batches]),
        terminated=np.concatenate([b.terminated for b in batches]),
        truncated_values=np.concatenate([b.truncated_values for b in batches]),
        action_masks=np.concatenate([b.action_masks for b in batches]),
        valid=np.concatenate([b.valid for b in batches]),
        reward_components=components,
        last_values=np.zeros(n, np.float32),
        episodes=[e for b in batches for e in b.episodes],
    )
