"""Rollout collection: N environments stepped concurrently, one batched forward pass.

The :class:`RolloutCollector` holds N Gymnasium environments and advances them in
lockstep: at each tick it encodes the N observations, asks the policy for N
actions in one forward pass, and steps every environment (inline, or on a thread
pool when ``step_workers > 0`` for environments that wait on I/O). So 8 attempts
take about as long as one plus the batching overhead, not 8 times as long.

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
import torch

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

    def begin(self, task: str, **fields: Any) -> Any: ...

    def step(self, episode_id: Any, action: str, **fields: Any) -> Any: ...

    def complete(self, episode_id: Any, **fields: Any) -> Any: ...


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

    def __call__(self, obs: Any) -> np.ndarray:
        if self._box:
            return np.asarray(obs, dtype=np.float32).reshape(-1)
        return np.asarray(gym.spaces.flatten(self.space, obs), dtype=np.float32)


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
    """What the collector tracks for one environment between ticks."""

    obs: np.ndarray
    mask: np.ndarray
    info: dict[str, Any]
    total_reward: float = 0.0
    length: int = 0
    num_correct: int = 0
    num_decisions: int = 0
    episode_id: Any = None


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

    def _mask_of(self, info: Mapping[str, Any]) -> np.ndarray:
        mask = info.get("action_mask")
        if mask is None:
            return np.ones(self.num_actions, dtype=np.int8)
        mask = np.asarray(mask, dtype=np.int8).reshape(-1)
        if mask.shape[0] != self.num_actions:
            raise InvalidInputError(
                f"info['action_mask'] has {mask.shape[0]} entries for {self.num_actions} "
                "actions; the environment must give one flag per action"
            )
        return mask

    def _reset(
        self, i: int, *, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> _Slot:
        obs, info = self.envs[i].reset(seed=seed, options=dict(options) if options else None)
        return _Slot(obs=self.encoder(obs), mask=self._mask_of(info), info=dict(info))

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
            return None, 0.0, True, False, dict(info), f"non-finite reward {reward!r}"
        return obs, reward, bool(terminated), bool(truncated), dict(info), None

    def _record_step(
        self, slot: _Slot, action: int, reward: float, info: Mapping[str, Any], error: str | None
    ) -> None:
        if self.recorder is None:
            return
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

    def _advance(
        self, i: int, slot: _Slot, action: int
    ) -> tuple[float, bool, bool, np.ndarray | None, dict[str, Any], EpisodeSummary | None]:
        """Step env i; returns (reward, done, terminated, final obs if truncated, info, summary)."""
        best = slot.info.get("best_tool")
        if best is not None:
            name, _ = self._action_name(slot, action)
            slot.num_decisions += 1
            slot.num_correct += int(name == str(best))
        obs, reward, terminated, truncated, info, error = self._step_env(i, action)
        slot.total_reward += reward
        slot.length += 1
        self._record_step(slot, action, reward, info, error)
        if error is not None:
            terminated = True
        if terminated or truncated:
            final_obs = self.encoder(obs) if truncated and not terminated else None
            return reward, True, terminated, final_obs, info, self._finish(i, slot, info, error)
        slot.obs, slot.mask, slot.info = self.encoder(obs), self._mask_of(info), info
        return reward, False, False, None, info, None

    # --- policy calls ----------------------------------------------------------------

    def _policy_step(
        self,
        policy: Policy,
        obs: np.ndarray,
        masks: np.ndarray,
        generator: torch.Generator | None,
        greedy: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = policy.act(
            torch.from_numpy(obs), torch.from_numpy(masks), generator=generator, greedy=greedy
        )
        values = out.values.numpy() if out.values is not None else np.zeros(len(obs), np.float32)
        return out.actions.numpy(), out.log_probs.numpy(), values

    @staticmethod
    def _values_of(policy: Policy, obs: np.ndarray) -> np.ndarray:
        predict = getattr(policy, "predict_values", None)
        if predict is None:
            return np.zeros(len(obs), np.float32)
        with torch.no_grad():
            values = predict(torch.from_numpy(obs))
        return np.zeros(len(obs), np.float32) if values is None else values.numpy()

    def _step_all(self, actions: np.ndarray, active: Sequence[int]) -> list[Any]:
        slots = self._slots
        assert slots is not None
        if self._pool is None:
            return [self._advance(i, slots[i], int(actions[i])) for i in active]
        return list(self._pool.map(lambda i: self._advance(i, slots[i], int(actions[i])), active))

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
        if self._slots is None:
            self._slots = [self._reset(i, seed=self.seed + i) for i in range(self.num_envs)]
        n, d, a = self.num_envs, self.encoder.dim, self.num_actions
        batch = _empty_batch(num_steps, n, d, a)
        everyone = list(range(n))
        for t in range(num_steps):
            obs = np.stack([s.obs for s in self._slots])
            masks = np.stack([s.mask for s in self._slots])
            actions, log_probs, values = self._policy_step(policy, obs, masks, generator, greedy)
            results = self._step_all(actions, everyone)
            truncated_obs: dict[int, np.ndarray] = {}
            for i, (reward, done, terminated, final_obs, info, summary) in enumerate(results):
                batch.rewards[t, i] = reward
                batch.dones[t, i] = float(done)
                batch.terminated[t, i] = float(terminated)
                _store_components(batch, t, i, info, num_steps, n)
                if final_obs is not None:
                    truncated_obs[i] = final_obs
                if summary is not None:
                    batch.episodes.append(summary)
                    self._slots[i] = self._reset(i)
            if truncated_obs:
                keys = sorted(truncated_obs)
                boot = self._values_of(policy, np.stack([truncated_obs[k] for k in keys]))
                batch.truncated_values[t, keys] = boot
            batch.obs[t], batch.action_masks[t] = obs, masks
            batch.actions[t], batch.log_probs[t], batch.values[t] = actions, log_probs, values
        batch.last_values = self._values_of(policy, np.stack([s.obs for s in self._slots]))
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
        """Reset every environment (``seeds[i]``, ``options[i]``) and run one episode each.

        An episode still running after ``max_steps`` counts as truncated. Ticks after
        an environment's episode ended are marked invalid in the batch.
        """
        n, d, a = self.num_envs, self.encoder.dim, self.num_actions
        seeds = list(seeds) if seeds is not None else [None] * n
        options = list(options) if options is not None else [None] * n
        if len(seeds) != n or len(options) != n:
            raise ConfigError(
                f"collect_episodes needs one seed and one options entry per environment ({n}), "
                f"got {len(seeds)} and {len(options)}"
            )
        self._slots = [self._reset(i, seed=seeds[i], options=options[i]) for i in range(n)]
        rows: list[RolloutBatch] = []
        episodes: list[EpisodeSummary] = []
        active = list(range(n))
        for _ in range(max_steps):
            if not active:
                break
            row = _empty_batch(1, n, d, a)
            row.valid[:] = False
            obs = np.stack([s.obs for s in self._slots])
            masks = np.stack([s.mask for s in self._slots])
            actions, log_probs, values = self._policy_step(policy, obs, masks, generator, greedy)
            results = self._step_all(actions, active)
            still: list[int] = []
            for i, (reward, done, terminated, _, info, summary) in zip(
                active, results, strict=True
            ):
                row.valid[0, i] = True
                row.rewards[0, i] = reward
                row.dones[0, i] = float(done)
                row.terminated[0, i] = float(terminated)
                _store_components(row, 0, i, info, 1, n)
                if summary is not None:
                    episodes.append(summary)
                else:
                    still.append(i)
            row.obs[0], row.action_masks[0] = obs, masks
            row.actions[0], row.log_probs[0], row.values[0] = actions, log_probs, values
            rows.append(row)
            active = still
        for i in active:  # ran out of steps: truncate
            slot = self._slots[i]
            rows[-1].dones[0, i] = 1.0
            episodes.append(self._finish(i, slot, {}, None))
        batch = _concat(rows, n, d, a)
        batch.episodes = sorted(episodes, key=lambda e: e.env_index)
        self._slots = None  # the next collect_steps starts from fresh resets
        return batch

    # --- checkpointing ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The environments and in-flight episodes, pickled (for exact resumption)."""
        slots = None
        if self._slots is not None:
            slots = [
                (s.obs, s.mask, s.info, s.total_reward, s.length, s.num_correct, s.num_decisions)
                for s in self._slots
            ]
        import cloudpickle  # a Gymnasium dependency; pickles closures (e.g. quality checks)

        try:
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
        self._slots = None if slots is None else [_Slot(*s) for s in slots]


def _empty_batch(t: int, n: int, d: int, a: int) -> RolloutBatch:
    return RolloutBatch(
        obs=np.zeros((t, n, d), np.float32),
        actions=np.zeros((t, n), np.int64),
        log_probs=np.zeros((t, n), np.float32),
        values=np.zeros((t, n), np.float32),
        rewards=np.zeros((t, n), np.float64),
        dones=np.zeros((t, n), np.float64),
        terminated=np.zeros((t, n), np.float64),
        truncated_values=np.zeros((t, n), np.float64),
        action_masks=np.ones((t, n, a), np.int8),
        valid=np.ones((t, n), bool) if t else np.zeros((0, n), bool),
        last_values=np.zeros(n, np.float32),
    )


def _store_components(
    batch: RolloutBatch, t: int, i: int, info: Mapping[str, Any], num_t: int, num_envs: int
) -> None:
    components = info.get("reward_components")
    if not components:
        return
    for name, value in components.items():
        if name not in batch.reward_components:
            batch.reward_components[name] = np.zeros((num_t, num_envs), np.float64)
        batch.reward_components[name][t, i] = float(value)


def _concat(rows: list[RolloutBatch], n: int, d: int, a: int) -> RolloutBatch:
    if not rows:
        return _empty_batch(0, n, d, a)
    names = sorted({k for r in rows for k in r.reward_components})
    components = {
        k: np.concatenate([r.reward_components.get(k, np.zeros((1, n))) for r in rows], axis=0)
        for k in names
    }
    return RolloutBatch(
        obs=np.concatenate([r.obs for r in rows]),
        actions=np.concatenate([r.actions for r in rows]),
        log_probs=np.concatenate([r.log_probs for r in rows]),
        values=np.concatenate([r.values for r in rows]),
        rewards=np.concatenate([r.rewards for r in rows]),
        dones=np.concatenate([r.dones for r in rows]),
        terminated=np.concatenate([r.terminated for r in rows]),
        truncated_values=np.concatenate([r.truncated_values for r in rows]),
        action_masks=np.concatenate([r.action_masks for r in rows]),
        valid=np.concatenate([r.valid for r in rows]),
        reward_components=components,
        last_values=np.zeros(n, np.float32),
    )
