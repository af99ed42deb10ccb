"""Where candidate prompts come from: the five mutation operators and LLM critique-and-rewrite.

The operators of the spec edit a :class:`~learnloop.prompts.template.PromptTemplate`'s
structure; each is a function ``(template, context) -> Mutation | None`` (None when
it does not apply, e.g. ``simplify`` on an empty prompt):

* ``add_emphasis``: mark one instruction line ``IMPORTANT:``;
* ``add_constraint``: add a rule line (generic, or "use TOOL to DESCRIPTION"), or
  switch the tool descriptions on;
* ``reorder_instructions``: shuffle the instruction lines or the worked examples
  (small models weigh the last example most: order matters);
* ``add_example``: add 1 to ``max_new_examples`` worked examples drawn from
  successful episodes (:func:`examples_from_store`), tools not yet shown first;
  the first examples choose their placement (system prompt or chat turns) at
  random, later ones keep it, with a 20% chance of moving all examples to the
  other placement;
* ``simplify``: drop an instruction line, drop an example, or switch the tool
  descriptions off.

:class:`CritiqueRewriter` is the LLM's source of candidates: it shows the model the
current instructions and the failed attempts (task and chosen tool; the right tool
is not known to a real agent and is not shown) and asks for one new instruction
line, constrained by a grammar to a single sentence. An answer that is not a
usable sentence is rejected (the candidate is skipped), never an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from learnloop.episode import OutcomeStatus
from learnloop.errors import LLMError
from learnloop.prompts.agent import Attempt
from learnloop.prompts.llm import ChatRequest, LLMClient, system_message, user_message
from learnloop.prompts.template import PromptTemplate, WorkedExample
from learnloop.store.base import EpisodeQuery, EpisodeStore

__all__ = [
    "OPERATORS",
    "CritiqueRewriter",
    "Mutation",
    "MutationContext",
    "Operator",
    "examples_from_store",
]

logger = logging.getLogger(__name__)

EMPHASIS = "IMPORTANT: "
GENERIC_CONSTRAINTS: tuple[str, ...] = (
    "Answer with exactly one tool name and nothing else.",
    "Pick the tool whose description matches the main action of the task.",
    "Read the whole task before choosing.",
    "Choose the tool that does the first thing the task asks for.",
    "Do not choose a tool that searches when the task names a file to read.",
)


@dataclass(frozen=True, slots=True)
class Mutation:
    """A candidate and how it was made."""

    template: PromptTemplate
    operator: str
    """Name of the operator (or ``critique_rewrite``)."""
    detail: str = ""
    """What changed, in words (for ``all_variants.json``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MutationContext:
    """What the operators draw on."""

    rng: np.random.Generator
    """Source of every random choice."""
    tools: Mapping[str, str]
    """Tool name -> one-line description."""
    examples: Sequence[WorkedExample] = ()
    """Worked examples to draw from, best first (see :func:`examples_from_store`)."""
    max_new_examples: int = 4
    """Most examples ``add_example`` adds at once."""
    constraints: tuple[str, ...] = field(default=GENERIC_CONSTRAINTS)
    """Generic rule lines ``add_constraint`` may add."""


Operator = Callable[[PromptTemplate, MutationContext], Mutation | None]


def add_emphasis(template: PromptTemplate, context: MutationContext) -> Mutation | None:
    """Prefix one instruction line not yet emphasized with ``IMPORTANT:``."""
    plain = [i for i, line in enumerate(template.instructions) if not line.startswith(EMPHASIS)]
    if not plain:
        return None
    index = plain[int(context.rng.integers(len(plain)))]
    lines = list(template.instructions)
    lines[index] = EMPHASIS + lines[index]
    return Mutation(replace(template, instructions=tuple(lines)), "add_emphasis", lines[index])


def add_constraint(template: PromptTemplate, context: MutationContext) -> Mutation | None:
    """Add one rule line, or switch the tool descriptions on (a third of the time)."""
    rng = context.rng
    if not template.show_tool_descriptions and rng.random() < 1 / 3:
        return Mutation(
            replace(template, show_tool_descriptions=True), "add_constraint", "tool descriptions on"
        )
    pool = list(context.constraints) + [
        f"Use {tool} to {description}." for tool, description in context.tools.items()
    ]
    present = {line.removeprefix(EMPHASIS) for line in template.instructions}
    pool = [line for line in pool if line not in present]
    if not pool:
        return None
    line = pool[int(rng.integers(len(pool)))]
    return Mutation(
        replace(template, instructions=(*template.instructions, line)), "add_constraint", line
    )


def _shuffled(items: Sequence[object], rng: np.random.Generator) -> list[int]:
    order = list(range(len(items)))
    while order == sorted(order):
        order = [int(i) for i in rng.permutation(len(items))]
    return order


def reorder_instructions(template: PromptTemplate, context: MutationContext) -> Mutation | None:
    """Shuffle the instruction lines or the worked examples (whichever has two or more)."""
    parts = [name for name in ("instructions", "examples") if len(getattr(template, name)) > 1]
    if not parts:
        return None
    part = parts[int(context.rng.integers(len(parts)))]
    if part == "instructions":
        order = _shuffled(template.instructions, context.rng)
        changed = replace(template, instructions=tuple(template.instructions[i] for i in order))
    else:
        order = _shuffled(template.examples, context.rng)
        changed = replace(template, examples=tuple(template.examples[i] for i in order))
    return Mutation(changed, "reorder_instructions", f"{part} order {order}")


def add_example(template: PromptTemplate, context: MutationContext) -> Mutation | None:
    """Add worked examples from successful episodes, tools not yet shown first."""
    rng = context.rng
    shown = {e.task for e in template.examples}
    pool = [e for e in context.examples if e.task not in shown]
    if not pool:
        return None
    covered = {e.tool for e in template.examples}
    fresh = [e for e in pool if e.tool not in covered]
    count = int(rng.integers(1, context.max_new_examples + 1))
    chosen: list[WorkedExample] = []
    for candidates in (fresh, pool):
        while candidates and len(chosen) < count:
            pick = candidates[int(rng.integers(min(len(candidates), 3 * count)))]
            candidates = [e for e in candidates if e.tool != pick.tool and e is not pick]
            if pick not in chosen:
                chosen.append(pick)
    placement = template.example_placement
    if not template.examples:
        placement = "chat" if rng.random() < 0.5 else "system"
    elif rng.random() < 0.2:
        placement = "system" if placement == "chat" else "chat"
    changed = replace(template, examples=(*template.examples, *chosen), example_placement=placement)
    detail = f"+{len(chosen)} in {placement}: " + ", ".join(e.tool for e in chosen)
    return Mutation(changed, "add_example", detail)


def simplify(template: PromptTemplate, context: MutationContext) -> Mutation | None:
    """Drop one instruction line or one example, or switch the tool descriptions off."""
    options: list[str] = []
    if template.instructions:
        options.append("instruction")
    if template.examples:
        options.append("example")
    if template.show_tool_descriptions:
        options.append("descriptions")
    if not options:
        return None
    option = options[int(context.rng.integers(len(options)))]
    if option == "descriptions":
        return Mutation(
            replace(template, show_tool_descriptions=False), "simplify", "tool descriptions off"
        )
    if option == "instruction":
        index = int(context.rng.integers(len(template.instructions)))
        dropped: object = template.instructions[index]
        lines = tuple(line for i, line in enumerate(template.instructions) if i != index)
        changed = replace(template, instructions=lines)
    else:
        index = int(context.rng.integers(len(template.examples)))
        dropped = template.examples[index]
        kept = tuple(example for i, example in enumerate(template.examples) if i != index)
        changed = replace(template, examples=kept)
    return Mutation(changed, "simplify", f"dropped {option} {dropped}")


#: The spec's five operators, by name (read-only).
OPERATORS: Mapping[str, Operator] = MappingProxyType(
    {
        "add_emphasis": add_emphasis,
        "add_constraint": add_constraint,
        "reorder_instructions": reorder_instructions,
        "add_example": add_example,
        "simplify": simplify,
    }
)


def examples_from_store(
    store: EpisodeStore,
    tools: Collection[str],
    *,
    exclude_tasks: Collection[str] = (),
    agent_id: str | None = None,
    limit: int = 20_000,
) -> list[WorkedExample]:
    """Worked examples from the store's tool-choice episodes, most reliable first.

    For every (task text, tool) the store has attempts of, the reliability is the
    posterior mean success ``(s + 1) / (n + 2)`` (Laplace's rule of succession over
    ``s`` successes in ``n`` attempts); each task gives its most reliable tool, if
    that tool succeeded at least once and no other tool is as reliable (a tie is no
    clear example). Tasks in ``exclude_tasks`` (held-out ones) are never used.
    """
    counts: dict[tuple[str, str], list[int]] = {}
    excluded = set(exclude_tasks)
    query = EpisodeQuery(agent_id=agent_id, kind="tool_choice", limit=limit, newest_first=True)
    for episode in store.iter_episodes(query):
        if episode.task in excluded or not episode.steps:
            continue
        tool = episode.steps[0].tool
        if tool is None or tool not in tools:
            continue
        tally = counts.setdefault((episode.task, tool), [0, 0])
        tally[0] += episode.status is OutcomeStatus.SUCCESS
        tally[1] += 1
    per_task: dict[str, list[tuple[float, int, str]]] = {}
    for (task, tool), (successes, attempts) in counts.items():
        per_task.setdefault(task, []).append(((successes + 1) / (attempts + 2), successes, tool))
    ranked: list[tuple[float, str, str]] = []
    for task, tallies in per_task.items():
        tallies.sort(reverse=True)
        reliability, successes, tool = tallies[0]
        if successes == 0 or (len(tallies) > 1 and tallies[1][0] == reliability):
            continue  # nothing worked, or two tools tie: no clear example
        ranked.append((reliability, task, tool))
    ranked.sort(key=lambda item: (-item[0], item[1]))
    return [WorkedExample(task=task, tool=tool) for _, task, tool in ranked]


_SENTENCE = re.compile(r"^[A-Za-z][^\n]{14,200}$")
_GRAMMAR = r"""root ::= [A-Z] [a-zA-Z0-9 ,;:'()_-]{15,150} "."
"""


class CritiqueRewriter:
    """An LLM reads failed attempts and writes one new instruction line (see the module docstring).

    Args:
        client: The model that critiques (may be the agent's own model).
        max_failures: Failed attempts shown at most.
        max_tokens: Most tokens of the answer.
    """

    def __init__(self, client: LLMClient, *, max_failures: int = 6, max_tokens: int = 64) -> None:
        self.client = client
        self.max_failures = max_failures
        self.max_tokens = max_tokens

    def request(
        self, template: PromptTemplate, failures: Sequence[Attempt], tools: Mapping[str, str]
    ) -> ChatRequest:
        """The critique request (temperature 0: the same failures give the same answer)."""
        shown = "\n".join(
            f"- Task: {a.task} It chose: {a.chosen or 'no tool'}."
            for a in failures[: self.max_failures]
        )
        instructions = "\n".join(template.instructions) or "(none)"
        return ChatRequest(
            messages=[
                system_message(
                    "You improve the instructions of an assistant that picks one tool per task."
                ),
                user_message(
                    f"Instructions now:\n{instructions}\n\nTools: {', '.join(tools)}.\n\n"
                    f"The assistant failed these tasks:\n{shown}\n\n"
                    "Write one new instruction sentence that helps it pick the right tool."
                ),
            ],
            max_tokens=self.max_tokens,
            grammar=_GRAMMAR,
        )

    def propose(
        self, template: PromptTemplate, failures: Sequence[Attempt], tools: Mapping[str, str]
    ) -> Mutation | None:
        """A candidate with the model's new line appended, or None if its answer is unusable.

        Raises:
            BudgetExceededError: the client's budget ran out.
        """
        if not failures:
            return None
        try:
            answer = self.client.complete(self.request(template, failures, tools)).text
        except LLMError as exc:
            logger.warning("critique call failed, no rewrite this time: %s", exc)
            return None
        line = parse_instruction(answer)
        present = {existing.removeprefix(EMPHASIS) for existing in template.instructions}
        if line is None or line in present:
            logger.info("critique answer rejected: %r", answer[:120])
            return None
        changed = replace(template, instructions=(*template.instructions, line))
        return Mutation(changed, "critique_rewrite", line)


def parse_instruction(answer: str) -> str | None:
    """The model's answer as one clean instruction sentence, or None if it is not one.

    >>> parse_instruction('  "Use file_read for files."  ')
    'Use file_read for files.'
    >>> parse_instruction("ok") is None
    True
    """
    text = answer.strip().splitlines()[0].strip() if answer.strip() else ""
    text = text.strip("\"'`*- ").strip()
    if not _SENTENCE.match(text) or len(text.split()) < 3:
        return None
    if len(set(text.lower().split())) < len(text.split()) / 2:  # a word repeated over and over
        return None
    return text if text.endswith((".", "!")) else text + "."
