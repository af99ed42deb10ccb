"""The suite as a Gymnasium environment: one env episode is one task, one action per sub-task.

Observation (``Box(0, 1, float32)`` of length ``feature_dim + len(tools) + 2``):

* ``[0, feature_dim)``: :meth:`ToolUseSuite.featurize` of the current sub-task's
  text (hashed bag of words + bigrams, unit L2 norm);
* ``[feature_dim, feature_dim + len(tools))``: one-hot of the previous action's tool
  (all zero at the first sub-task);
* then 1.0 if the previous call succeeded (0 at the first sub-task);
* then the sub-task's position ``index / MAX_SUBTASKS``.

Action: ``Discrete(len(suite.tools))``, the index of the tool to call. Reward: the
total of :class:`~learnloop.rewards.ToolReward` on the call (success ±1, efficiency,
quality bonus), with its components in ``info["reward_components"]``. The episode
terminates after the last sub-task, or at the first failed call when
``EnvConfig.stop_on_failure`` (a broken chain cannot go on); ``info["task_success"]``
then says whether every sub-task succeeded.

``info`` always has ``task_text``, ``task_id``, ``split``, ``subtask_text``,
``subtask_type``, ``action_mask`` (int8, 1 per available tool), ``tools``,
``best_tool`` (for the sub-task the observation shows) and ``reward_components``
(empty after ``reset``); after ``step`` also ``tool``, ``success``, ``error``,
``duration_s``, ``output``, ``success_probability`` and ``decision_best_tool``
(the best tool for the decision just taken).

Recording: pass ``recorder=Recorder(...)`` and every env episode is recorded as an
:class:`~learnloop.episode.Episode`, one step per tool call with its reward
components, metadata ``{"task_type", "split", "task_id", ...}`` and expected outcome
``{"success": True}``.

The decision index used for the suite's degradation (non-stationary option) counts
the env's tool calls since construction; ``reset(options={"decision_index": n})``
sets it, ``reset(options={"task_index": i})`` picks a task of the split.

    >>> env = ToolUseEnv(ToolUseSuite(SuiteConfig(num_tasks=50)))
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape == env.observation_space.shape, info["tools"][:2]
    (True, ('web_search', 'doc_search'))
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from learnloop.envs.suite import Split, SubTask, SuiteConfig, Task, ToolResult, ToolUseSuite
from learnloop.errors import ConfigError, InvalidInputError
from learnloop.rewards import RewardSignal, ToolCallContext, ToolReward

__all__ = ["MAX_SUBTASKS", "EnvConfig", "ToolUseEnv", "make_tool_use_env"]

logger = logging.getLogger(__name__)

#: Longest chain of sub-tasks a task can have (scales the step-position feature).
MAX_SUBTASKS = 4

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> tuple[int, int]:
    """One SplitMix64 step: (next state, output), the usual way to expand a seed."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x, z ^ (z >> 31)


def _pcg64_state(words: Sequence[int]) -> dict[str, Any]:
    """A PCG64 state from four 64-bit words: the 128-bit state, then the (odd) increment."""
    a, b, c, d = words
    return {
        "bit_generator": "PCG64",
        "state": {"state": (a << 64) | b, "inc": ((c << 64) | d) | 1},
        "has_uint32": 0,
        "uinteger": 0,
    }


def _seed_words(seed: int) -> list[int]:
    """Four 64-bit words for ``seed``: SplitMix64 outputs, or SeedSequence's beyond 64 bits.

    Gymnasium's ``np_random(seed)`` goes through ``SeedSequence`` and builds a new
    generator, ~14 us; SplitMix64 and a state set on the env's generator cost ~3 us,
    and a collector resets every attempt with a seed. Seeds of more than 64 bits are
    rare and go through ``SeedSequence``, which hashes every bit (a cheap fold collides).
    """
    if seed > _MASK64:
        return [int(w) for w in np.random.SeedSequence(seed).generate_state(4, np.uint64)]
    words = []
    for _ in range(4):
        seed, word = _splitmix64(seed)
        words.append(word)
    return words


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvConfig:
    """How :class:`ToolUseEnv` runs the suite."""

    stop_on_failure: bool = True
    """End the episode at the first failed call (the task has failed)."""
    sequential: bool = False
    """Walk the split's tasks in order (wrapping) instead of sampling them uniformly."""
    agent_id: str = "tool-use-env"
    """Agent id of the recorded episodes."""

    def __post_init__(self) -> None:
        if not self.agent_id:
            raise ConfigError("agent_id must be a non-empty string, e.g. 'tool-use-env'")


class ToolUseEnv(gym.Env[np.ndarray, np.int64]):
    """Gymnasium environment over the built-in tool-use suite (see the module docstring).

    Args:
        suite: The suite; ``ToolUseSuite()`` (seed 0) when None.
        split: Which tasks to serve, ``"train"`` or ``"heldout"``.
        config: Episode behaviour; ``EnvConfig()`` by default.
        reward: The per-call reward; ``ToolReward`` with the suite's quality checks
            by default.
        recorder: Records every env episode when given (a ``learnloop.recorder.Recorder``).
        render_mode: None or ``"ansi"`` (render returns the task and progress as text).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012 - Gymnasium's API

    def __init__(
        self,
        suite: ToolUseSuite | None = None,
        split: Split = "train",
        *,
        config: EnvConfig | None = None,
        reward: ToolReward | None = None,
        recorder: Any = None,
        render_mode: Literal["ansi"] | None = None,
    ) -> None:
        self.suite = suite if suite is not None else ToolUseSuite()
        self.split: Split = split
        self._tasks = self.suite.tasks(split)  # validates the split
        self.config = config if config is not None else EnvConfig()
        self.reward_fn = (
            reward
            if reward is not None
            else ToolReward(quality_checks=dict(self.suite.quality_checks))
        )
        self.recorder = recorder
        if render_mode not in (None, "ansi"):
            raise ConfigError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.render_mode = render_mode
        num_tools = len(self.suite.tools)
        self._feature_dim = self.suite.feature_dim
        self._observation_size = self._feature_dim + num_tools + 2
        self.observation_space = spaces.Box(
            low=0.0,
            high=1.0,
            shape=(self._observation_size,),
            dtype=np.float32,
        )
        self.action_space = spaces.Discrete(num_tools)
        self._action_mask = np.ones(num_tools, dtype=np.int8)
        self._task: Task | None = None
        self._position = 0
        self._previous_tool: int | None = None
        self._previous_success = False
        self._done = True
        self._next_task = 0
        self._decision_index = 0
        self._episode_id: str | None = None
        self._completed = 0

    # --- properties ----------------------------------------------------------------

    @property
    def task(self) -> Task | None:
        """The task of the current env episode (None before the first reset)."""
        return self._task

    @property
    def decision_index(self) -> int:
        """Tool calls made by this env so far (drives the suite's degradation)."""
        return self._decision_index

    @property
    def episode_id(self) -> str | None:
        """Id of the episode being recorded, when a recorder is attached."""
        return self._episode_id

    # --- gymnasium API -----------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self._reseed(seed)
        options = options or {}
        self._abort_recording("reset before the task ended")
        if "decision_index" in options:
            index = options["decision_index"]
            if not isinstance(index, int) or index < 0:
                raise InvalidInputError(
                    f"options['decision_index'] must be an int >= 0, got {index!r}"
                )
            self._decision_index = index
        self._task = self._choose_task(options)
        self._position = 0
        self._previous_tool = None
        self._previous_success = False
        self._done = False
        self._completed = 0
        if self.recorder is not None:
            self._begin_recording(self._task)
        return self._observation(), self._info()

    def step(
        self, action: np.int64 | int
    ) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._task is None or self._done:
            raise InvalidInputError(
                "step() called on a finished episode; call reset() to start the next task"
            )
        if isinstance(action, np.ndarray) and action.shape == () and action.dtype.kind in "iu":
            action = action.item()  # a 0-d integer array, as vectorised policies return
        if (
            isinstance(action, bool)
            or not isinstance(action, (int, np.integer))
            or not 0 <= action < len(self.suite.tools)
        ):
            raise InvalidInputError(
                f"action must be an int in [0, {len(self.suite.tools)}), got {action!r}; "
                "it indexes suite.tools"
            )
        action = int(action)
        task = self._task
        subtask = task.subtasks[self._position]
        suite = self.suite
        tool = suite.tools[action]
        result = suite.execute(subtask, tool, self.np_random, self._decision_index)
        self._decision_index += 1
        signal = self._score(tool, subtask, result)
        components = dict(signal.components)
        if self._episode_id is not None:
            self._record_step(tool, result, signal.total, components)
        self._completed += int(result.success)
        last = self._position == len(task.subtasks) - 1
        stopped = not result.success and self.config.stop_on_failure
        terminated = last or stopped
        if not terminated:
            self._position += 1
        self._previous_tool = action
        self._previous_success = result.success
        shown = task.subtasks[self._position]
        # _info()'s entries, then the call's, in one literal (the same keys in the same order)
        info = {
            "task_text": task.text,
            "task_id": task.id,
            "task_type": task.task_type,
            "split": self.split,
            "subtask_text": shown.text,
            "subtask_type": shown.task_type,
            "subtask_index": self._position,
            "num_subtasks": len(task.subtasks),
            "action_mask": self._action_mask.copy(),
            "tools": suite.tools,
            "best_tool": shown.best_tool,
            "reward_components": components,
            "tool": tool,
            "success": result.success,
            "error": result.error,
            "duration_s": result.duration_s,
            "output": result.output,
            "success_probability": result.probability,
            "decision_best_tool": subtask.best_tool,
        }
        if terminated:
            self._done = True
            task_success = self._completed == len(task.subtasks)
            info["task_success"] = task_success
            self._complete_recording(task_success)
        return self._observation(), float(signal.total), terminated, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._task is None:
            return "(no task yet: call reset())\n"
        lines = [f"task {self._task.id}: {self._task.text}"]
        for i, subtask in enumerate(self._task.subtasks):
            mark = "x" if i < self._position or self._done else ">" if i == self._position else " "
            lines.append(f" [{mark}] {subtask.text}")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self._abort_recording("environment closed")
        super().close()

    # --- internals -------------------------------------------------------------------

    def _reseed(self, seed: int) -> None:
        """What ``gym.Env.reset(seed=seed)`` does, with a cheaper seed-to-state map.

        The same seed gives the same stream (across processes and versions of
        NumPy), different seeds independent-looking ones. Unlike Gymnasium's, the
        generator object is kept and its state replaced: a reference to
        ``env.np_random`` taken earlier follows the reseed.
        """
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InvalidInputError(
                f"seed must be an int >= 0 (or None to continue the stream), got {seed!r}"
            )
        seed = int(seed)
        generator = self._np_random
        if generator is None or type(generator.bit_generator) is not np.random.PCG64:
            generator = np.random.Generator(np.random.PCG64())
        generator.bit_generator.state = _pcg64_state(_seed_words(seed))
        self._np_random, self._np_random_seed = generator, seed

    def _choose_task(self, options: Mapping[str, Any]) -> Task:
        if "task_index" in options:
            index = options["task_index"]
            if not isinstance(index, int) or not 0 <= index < len(self._tasks):
                raise InvalidInputError(
                    f"options['task_index'] must be an int in [0, {len(self._tasks)}), "
                    f"got {index!r}"
                )
            return self._tasks[index]
        if self.config.sequential:
            task = self._tasks[self._next_task % len(self._tasks)]
            self._next_task += 1
            return task
        return self._tasks[int(self.np_random.integers(len(self._tasks)))]

    def _score(self, tool: str, subtask: SubTask, result: ToolResult) -> RewardSignal:
        """The reward of one call: ``reward_fn(ToolCallContext(...))``.

        The default reward with durations that need no checking (finite floats >= 0,
        as the suite draws them) takes a shortcut that builds no context and skips
        re-checking the parts; the result is the same signal.
        """
        reward_fn = self.reward_fn
        duration = result.duration_s
        expected = self.suite.expected_duration(tool)
        if (
            type(reward_fn) is ToolReward
            and type(duration) is float
            and 0.0 <= duration < math.inf
            and type(expected) is float
            and 0.0 <= expected < math.inf
        ):
            return reward_fn._score_call(
                tool, result.success, duration, expected, result.output, subtask.task_type
            )
        return reward_fn(
            ToolCallContext(
                tool=tool,
                success=result.success,
                duration_s=duration,
                expected_duration_s=expected,
                output=result.output,
                context=subtask.task_type,
            )
        )

    def _observation(self) -> np.ndarray:
        assert self._task is not None
        subtask = self._task.subtasks[self._position]
        observation = np.zeros(self._observation_size, dtype=np.float32)
        suite = self.suite
        # the suite's cached features without a copy, unless a subclass changed featurize
        features = (
            suite._features(subtask.text)
            if type(suite).featurize is ToolUseSuite.featurize
            else suite.featurize(subtask.text)
        )
        observation[: self._feature_dim] = features
        if self._previous_tool is not None:
            observation[self._feature_dim + self._previous_tool] = 1.0
        observation[-2] = float(self._previous_success)
        observation[-1] = self._position / MAX_SUBTASKS
        return observation

    def _info(self) -> dict[str, Any]:
        assert self._task is not None
        subtask = self._task.subtasks[self._position]
        return {
            "task_text": self._task.text,
            "task_id": self._task.id,
            "task_type": self._task.task_type,
            "split": self.split,
            "subtask_text": subtask.text,
            "subtask_type": subtask.task_type,
            "subtask_index": self._position,
            "num_subtasks": len(self._task.subtasks),
            "action_mask": self._action_mask.copy(),
            "tools": self.suite.tools,
            "best_tool": subtask.best_tool,
            "reward_components": {},
        }

    # --- recording ---------------------------------------------------------------------

    def _begin_recording(self, task: Task) -> None:
        self._episode_id = self.recorder.begin(
            task.text,
            agent_id=self.config.agent_id,
            kind="task",
            expected_outcome={"success": True},
            metadata={
                "task_type": task.task_type,
                "split": task.split,
                "task_id": task.id,
                "subtask_types": [subtask.task_type for subtask in task.subtasks],
                "suite_seed": self.suite.config.seed,
                "env": "learnloop/ToolUse-v0",
            },
        )

    def _record_step(
        self, tool: str, result: ToolResult, total: float, components: dict[str, float]
    ) -> None:
        assert self._task is not None and self._episode_id is not None
        subtask = self._task.subtasks[self._position]
        self.recorder.step(
            self._episode_id,
            tool,
            tool=tool,
            state={
                "subtask": subtask.text,
                "subtask_index": self._position,
                "subtask_type": subtask.task_type,
            },
            result=result.output,
            reward=total,
            reward_components=components,
            success=result.success,
            error=result.error,
            duration_s=result.duration_s,
            metadata={"best_tool": subtask.best_tool},
        )

    def _complete_recording(self, task_success: bool) -> None:
        if self._episode_id is None or self._task is None:
            return
        episode_id, self._episode_id = self._episode_id, None
        self.recorder.complete(
            episode_id,
            status="success" if task_success else "failure",
            outcome={
                "success": task_success,
                "subtasks_succeeded": self._completed,
                "num_subtasks": len(self._task.subtasks),
            },
        )

    def _abort_recording(self, reason: str) -> None:
        if self._episode_id is None or self.recorder is None:
            return
        episode_id, self._episode_id = self._episode_id, None
        self.recorder.complete(episode_id, status="aborted", reason=reason)


def make_tool_use_env(
    *,
    seed: int = 0,
    split: Split = "train",
    suite_config: SuiteConfig | None = None,
    config: EnvConfig | None = None,
    recorder: Any = None,
    render_mode: Literal["ansi"] | None = None,
) -> ToolUseEnv:
    """Build a :class:`ToolUseEnv` from plain arguments (the ``gymnasium.make`` entry point).

    Args:
        seed: Seed of the suite, used when ``suite_config`` is None.
        split: ``"train"`` or ``"heldout"``.
        suite_config: Full suite config; overrides ``seed``.
        config: Episode behaviour.
        recorder: Records every env episode when given.
        render_mode: None or ``"ansi"``.

    >>> import gymnasium
    >>> env = gymnasium.make("learnloop/ToolUse-v0", split="heldout")
    >>> env.unwrapped.split
    'heldout'
    """
    suite = ToolUseSuite(suite_config if suite_config is not None else SuiteConfig(seed=seed))
    return ToolUseEnv(suite, split, config=config, recorder=recorder, render_mode=render_mode)
