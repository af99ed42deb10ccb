"""The LLM agent of the built-in suite: a language model picks the tool, under a prompt template.

For each sub-task (one tool decision) :class:`LLMToolAgent` renders its
:class:`~learnloop.prompts.template.PromptTemplate` into chat messages, asks the
model for the tool with the answer constrained by a GBNF grammar to the suite's
tool names (temperature 0 by default), then runs the chosen tool in the suite.

What an attempt is scored on (a decision, documented here once):

* ``success_probability``: the suite's probability that the chosen tool succeeds
  on the sub-task, i.e. the expected success of really running it. It is the
  **score** the optimizer compares candidates on, because it has no sampling
  noise: two prompts that choose the same tools score the same;
* ``success``: the outcome of really executing the tool
  (:meth:`~learnloop.envs.ToolUseSuite.execute`) with a generator seeded by the
  agent's seed and the sub-task's text, so every prompt faces the same draw on the
  same sub-task (common random numbers: a paired comparison); it is what episodes
  record and what the tool reward scores;
* ``correct``: the chosen tool is the sub-task's best tool (tool accuracy).

The model call is real in every case; only the tool's execution is simulated by
the suite. Calls run in ``num_workers`` threads; results come back in input
order whatever order the threads finish in, so a replayed run is identical.

Every attempt is recorded as one episode (agent ``llm-agent``, kind
``tool_choice``, ``versions={"prompt": <template fingerprint>}``) when a
:class:`~learnloop.recorder.Recorder` is given; the optimizer's ``add_example``
draws worked examples from the successful ones.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from learnloop.envs import SubTask, ToolUseSuite
from learnloop.errors import ConfigError, LLMError
from learnloop.prompts.llm import ChatRequest, LLMClient
from learnloop.prompts.template import PromptTemplate
from learnloop.recorder import Recorder
from learnloop.rewards import ToolCallContext, ToolReward

__all__ = [
    "AgentConfig",
    "Attempt",
    "Evaluation",
    "LLMToolAgent",
    "PromptEvaluator",
    "explore_tools",
    "tool_grammar",
]

logger = logging.getLogger(__name__)


def tool_grammar(tools: Sequence[str]) -> str:
    """A GBNF grammar whose only sentences are the tool names.

    >>> tool_grammar(["file_read", "web_search"])
    'root ::= "file_read" | "web_search"'
    """
    if not tools:
        raise ConfigError("tool_grammar needs at least one tool name")
    return "root ::= " + " | ".join(f'"{tool}"' for tool in tools)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One sub-task attempted by an agent under one prompt."""

    task: str
    """The sub-task's text."""
    chosen: str
    """The tool the agent called ("" when the model's answer named no tool)."""
    best_tool: str
    """The sub-task's best tool (ground truth of the suite; used for accuracy and critique)."""
    success_probability: float
    """Probability that the chosen tool succeeds here: the score (see the module docstring)."""
    success: bool
    """Whether the executed tool call succeeded."""
    reward: float
    """The tool reward of the executed call."""

    @property
    def correct(self) -> bool:
        """The chosen tool is the best one."""
        return self.chosen == self.best_tool


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The attempts of one prompt on a batch of sub-tasks, in batch order."""

    attempts: tuple[Attempt, ...]

    @property
    def scores(self) -> np.ndarray:
        """Per-attempt score (expected success), shape ``(len(attempts),)``."""
        return np.array([a.success_probability for a in self.attempts], dtype=np.float64)

    @property
    def success(self) -> float:
        """Mean expected success."""
        return float(self.scores.mean()) if self.attempts else 0.0

    @property
    def sampled_success(self) -> float:
        """Share of executed calls that succeeded."""
        return float(np.mean([a.success for a in self.attempts])) if self.attempts else 0.0

    @property
    def accuracy(self) -> float:
        """Share of attempts that chose the best tool."""
        return float(np.mean([a.correct for a in self.attempts])) if self.attempts else 0.0

    @property
    def mean_reward(self) -> float:
        """Mean tool reward."""
        return float(np.mean([a.reward for a in self.attempts])) if self.attempts else 0.0

    def failures(self) -> list[Attempt]:
        """The attempts whose executed call failed."""
        return [a for a in self.attempts if not a.success]

    def summary(self) -> dict[str, float]:
        """success, sampled_success, accuracy, mean_reward and n, for JSON."""
        return {
            "success": self.success,
            "sampled_success": self.sampled_success,
            "accuracy": self.accuracy,
            "mean_reward": self.mean_reward,
            "n": float(len(self.attempts)),
        }


@runtime_checkable
class PromptEvaluator(Protocol):
    """Runs an agent with a prompt on sub-tasks: what the optimizer scores candidates with."""

    def evaluate(self, template: PromptTemplate, subtasks: Sequence[SubTask]) -> Evaluation:
        """One :class:`Attempt` per sub-task, in the order given."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """How the LLM agent calls its model and runs its tools."""

    agent_id: str = "llm-agent"
    """Agent id of the recorded episodes."""
    temperature: float = 0.0
    """Sampling temperature of the tool choice (0: greedy, reproducible)."""
    max_tokens: int = 16
    """Most tokens of an answer (the longest tool name fits in about 6)."""
    num_workers: int = 2
    """Model calls in flight at once (threads)."""
    seed: int = 0
    """Seed of the tool executions (and of sampled answers when temperature > 0)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(f"temperature must lie in [0, 2], got {self.temperature!r}")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens!r}")
        if self.num_workers < 1:
            raise ConfigError(f"num_workers must be >= 1, got {self.num_workers!r}")
        if not self.agent_id:
            raise ConfigError("agent_id is empty; e.g. llm-agent")


def _outcome_rng(seed: int, text: str) -> np.random.Generator:
    """The generator of a sub-task's tool execution: same seed and text, same draw."""
    return np.random.default_rng([seed, zlib.crc32(text.encode("utf-8"))])


class LLMToolAgent:
    """Chooses tools for the suite's sub-tasks with a language model (see the module docstring).

    Args:
        client: Any :class:`~learnloop.prompts.llm.LLMClient` (thread-safe).
        suite: The tool-use suite whose tools it chooses from and runs.
        config: Calls, threads, seed.
        recorder: Records one episode per attempt when given.
        reward: The tool reward of an executed call; ``ToolReward()`` with the
            suite's quality checks by default.
    """

    def __init__(
        self,
        client: LLMClient,
        suite: ToolUseSuite,
        config: AgentConfig | None = None,
        *,
        recorder: Recorder | None = None,
        reward: ToolReward | None = None,
    ) -> None:
        self.client = client
        self.suite = suite
        self.config = config if config is not None else AgentConfig()
        self.recorder = recorder
        self.reward = (
            reward if reward is not None else ToolReward(quality_checks=dict(suite.quality_checks))
        )
        self.tools: Mapping[str, str] = dict(suite.tool_descriptions)
        self.grammar = tool_grammar(list(self.tools))

    def request(self, template: PromptTemplate, task: str) -> ChatRequest:
        """The chat request that asks for the tool of ``task``."""
        seed = None if self.config.temperature == 0 else self.config.seed
        return ChatRequest(
            messages=template.render(self.tools, task),
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            grammar=self.grammar,
            seed=seed,
        )

    def choose(self, template: PromptTemplate, task: str) -> str:
        """The tool the model picks for ``task`` ("" if its answer names none)."""
        try:
            answer = self.client.complete(self.request(template, task)).text.strip()
        except LLMError as exc:  # a failed call is a failed attempt, recorded as data
            logger.warning("tool choice for %r failed: %s", task[:60], exc)
            return ""
        return answer if answer in self.tools else ""

    def attempt(self, template: PromptTemplate, subtask: SubTask) -> Attempt:
        """Choose a tool for ``subtask``, run it in the suite, score and record it."""
        chosen = self.choose(template, subtask.text)
        if chosen:
            result = self.suite.execute(
                subtask, chosen, _outcome_rng(self.config.seed, subtask.text)
            )
            probability, success = result.probability, result.success
            signal = self.reward(
                ToolCallContext(
                    tool=chosen,
                    success=success,
                    duration_s=result.duration_s,
                    expected_duration_s=self.suite.expected_duration(chosen),
                    output=result.output,
                )
            )
            output, error, duration = result.output, result.error, result.duration_s
        else:
            probability, success, output, duration = 0.0, False, None, 0.0
            error = "the model's answer named no tool"
            signal = self.reward(ToolCallContext(tool="", success=False))
        if self.recorder is not None:
            episode = self.recorder.begin(
                subtask.text,
                agent_id=self.config.agent_id,
                kind="tool_choice",
                metadata={"task_type": subtask.task_type},
                versions={"prompt": template.fingerprint()},
            )
            self.recorder.step(
                episode,
                f"call {chosen or '(none)'}",
                tool=chosen or None,
                result=output,
                reward=signal.total,
                reward_components=signal.components,
                success=success,
                error=error,
                duration_s=duration,
            )
            self.recorder.complete(
                episode, status="success" if success else "failure", reward=signal.total
            )
        return Attempt(
            task=subtask.text,
            chosen=chosen,
            best_tool=subtask.best_tool,
            success_probability=probability,
            success=success,
            reward=signal.total,
        )

    def evaluate(self, template: PromptTemplate, subtasks: Sequence[SubTask]) -> Evaluation:
        """Attempt every sub-task with ``template``; attempts come back in input order.

        Raises:
            BudgetExceededError: the client's budget ran out (the batch is abandoned).
        """
        run: Callable[[SubTask], Attempt] = lambda sub: self.attempt(template, sub)  # noqa: E731
        if self.config.num_workers == 1 or len(subtasks) < 2:
            return Evaluation(tuple(run(sub) for sub in subtasks))
        with ThreadPoolExecutor(self.config.num_workers, thread_name_prefix="llm-agent") as pool:
            return Evaluation(tuple(pool.map(run, subtasks)))

    def __repr__(self) -> str:
        return f"LLMToolAgent({self.client!r}, tools={len(self.tools)})"


def explore_tools(
    suite: ToolUseSuite,
    subtasks: Sequence[SubTask],
    recorder: Recorder,
    *,
    trials_per_tool: int = 2,
    seed: int = 0,
    agent_id: str = "explorer",
) -> int:
    """Try every tool on each sub-task ``trials_per_tool`` times and record each call.

    Gives a fresh store the successful episodes that worked examples are drawn
    from, without any model call: the tools are really executed in the suite and
    the outcomes decide (the suite's ground truth is not consulted). Returns the
    number of episodes recorded.
    """
    if trials_per_tool < 1:
        raise ConfigError(f"trials_per_tool must be >= 1, got {trials_per_tool!r}")
    rng = np.random.default_rng(seed)
    count = 0
    for subtask in subtasks:
        for tool in suite.tools:
            for _ in range(trials_per_tool):
                result = suite.execute(subtask, tool, rng)
                episode = recorder.begin(
                    subtask.text,
                    agent_id=agent_id,
                    kind="tool_choice",
                    metadata={"task_type": subtask.task_type},
                )
                recorder.step(
                    episode,
                    f"call {tool}",
                    tool=tool,
                    result=result.output,
                    success=result.success,
                    error=result.error,
                    duration_s=result.duration_s,
                    reward=1.0 if result.success else -1.0,
                )
                recorder.complete(episode, status="success" if result.success else "failure")
                count += 1
    return count
