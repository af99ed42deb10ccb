from __future__ import annotations

import pytest

from learnloop.envs import SuiteConfig, ToolUseSuite
from learnloop.prompts.simulator import PromptSensitiveSimulator
from learnloop.prompts.template import PromptTemplate, WorkedExample

SUITE = ToolUseSuite(SuiteConfig(seed=0, num_tasks=100))
READ = WorkedExample(task="open a.txt", tool="file_read")
SEARCH = WorkedExample(task="news on x", tool="web_search")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (PromptTemplate(), 0.15),
        (PromptTemplate(show_tool_descriptions=True), 0.20),
        (PromptTemplate(instructions=("a.", "b.", "c.")), 0.15 - 2 * 0.06),
        (PromptTemplate(instructions=("IMPORTANT: a.",)), 0.15),
        # chat example of the best tool: 0.15 + 0.55 + 2 * 0.01
        (PromptTemplate(examples=(SEARCH, READ)), 0.72),
        # chat examples of other tools only: 0.15 + 0.01
        (PromptTemplate(examples=(SEARCH,)), 0.16),
        # examples in the system prompt: 0.15 - 0.20 -> clipped to 0.02
        (PromptTemplate(examples=(READ,), example_placement="system"), 0.02),
        # the last two examples show the same tool: 0.15 + 0.55 + 0.02 - 0.04
        (PromptTemplate(examples=(READ, WorkedExample(task="cat b", tool="file_read"))), 0.68),
    ],
)
def test_formula_by_hand(template: PromptTemplate, expected: float) -> None:
    simulator = PromptSensitiveSimulator(SUITE)
    assert simulator.probability_right(template, "file_read") == pytest.approx(expected)


def test_optimum_reaches_the_closed_form_probability_on_every_tool() -> None:
    simulator = PromptSensitiveSimulator(SUITE)
    pool = [WorkedExample(task=f"t{i} {tool}", tool=tool) for i in range(2) for tool in SUITE.tools]
    best = simulator.optimum(pool)
    for tool in SUITE.tools:
        assert simulator.probability_right(best, tool) == pytest.approx(0.89)


def test_evaluation_is_deterministic_and_counts_runs() -> None:
    simulator = PromptSensitiveSimulator(SUITE, seed=3)
    subtasks = [sub for task in SUITE.heldout_tasks for sub in task.subtasks]
    first = simulator.evaluate(PromptTemplate(), subtasks)
    second = simulator.evaluate(PromptTemplate(), subtasks)
    assert first == second
    assert simulator.num_runs == 2 * len(subtasks)
    # about 15% right with the bare prompt
    assert 0.05 < first.accuracy < 0.30
