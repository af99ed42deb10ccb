"""A prompt-sensitive SIMULATOR of a tool-choosing agent, for testing the prompt search.

This is not a language model and is never presented as one. It is a
deterministic test agent whose chance of choosing the right tool depends on the
prompt's structure through a known formula, so the best prompt, and its score,
are known in closed form. The optimizer's search quality is tested against it
(does the search get near the optimum within its budget? does it beat random
mutation at the same number of agent runs?); real prompt gains are measured with
the real model (:class:`~learnloop.prompts.agent.LLMToolAgent`).

The formula, loosely shaped after what SmolLM2-135M showed on the suite (worked
examples as chat turns help most, rules hurt, examples inside the system prompt
hurt). For a sub-task whose best tool is ``t``, the probability of choosing ``t``
is ``clip(p, 0.02, 0.97)`` with::

    p = base                                   0.15
      + descriptions                           +0.05 when the tool descriptions are on
      + chat examples of t                     +0.55 when an example of t is a chat turn
      + chat examples in all                   +0.01 per chat-turn example, at most +0.14
      - system examples                        -0.20 when examples are in the system prompt
      - rules                                  -0.06 per instruction line beyond the first
      + emphasis                               0 (neutral)
      - example order                          -0.04 when the last two examples show the same tool

Its optimum is therefore: tool descriptions on, at most one instruction line,
one or more chat-turn examples of every tool (no two equal tools last):
``p = 0.15 + 0.05 + 0.55 + 0.14 = 0.89`` on every sub-task (see
:meth:`PromptSensitiveSimulator.optimum`).

Choice given ``p``: the sub-task's text hashed with the seed gives a fixed
uniform ``u``; the simulator picks the best tool when ``u < p`` and a fixed wrong
tool otherwise (common random numbers: prompts are compared on the same draws).
Its score is the suite's success probability of that tool, as for the real agent.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from learnloop.envs import SubTask, ToolUseSuite
from learnloop.prompts.agent import Attempt, Evaluation
from learnloop.prompts.template import PromptTemplate, WorkedExample

__all__ = ["PromptSensitiveSimulator", "SimulatorWeights"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorWeights:
    """The terms of the simulator's formula (module docstring)."""

    base: float = 0.15
    """Chance of the right tool with a bare prompt."""
    descriptions: float = 0.05
    """Added when the tool descriptions are on."""
    example_of_tool: float = 0.55
    """Added when a chat-turn example shows the sub-task's best tool."""
    per_chat_example: float = 0.01
    """Added per chat-turn example."""
    chat_examples_cap: float = 0.14
    """Cap of the per-example term."""
    system_examples: float = -0.20
    """Added when examples are placed in the system prompt."""
    per_extra_instruction: float = -0.06
    """Added per instruction line beyond the first."""
    repeated_last_tool: float = -0.04
    """Added when the last two examples show the same tool."""


class PromptSensitiveSimulator:
    """A simulated agent: implements ``PromptEvaluator`` by the formula of the module docstring.

    Args:
        suite: Supplies the tools, best tools and success probabilities.
        weights: The formula's terms.
        seed: Seeds the per-sub-task draws.
    """

    def __init__(
        self, suite: ToolUseSuite, weights: SimulatorWeights | None = None, *, seed: int = 0
    ) -> None:
        self.suite = suite
        self.weights = weights if weights is not None else SimulatorWeights()
        self.seed = seed
        self.num_runs = 0

    def probability_right(self, template: PromptTemplate, best_tool: str) -> float:
        """Chance that ``template`` makes the simulator choose ``best_tool``."""
        w = self.weights
        p = w.base
        if template.show_tool_descriptions:
            p += w.descriptions
        if template.examples:
            if template.example_placement == "chat":
                if any(e.tool == best_tool for e in template.examples):
                    p += w.example_of_tool
                p += min(w.chat_examples_cap, w.per_chat_example * len(template.examples))
            else:
                p += w.system_examples
            tail = template.examples[-2:]
            if len(tail) == 2 and tail[0].tool == tail[1].tool:
                p += w.repeated_last_tool
        p += w.per_extra_instruction * max(0, len(template.instructions) - 1)
        return min(0.97, max(0.02, p))

    def _draw(self, text: str) -> float:
        return zlib.crc32(f"{self.seed}:{text}".encode()) / 2**32

    def _wrong_tool(self, subtask: SubTask) -> str:
        tools = [t for t in self.suite.tools if t != subtask.best_tool]
        return tools[zlib.crc32(subtask.text.encode()) % len(tools)]

    def evaluate(self, template: PromptTemplate, subtasks: Sequence[SubTask]) -> Evaluation:
        """One simulated attempt per sub-task, in order."""
        attempts = []
        for sub in subtasks:
            right = self._draw(sub.text) < self.probability_right(template, sub.best_tool)
            chosen = sub.best_tool if right else self._wrong_tool(sub)
            probability = self.suite.success_probability(sub, chosen)
            success = self._draw("outcome:" + sub.text) < probability
            attempts.append(
                Attempt(
                    task=sub.text,
                    chosen=chosen,
                    best_tool=sub.best_tool,
                    success_probability=probability,
                    success=success,
                    reward=1.0 if success else -1.0,
                )
            )
        self.num_runs += len(attempts)
        return Evaluation(tuple(attempts))

    def optimum(self, examples: Sequence[WorkedExample]) -> PromptTemplate:
        """The best prompt buildable from ``examples``: one chat example per tool, descriptions on.

        The examples are ordered so that no two equal tools come last.
        """
        per_tool: dict[str, WorkedExample] = {}
        for example in examples:
            per_tool.setdefault(example.tool, example)
        chosen = [per_tool[t] for t in self.suite.tools if t in per_tool]
        extra = [e for e in examples if e not in chosen]
        needed = max(0, round(self.weights.chat_examples_cap / self.weights.per_chat_example))
        filler = extra[: max(0, needed - len(chosen))]
        return replace(
            PromptTemplate(instructions=("You choose the tool for a task.",)),
            show_tool_descriptions=True,
            examples=(*filler, *chosen),
            example_placement="chat",
        )
