"""The built-in suite as a multi-turn chat between a language-model policy and the tools.

One attempt at a task is one growing token sequence, a :class:`TokenTrace`::

    [system + user prompt][model: tool name <|im_end|>][tool: "ok" + assistant header][model: ...]

Each model call continues the same sequence, so the prompt of call k+1 is the
exact token prefix that call k saw, plus its own completion, plus the tool's
answer. ``TokenTrace.step_of_token`` tags every token with the model call that
wrote it, or -1 for prompt and tool tokens; only tagged tokens enter the loss
(the completion mask), and a per-step advantage is applied to its step's tokens.

The new tokens after a completion are found by rendering the conversation with
the tokenizer's chat template before and after the tool's answer and encoding
only the difference, so any template that extends its own output (ChatML, the
SmolLM2 template) works; the sampled completion tokens are never re-tokenized.

:class:`SuiteChat` runs many attempts in lockstep (one batched generation per
turn), executes the chosen tools with :meth:`ToolUseSuite.execute`, and scores:
reward 1 when every sub-task's call succeeded, else 0; step reward 1 per call
that succeeded. A completion that names no tool (free generation) fails its step.

The opening prompt has one of three formats (:data:`PromptFormat`):

* ``"examples"``: a one-line system prompt asking for the tool name only, then one
  worked example per tool as chat turns (user: a training task's text, assistant:
  its tool's name), in a seeded shuffled order. SmolLM2 copies the answer format
  of such turns, so free generation names a valid tool; examples in tool order make
  it answer the last example's tool, and examples inside the system prompt score
  lower (BENCHMARKS.md, prompt optimization). Every attempt shares these tokens, so
  sampling and the loss run them once per batch.
* ``"descriptions"``: the tools with their one-line descriptions in the system prompt.
* ``"names"``: a one-line system prompt (the tiny model, which reads no instructions).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from learnloop.envs.suite import Task, ToolUseSuite
from learnloop.errors import ConfigError
from learnloop.train.lm.config import SamplingConfig
from learnloop.train.lm.generation import (
    ActionConstraint,
    Completion,
    generate,
    split_shared_prefix,
)
from learnloop.train.lm.generation import token_log_probs as _token_log_probs
from learnloop.train.lm.model import LanguageModel

__all__ = [
    "PROMPT_FORMATS",
    "AttemptResult",
    "PromptFormat",
    "SuiteChat",
    "TokenTrace",
    "TraceBuilder",
    "evaluate_chat",
    "group_tasks",
    "parse_tool",
    "worked_examples",
]

_WORD = re.compile(r"[A-Za-z_]+")

#: How an attempt's opening prompt is written (see the module docstring).
PromptFormat = Literal["examples", "descriptions", "names"]
PROMPT_FORMATS: tuple[PromptFormat, ...] = ("examples", "descriptions", "names")


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenTrace:
    """One attempt's token ids, which model call wrote each, and sampling log-probabilities."""

    ids: tuple[int, ...]
    """Every token of the conversation, in order."""
    step_of_token: tuple[int, ...]
    """Index of the model call that sampled each token; -1 for prompt and tool tokens."""
    log_probs: tuple[float, ...]
    """log pi_old of each model token at sampling time; 0.0 for the other tokens."""

    def __post_init__(self) -> None:
        if not len(self.ids) == len(self.step_of_token) == len(self.log_probs):
            raise ConfigError(
                f"TokenTrace fields differ in length: {len(self.ids)} ids, "
                f"{len(self.step_of_token)} step tags, {len(self.log_probs)} log-probs"
            )

    @property
    def num_steps(self) -> int:
        """Model calls in the trace."""
        return max(self.step_of_token, default=-1) + 1

    @property
    def completion_mask(self) -> tuple[bool, ...]:
        """True for the model's own tokens (the only ones that enter the loss)."""
        return tuple(s >= 0 for s in self.step_of_token)


@dataclass(slots=True)
class TraceBuilder:
    """Grows a :class:`TokenTrace` call by call (see the module docstring).

    Args:
        lm: the model whose tokenizer and chat template render the conversation.
        messages: the opening messages (system, user).
    """

    lm: LanguageModel
    messages: list[dict[str, str]]
    ids: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    num_calls: int = 0
    pending: tuple[str, str, bool] | None = None

    def __post_init__(self) -> None:
        self.ids = self.lm.chat_ids(self.messages)
        self.steps = [-1] * len(self.ids)
        self.log_probs = [0.0] * len(self.ids)

    def add_completion(
        self, completion_ids: Sequence[int], log_probs: Sequence[float], content: str
    ) -> None:
        """Append the model's tokens (as sampled) and remember their text for the template."""
        if len(completion_ids) != len(log_probs):
            raise ConfigError(
                f"{len(completion_ids)} completion tokens but {len(log_probs)} log-probs"
            )
        before = self.lm.chat_text(self.messages)
        self.messages.append({"role": "assistant", "content": content})
        ended = bool(completion_ids) and int(completion_ids[-1]) in self.lm.stop_token_ids
        self.pending = (before, content, ended)
        self.ids += [int(t) for t in completion_ids]
        self.steps += [self.num_calls] * len(completion_ids)
        self.log_probs += [float(x) for x in log_probs]
        self.num_calls += 1

    def add_tool_result(self, text: str) -> None:
        """Append the tool's answer and the header of the next assistant turn (not trained)."""
        if self.pending is None:
            raise ConfigError("add_tool_result needs a completion first (add_completion)")
        before, content, ended = self.pending
        self.pending = None
        self.messages.append({"role": "tool", "content": text})
        after = self.lm.chat_text(self.messages)
        if not after.startswith(before + content):
            raise ConfigError(
                f"the chat template of {self.lm.name!r} does not extend its own output, so a "
                "multi-turn trace cannot be grown token by token; use a ChatML-style template"
            )
        delta = after[len(before) + len(content) :]
        end_text = self.lm.tokenizer.eos_token or ""
        if ended and end_text and delta.startswith(end_text):
            delta = delta[len(end_text) :]  # the model already wrote its end-of-turn token
        new = self.lm.encode(delta)
        self.ids += new
        self.steps += [-1] * len(new)
        self.log_probs += [0.0] * len(new)

    def trace(self) -> TokenTrace:
        """The trace so far."""
        return TokenTrace(
            ids=tuple(self.ids), step_of_token=tuple(self.steps), log_probs=tuple(self.log_probs)
        )


def parse_tool(text: str, tools: Sequence[str]) -> str | None:
    """The tool ``text`` names: the whole text, its first word, else the only tool named in it.

    >>> parse_tool("web_search: papers on RL", ["web_search", "doc_search"])
    'web_search'
    >>> parse_tool("doc_search or web_search", ["web_search", "doc_search"])
    'doc_search'
    >>> parse_tool("search it", ["web_search", "doc_search"]) is None
    True
    """
    stripped = text.strip().strip("`'\".").strip()
    if stripped in tools:
        return stripped
    # A small model often runs on after the name ("web_search(query=...)", a newline
    # and an explanation): the name it wrote first is its answer.
    first = _WORD.match(stripped)
    if first is not None and first.group() in tools:
        return first.group()
    named = {word for word in _WORD.findall(text) if word in tools}
    return named.pop() if len(named) == 1 else None


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptResult:
    """One attempt at one task: its trace, what the model did and how it scored."""

    task: Task
    """The task attempted."""
    trace: TokenTrace
    """The conversation's tokens with the completion mask."""
    completions: tuple[Completion, ...]
    """Each model call's completion (its prompt ids are the trace prefix it saw)."""
    tools: tuple[str | None, ...]
    """The tool each call named (None: no valid tool)."""
    step_rewards: tuple[float, ...]
    """1.0 for each call that succeeded, else 0.0."""
    success: bool
    """Every sub-task's call succeeded."""
    best_tool_hits: int
    """Calls that named their sub-task's best tool."""

    @property
    def reward(self) -> float:
        """The episode reward: 1.0 on success, else 0.0."""
        return 1.0 if self.success else 0.0


class SuiteChat:
    """Runs attempts at suite tasks with a language-model policy (see the module docstring).

    Args:
        suite: the tool-use suite.
        lm: the policy.
        prompt: the opening prompt's format (None: ``"examples"`` for pretrained
            models, ``"names"`` for the tiny model).
        constrained: constrain every action to a tool name.
        example_seed: picks the worked examples of the ``"examples"`` format and
            their order.
    """

    def __init__(
        self,
        suite: ToolUseSuite,
        lm: LanguageModel,
        *,
        prompt: PromptFormat | None = None,
        constrained: bool = True,
        example_seed: int = 0,
    ) -> None:
        if prompt is not None and prompt not in PROMPT_FORMATS:
            raise ConfigError(f"unknown prompt format {prompt!r}; use one of {PROMPT_FORMATS}")
        self.suite = suite
        self.lm = lm
        self.constrained = constrained
        self.prompt: PromptFormat = prompt or ("examples" if lm.pretrained else "names")
        self.constraint = ActionConstraint.from_texts(lm, suite.tools)
        self.examples = worked_examples(suite, seed=example_seed)
        # Longest tool name plus the end-of-turn token and one spare: free text
        # longer than that is not a bare tool name, and every extra token costs a
        # decoding step for the whole batch.
        self.answer_tokens = max(len(lm.encode(tool)) for tool in suite.tools) + 2

    def system_prompt(self) -> str:
        """The instructions: answer with exactly one tool name per turn."""
        if self.prompt == "descriptions":
            listing = "\n".join(
                f"- {name}: {text}" for name, text in self.suite.tool_descriptions.items()
            )
            return (
                "You choose tools. Answer with exactly one tool name from this list and "
                f"nothing else; after each tool result, name the tool for the next step.\n{listing}"
            )
        if self.prompt == "examples":
            return (
                "You choose tools. Answer with the name of one tool and nothing else. Tools: "
                + ", ".join(self.suite.tools)
                + "."
            )
        return "Answer with one tool name per step."

    def messages(self, task: Task) -> list[dict[str, str]]:
        """The opening messages of an attempt at ``task``: system, worked examples, the task."""
        opening = [{"role": "system", "content": self.system_prompt()}]
        if self.prompt == "examples":
            for text, tool in self.examples:
                opening += [
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": tool},
                ]
        return [*opening, {"role": "user", "content": task.text}]

    def tool_message(self, tool: str | None, success: bool, error: str | None) -> str:
        """What the tool answers (the model reads it before its next call)."""
        if tool is None:
            return "error: no such tool"
        return f"{tool}: ok" if success else f"{tool}: error: {error or 'failed'}"

    def run(
        self,
        tasks: Sequence[Task],
        sampling: SamplingConfig,
        *,
        generator: torch.Generator,
        rng: np.random.Generator,
        constrained: bool | None = None,
    ) -> list[AttemptResult]:
        """One attempt per entry of ``tasks`` (repeat a task G times for a group), in lockstep.

        ``generator`` seeds sampling, ``rng`` the tools' outcomes.
        """
        constrained = self.constrained if constrained is None else constrained
        builders = [TraceBuilder(self.lm, self.messages(task)) for task in tasks]
        done = [False] * len(tasks)
        completions: list[list[Completion]] = [[] for _ in tasks]
        tools: list[list[str | None]] = [[] for _ in tasks]
        rewards: list[list[float]] = [[] for _ in tasks]
        hits = [0] * len(tasks)
        depth = max(len(task.subtasks) for task in tasks) if tasks else 0
        for position in range(depth):
            rows = [i for i, task in enumerate(tasks) if not done[i]]
            if not rows:
                break
            sampled = generate(
                self.lm,
                [builders[i].ids for i in rows],
                sampling,
                generator=generator,
                constraint=self.constraint if constrained else None,
            )
            for i, completion in zip(rows, sampled, strict=True):
                subtask = tasks[i].subtasks[position]
                tool = parse_tool(completion.text, self.suite.tools)
                builders[i].add_completion(
                    completion.completion_ids, completion.log_probs, completion.text
                )
                completions[i].append(completion)
                tools[i].append(tool)
                error: str | None
                if tool is None:
                    success, error = False, "no such tool"
                else:
                    result = self.suite.execute(subtask, tool, rng)
                    success, error = result.success, result.error
                    hits[i] += int(tool == subtask.best_tool)
                rewards[i].append(1.0 if success else 0.0)
                last = position == len(tasks[i].subtasks) - 1
                if not success or last:
                    done[i] = True
                else:
                    builders[i].add_tool_result(self.tool_message(tool, success, error))
        return [
            AttemptResult(
                task=task,
                trace=builders[i].trace(),
                completions=tuple(completions[i]),
                tools=tuple(tools[i]),
                step_rewards=tuple(rewards[i]),
                success=bool(rewards[i])
                and all(r > 0 for r in rewards[i])
                and len(rewards[i]) == len(task.subtasks),
                best_tool_hits=hits[i],
            )
            for i, task in enumerate(tasks)
        ]

    def demonstration(self, task: Task, tools: Sequence[str]) -> TokenTrace:
        """The trace of a successful attempt that called ``tools`` in order (for warm-start)."""
        if len(tools) != len(task.subtasks):
            raise ConfigError(
                f"task {task.id} has {len(task.subtasks)} sub-tasks but {len(tools)} tools "
                "were given; give one tool per sub-task"
            )
        builder = TraceBuilder(self.lm, self.messages(task))
        end = int(self.lm.tokenizer.eos_token_id)
        for position, tool in enumerate(tools):
            ids = [*self.lm.encode(tool), end]
            builder.add_completion(ids, [0.0] * len(ids), tool)
            if position < len(tools) - 1:
                builder.add_tool_result(self.tool_message(tool, True, None))
        return builder.trace()

    @torch.no_grad()
    def rank_tools(self, tasks: Sequence[Task], *, batch_size: int = 64) -> list[str]:
        """For each task's first decision, the tool whose name the model scores most likely."""
        end = int(self.lm.tokenizer.eos_token_id)
        names = [[*self.lm.encode(tool), end] for tool in self.suite.tools]
        rows: list[tuple[list[int], int]] = []
        for task in tasks:
            prompt = self.lm.chat_ids(self.messages(task))
            rows += [(prompt + name, len(name)) for name in names]
        scores: list[float] = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            prefix, ids, mask = split_shared_prefix(
                [r[0] for r in chunk],
                self.lm.pad_token_id,
                self.lm.device,
                first_targets=[len(r[0]) - r[1] for r in chunk],
            )
            target = torch.zeros_like(mask, dtype=torch.bool)
            for row, (_, length) in enumerate(chunk):
                target[row, ids.shape[1] - length :] = True
            scores += (
                _token_log_probs(self.lm.model, ids, mask, target, prefix_ids=prefix)
                .sum(-1)
                .tolist()
            )
        per_task = np.asarray(scores).reshape(len(tasks), len(names))
        return [self.suite.tools[int(i)] for i in per_task.argmax(axis=1)]


def evaluate_chat(
    chat: SuiteChat,
    tasks: Sequence[Task],
    *,
    constrained: bool,
    seed: int = 0,
    batch_size: int = 64,
    rank_tools: bool = False,
) -> dict[str, Any]:
    """Greedy attempts at ``tasks``: success rate, tool accuracy, valid-action rate.

    The tools' outcomes are drawn from ``seed``, so two evaluations of different
    policies on the same tasks are paired. ``rank_tools`` adds the accuracy of the
    best-scoring tool name at each task's first decision (``ranked_accuracy``).
    """
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=chat.answer_tokens)
    results: list[AttemptResult] = []
    for start in range(0, len(tasks), batch_size):
        results += chat.run(
            tasks[start : start + batch_size],
            greedy,
            generator=generator,
            rng=rng,
            constrained=constrained,
        )
    decisions = sum(len(r.tools) for r in results)
    metrics: dict[str, Any] = {
        "success_rate": float(np.mean([r.success for r in results])) if results else 0.0,
        "tool_accuracy": sum(r.best_tool_hits for r in results) / max(decisions, 1),
        "valid_rate": sum(t is not None for r in results for t in r.tools) / max(decisions, 1),
        "num_episodes": len(results),
        "constrained": constrained,
    }
    if rank_tools:
        ranked = chat.rank_tools(tasks)
        hits = [
            tool == task.subtasks[0].best_tool for tool, task in zip(ranked, tasks, strict=True)
        ]
        metrics["ranked_accuracy"] = float(np.mean(hits)) if hits else 0.0
    return metrics


def worked_examples(suite: ToolUseSuite, *, seed: int = 0) -> list[tuple[str, str]]:
    """One ``(task text, tool)`` per tool from the training split, in a seeded shuffled order.

    Each example is a single-step training task whose best tool is that tool (the
    suite's catalog; a tool that is best for no single-step task gets none). Held-out
    tasks never appear: their phrasings and slot values are not in the training split.
    """
    rng = np.random.default_rng(seed)
    by_tool: dict[str, list[Task]] = {}
    for task in suite.train_tasks:
        if len(task.subtasks) == 1:
            by_tool.setdefault(task.subtasks[0].best_tool, []).append(task)
    examples = [
        (by_tool[tool][int(rng.integers(len(by_tool[tool])))].text, tool)
        for tool in suite.tools
        if tool in by_tool
    ]
    # In tool order SmolLM2 answers with the last example's tool; shuffled it reads them.
    return [examples[int(i)] for i in rng.permutation(len(examples))]


def group_tasks(tasks: Sequence[Task], group_size: int) -> list[Task]:
    """Each task repeated ``group_size`` times in a row (the attempts of one GRPO group)."""
    return [task for task in tasks for _ in range(group_size)]
