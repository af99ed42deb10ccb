"""The suite's LLM agent on the official ``openai`` SDK, and training from its captured calls.

:class:`OpenAISuiteAgent` attempts a suite task by chatting with any
OpenAI-compatible server: one chat completion per sub-task, the tool's answer
sent back as the next user message. Pointed at the policy endpoint
(:mod:`~learnloop.train.lm.endpoint`) through a per-episode base URL, every call
is captured with its tokens, and the agent reports its reward at the end; the
agent's code does not know it is being trained.

:func:`endpoint_batch` turns the captured episodes back into token traces and
GRPO advantages (episode rewards normalized within groups of attempts at the
same task), ready for :meth:`~learnloop.train.lm.grpo_lm.LMGRPO.update`.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from learnloop.credit import group_normalize
from learnloop.envs.suite import Task, ToolUseSuite
from learnloop.episode import Episode
from learnloop.train.lm.conversation import TokenTrace, parse_tool
from learnloop.train.lm.endpoint import episode_traces

__all__ = ["AgentAttempt", "OpenAISuiteAgent", "endpoint_batch", "report_reward"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentAttempt:
    """What the agent did on one task."""

    tools: tuple[str | None, ...]
    """The tool named at each call (None: no valid tool)."""
    success: bool
    """Every sub-task's call succeeded."""


class OpenAISuiteAgent:
    """Attempts suite tasks through an ``openai.OpenAI`` client (any compatible server).

    Args:
        suite: the tool-use suite (tools and their execution).
        model: model name sent with each request.
        constrained: ask the server to answer with one of the tool names
            (``extra_body={"allowed_completions": [...]}``, a policy-endpoint extension).
        max_tokens: cap of each answer.
    """

    def __init__(
        self,
        suite: ToolUseSuite,
        *,
        model: str = "policy",
        constrained: bool = True,
        max_tokens: int = 12,
    ) -> None:
        self.suite = suite
        self.model = model
        self.constrained = constrained
        self.max_tokens = max_tokens

    def system_prompt(self) -> str:
        """The agent's instructions."""
        return "Answer with one tool name per step: " + ", ".join(self.suite.tools)

    def attempt(
        self, client: Any, task: Task, rng: np.random.Generator, *, seed: int | None = None
    ) -> AgentAttempt:
        """One attempt at ``task`` through ``client`` (an ``openai.OpenAI``)."""
        messages: list[dict[str, str]] = [
            {"role": "system", "content": self.system_prompt()},
            {"role": "user", "content": task.text},
        ]
        extra = {"allowed_completions": list(self.suite.tools)} if self.constrained else {}
        tools: list[str | None] = []
        for position, subtask in enumerate(task.subtasks):
            response = client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=self.max_tokens,
                seed=None if seed is None else seed + position,
                extra_body=extra or None,
            )
            text = response.choices[0].message.content or ""
            tool = parse_tool(text, self.suite.tools)
            tools.append(tool)
            if tool is None:
                return AgentAttempt(tools=tuple(tools), success=False)
            result = self.suite.execute(subtask, tool, rng)
            if not result.success:
                return AgentAttempt(tools=tuple(tools), success=False)
            messages += [
                {"role": "assistant", "content": text},
                {"role": "user", "content": f"{tool}: ok"},
            ]
        return AgentAttempt(tools=tuple(tools), success=True)


def report_reward(base_url: str, episode_id: str, reward: float, *, timeout_s: float = 30.0) -> Any:
    """POST the episode's reward to the policy endpoint (``base_url`` without ``/v1``)."""
    body = json.dumps({"reward": reward, "status": "success" if reward > 0 else "failure"}).encode()
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/episodes/{episode_id}/complete",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def endpoint_batch(
    episodes: Sequence[Episode],
) -> tuple[list[TokenTrace], list[list[float]]]:
    """Traces of every captured call, each with its episode's group-normalized reward.

    Episodes are grouped by task text (the G attempts at one task); the reward
    is the episode's total reward (what the agent reported).
    """
    groups = {task: i for i, task in enumerate(dict.fromkeys(e.task for e in episodes))}
    rewards = np.array([e.total_reward for e in episodes], dtype=np.float64)
    advantages = group_normalize(rewards, group_ids=[groups[e.task] for e in episodes])
    traces: list[TokenTrace] = []
    per_trace: list[list[float]] = []
    for episode, advantage in zip(episodes, advantages, strict=True):
        for trace in episode_traces(episode):
            traces.append(trace)
            per_trace.append([float(advantage)])
    return traces, per_trace
