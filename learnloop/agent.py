"""ToolAgent: tools + a learning tool selector + the tool reward + the recorder.

Register tools (any sync or async callable taking the task text), then call
:meth:`ToolAgent.execute_with_learning`: the selector picks a tool, the tool runs
under a timeout, the tool reward scores the call (success, speed against the
expected duration, output quality, user feedback), the selector learns from the
score, and the call is recorded as a step with its propensity (for off-policy
evaluation). A tool that raises or hangs is a failed step, never a crash.

>>> from learnloop.bandits import ToolSelector, make_policy
>>> agent = ToolAgent(ToolSelector(make_policy("epsilon_greedy"), seed=0))
>>> agent.register_tool("echo", lambda task: {"text": task}, expected_duration_s=0.5)
>>> result = agent.execute_with_learning("say hello")
>>> result.tool, result.success, result.reward.components["success"]
('echo', True, 1.0)
>>> agent.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from learnloop.bandits.selector import ToolSelector
from learnloop.errors import ClosedError, ConfigError, ToolError
from learnloop.rewards import QualityCheck, RewardSignal, ToolCallContext, ToolReward

__all__ = ["RegisteredTool", "ToolAgent", "ToolAgentConfig", "ToolExecution"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolAgentConfig:
    """Settings of a :class:`ToolAgent`."""

    timeout_s: float = 30.0
    """Default time a tool may run before its call counts as failed."""
    learning: bool = True
    """Whether rewards update the selector (the reward loop); off still scores and records."""
    agent_id: str = "default"
    """Agent id of the recorded episodes."""
    max_workers: int = 4
    """Threads running sync tools (a hung tool keeps its thread until it returns)."""

    def __post_init__(self) -> None:
        if not self.timeout_s > 0 or not math.isfinite(self.timeout_s):
            raise ConfigError(f"timeout_s must be a finite number > 0, got {self.timeout_s!r}")
        if self.max_workers < 1:
            raise ConfigError(f"max_workers must be >= 1, got {self.max_workers}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisteredTool:
    """A tool the agent can call."""

    name: str
    """The tool's name (the selector's arm)."""
    fn: Callable[[str], Any]
    """Sync or async callable taking the task text and returning the output."""
    expected_duration_s: float | None = None
    """Typical run time; faster calls earn the efficiency bonus."""
    timeout_s: float | None = None
    """Override of the agent's timeout for this tool."""
    is_async: bool = False
    """Whether ``fn`` returns an awaitable."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolExecution:
    """What one :meth:`ToolAgent.execute_with_learning` call did."""

    tool: str
    """The tool chosen and run."""
    output: Any
    """What the tool returned (None when it failed)."""
    success: bool
    """Whether the tool returned without raising or timing out."""
    error: str | None
    """Why it failed."""
    duration_s: float
    """Wall time of the tool call."""
    reward: RewardSignal
    """The tool reward, total and components."""
    value_estimate: float
    """The selector's estimate of the tool's value for this task, after the update."""
    propensity: float
    """Probability with which the tool was chosen."""
    policy_version: str
    """The selector state that made the choice."""
    episode_id: str | None
    """The episode the call was recorded in (None without a recorder)."""
    step_index: int | None
    """The step's index in that episode."""


class ToolAgent:
    """Chooses, runs, scores and learns from tools (see the module docstring).

    Args:
        selector: the learning tool selector (its tools are this agent's tools).
        reward: the tool reward; ``ToolReward()`` with the registered quality checks
            by default.
        recorder: optional :class:`~learnloop.recorder.Recorder` for the steps.
        config: timeouts, reward loop on/off, agent id.
    """

    def __init__(
        self,
        selector: ToolSelector,
        *,
        reward: ToolReward | None = None,
        recorder: Any | None = None,
        config: ToolAgentConfig | None = None,
    ) -> None:
        self.selector = selector
        self.recorder = recorder
        self.config = config or ToolAgentConfig()
        self._user_reward = reward
        self._default_reward: ToolReward | None = None
        self._quality_checks: dict[str, QualityCheck] = {}
        self._tools: dict[str, RegisteredTool] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.max_workers, thread_name_prefix="learnloop-tool"
        )
        self._closed = False

    @property
    def tools(self) -> Mapping[str, RegisteredTool]:
        return dict(self._tools)

    def register_tool(
        self,
        name: str,
        fn: Callable[[str], Any],
        *,
        expected_duration_s: float | None = None,
        quality_check: QualityCheck | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Add a tool; ``quality_check`` is a predicate on the output or a QualitySpec/dict."""
        if not callable(fn):
            raise ToolError(f"tool {name!r} must be callable, got {type(fn).__name__}")
        if expected_duration_s is not None and not expected_duration_s > 0:
            raise ToolError(
                f"expected_duration_s of {name!r} must be > 0, got {expected_duration_s}"
            )
        if timeout_s is not None and not timeout_s > 0:
            raise ToolError(f"timeout_s of {name!r} must be > 0, got {timeout_s}")
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )
        self.selector.add_tool(name)
        self._tools[name] = RegisteredTool(
            name=name,
            fn=fn,
            expected_duration_s=expected_duration_s,
            timeout_s=timeout_s,
            is_async=is_async,
        )
        if quality_check is not None:
            self._quality_checks[name] = quality_check
        self._default_reward = None  # rebuilt with the new quality checks

    def _tool_reward(self) -> ToolReward:
        if self._user_reward is not None:
            return self._user_reward
        if self._default_reward is None:
            self._default_reward = ToolReward(quality_checks=self._quality_checks)
        return self._default_reward

    # --- running one tool -----------------------------------------------------------------

    def _run(self, tool: RegisteredTool, task: str) -> tuple[Any, str | None, float]:
        timeout = tool.timeout_s or self.config.timeout_s
        start = time.perf_counter()
        try:
            if tool.is_async:
                future = self._executor.submit(asyncio.run, _with_timeout(tool.fn, task, timeout))
            else:
                future = self._executor.submit(tool.fn, task)
            output = future.result(timeout=timeout)
            return output, None, time.perf_counter() - start
        except (TimeoutError, concurrent.futures.TimeoutError):
            return None, f"timed out after {timeout:g} s", time.perf_counter() - start
        except Exception as exc:  # a failing tool is data, not an error
            return None, f"{type(exc).__name__}: {exc}", time.perf_counter() - start

    def execute_with_learning(
        self,
        task: str,
        context: str | None = None,
        user_feedback: int | None = None,
        *,
        tools: Sequence[str] | None = None,
        episode_id: str | None = None,
    ) -> ToolExecution:
        """Choose a tool for ``task``, run, score, learn and record it; tool failures never raise.

        Args:
            task: the task text (what the tool receives).
            context: task category for per-context quality checks and the record.
            user_feedback: +1, -1, 0 or None, added to the reward.
            tools: candidates (default: all registered tools).
            episode_id: record into this open episode instead of a new one.
        """
        if self._closed:
            raise ClosedError("this ToolAgent is closed; create a new one")
        if not self._tools:
            raise ToolError("no tools registered; call register_tool(name, fn) first")
        choice = self.selector.choose(task, tools)
        tool = self._tools.get(choice.tool)
        if tool is None:
            raise ToolError(
                f"the selector knows tool {choice.tool!r} but it was never registered "
                "with this agent; register_tool() it"
            )
        output, error, duration = self._run(tool, task)
        success = error is None
        signal = self._tool_reward()(
            ToolCallContext(
                tool=tool.name,
                success=success,
                duration_s=duration,
                expected_duration_s=tool.expected_duration_s,
                output=output,
                user_feedback=user_feedback,
                context=context,
            )
        )
        if self.config.learning:
            self.selector.update(choice, signal.total)
        value = self.selector.values(task, [tool.name])[tool.name]
        recorded_id, step_index = self._record(
            task, context, choice, output, success, error, duration, signal, episode_id
        )
        if not success:
            logger.info("tool %s failed on %r: %s", tool.name, task[:80], error)
        return ToolExecution(
            tool=tool.name,
            output=output,
            success=success,
            error=error,
            duration_s=duration,
            reward=signal,
            value_estimate=value,
            propensity=choice.propensity,
            policy_version=choice.policy_version,
            episode_id=recorded_id,
            step_index=step_index,
        )

    def _record(
        self,
        task: str,
        context: str | None,
        choice: Any,
        output: Any,
        success: bool,
        error: str | None,
        duration: float,
        signal: RewardSignal,
        episode_id: str | None,
    ) -> tuple[str | None, int | None]:
        if self.recorder is None:
            return None, None
        own = episode_id is None
        if own:
            episode_id = self.recorder.begin(
                task,
                agent_id=self.config.agent_id,
                kind="tool_call",
                metadata={"context": context} if context else None,
                versions={"policy": choice.policy_version},
            )
        state = {**choice.log_state(), "task": task}
        index = self.recorder.step(
            episode_id,
            f"call {choice.tool}",
            tool=choice.tool,
            state=state,
            result=output,
            reward=signal.total,
            reward_components=dict(signal.components),
            success=success,
            error=error,
            duration_s=duration,
            lenient=True,
        )
        if own:
            self.recorder.complete(episode_id, status="success" if success else "failure")
        return episode_id, index

    def close(self) -> None:
        """Stop the tool threads (a hung tool's thread is abandoned, not joined)."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> ToolAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _with_timeout(fn: Callable[[str], Any], task: str, timeout: float) -> Any:
    return await asyncio.wait_for(fn(task), timeout)
