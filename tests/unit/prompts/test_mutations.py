from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest

import learnloop.prompts.mutations
from learnloop.episode import Episode, OutcomeStatus, Step, new_episode_id
from learnloop.prompts.agent import Attempt
from learnloop.prompts.llm import ScriptedLLMClient
from learnloop.prompts.mutations import (
    EMPHASIS,
    OPERATORS,
    CritiqueRewriter,
    MutationContext,
    add_constraint,
    add_emphasis,
    add_example,
    examples_from_store,
    reorder_instructions,
    simplify,
)
from learnloop.prompts.template import PromptTemplate, WorkedExample
from learnloop.store import SqliteStore

TOOLS = {"file_read": "read a file", "web_search": "search the web", "shell_exec": "run"}
POOL = tuple(WorkedExample(task=f"task {i} {tool}", tool=tool) for i in range(3) for tool in TOOLS)


def context(seed: int = 0, **fields: object) -> MutationContext:
    return MutationContext(rng=np.random.default_rng(seed), tools=TOOLS, examples=POOL, **fields)  # type: ignore[arg-type]


def test_the_five_operators_of_the_spec() -> None:
    assert list(OPERATORS) == [
        "add_emphasis",
        "add_constraint",
        "reorder_instructions",
        "add_example",
        "simplify",
    ]


def test_add_emphasis_marks_one_plain_line_and_stops_when_all_are() -> None:
    template = PromptTemplate(instructions=("a line.",))
    mutation = add_emphasis(template, context())
    assert mutation is not None
    assert mutation.template.instructions == (EMPHASIS + "a line.",)
    assert add_emphasis(mutation.template, context()) is None


def test_add_constraint_adds_a_new_rule_or_descriptions() -> None:
    template = PromptTemplate(instructions=("a.",))
    made = {add_constraint(template, context(seed)).detail for seed in range(30)}  # type: ignore[union-attr]
    assert "tool descriptions on" in made
    assert "Use file_read to read a file." in made
    for seed in range(30):
        mutation = add_constraint(template, context(seed))
        assert mutation is not None and mutation.template != template


def test_reorder_changes_the_order_but_keeps_the_lines() -> None:
    template = PromptTemplate(instructions=("a.", "b.", "c."))
    for seed in range(10):
        mutation = reorder_instructions(template, context(seed))
        assert mutation is not None
        assert mutation.template.instructions != template.instructions
        assert sorted(mutation.template.instructions) == ["a.", "b.", "c."]
    assert reorder_instructions(PromptTemplate(instructions=("a.",)), context()) is None


def test_add_example_prefers_tools_not_yet_shown() -> None:
    template = PromptTemplate(examples=(POOL[0],))  # file_read shown
    for seed in range(20):
        mutation = add_example(template, context(seed, max_new_examples=2))
        assert mutation is not None
        new = mutation.template.examples[1:]
        assert 1 <= len(new) <= 2
        assert new[0].tool != "file_read"
        assert len({e.tool for e in new}) == len(new)  # one per tool first
        assert mutation.template.examples[0] == POOL[0]


def test_add_example_places_first_examples_both_ways_and_runs_dry() -> None:
    placements = {
        add_example(PromptTemplate(), context(seed)).template.example_placement  # type: ignore[union-attr]
        for seed in range(20)
    }
    assert placements == {"chat", "system"}
    full = PromptTemplate(examples=POOL)
    assert add_example(full, context()) is None


def test_simplify_removes_exactly_one_part() -> None:
    template = PromptTemplate(
        instructions=("a.", "b."), examples=POOL[:2], show_tool_descriptions=True
    )
    seen = set()
    for seed in range(30):
        mutation = simplify(template, context(seed))
        assert mutation is not None
        changed = mutation.template
        removed = (
            len(template.instructions) - len(changed.instructions),
            len(template.examples) - len(changed.examples),
            int(template.show_tool_descriptions) - int(changed.show_tool_descriptions),
        )
        assert sorted(removed) == [0, 0, 1]
        seen.add(removed)
    assert len(seen) == 3
    assert simplify(PromptTemplate(instructions=()), context()) is None


def _episode(task: str, tool: str, success: bool) -> Episode:
    return Episode(
        id=new_episode_id(),
        task=task,
        agent_id="a",
        kind="tool_choice",
        steps=(Step(index=0, action=f"call {tool}", tool=tool, success=success),),
        status=OutcomeStatus.SUCCESS if success else OutcomeStatus.FAILURE,
    )


def test_examples_from_store_uses_the_rule_of_succession(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    # "read x": file_read 2/2 -> 3/4 = 0.75; web_search 1/1 -> 2/3 = 0.67 -> file_read
    # "news": web_search 1/3 -> 2/5 = 0.4; shell_exec 0/1 -> 1/3 -> web_search (0.4)
    # "never": file_read 0/2 -> no success, no example; "held": excluded
    rows = [
        ("read x", "file_read", True),
        ("read x", "file_read", True),
        ("read x", "web_search", True),
        ("news", "web_search", True),
        ("news", "web_search", False),
        ("news", "web_search", False),
        ("news", "shell_exec", False),
        ("never", "file_read", False),
        ("never", "file_read", False),
        ("held", "file_read", True),
        ("read x", "not_a_tool", True),
    ]
    store.add_episodes([_episode(*row) for row in rows])
    examples = examples_from_store(store, TOOLS, exclude_tasks={"held"})
    store.close()
    assert examples == [
        WorkedExample(task="read x", tool="file_read"),
        WorkedExample(task="news", tool="web_search"),
    ]


def _failure(task: str) -> Attempt:
    return Attempt(
        task=task,
        chosen="web_search",
        best_tool="file_read",
        success_probability=0.1,
        success=False,
        reward=-1.0,
    )


def test_critique_rewrite_appends_the_models_sentence() -> None:
    client = ScriptedLLMClient(default='  "Use file_read whenever a file name is given."  ')
    rewriter = CritiqueRewriter(client)
    mutation = rewriter.propose(PromptTemplate(), [_failure("read a.txt")], TOOLS)
    assert mutation is not None and mutation.operator == "critique_rewrite"
    assert mutation.template.instructions[-1] == "Use file_read whenever a file name is given."
    request = client.requests[0]
    assert "read a.txt" in request.messages[-1]["content"]
    assert "file_read" not in request.messages[-1]["content"].split("failed these tasks:")[1].split(
        "It chose"
    )[0].replace("read a.txt", "")  # the right tool is never shown
    assert request.grammar is not None


@pytest.mark.parametrize("answer", ["", "ok", "tool tool tool tool tool tool tool", "1234 5678"])
def test_garbage_answers_are_rejected_cleanly(answer: str) -> None:
    rewriter = CritiqueRewriter(ScriptedLLMClient(default=answer))
    assert rewriter.propose(PromptTemplate(), [_failure("read a.txt")], TOOLS) is None


def test_no_failures_means_no_call() -> None:
    client = ScriptedLLMClient(default="Use the file tools for files.")
    assert CritiqueRewriter(client).propose(PromptTemplate(), [], TOOLS) is None
    assert client.requests == []


def test_docstring_examples_run() -> None:
    assert doctest.testmod(learnloop.prompts.mutations).failed == 0
