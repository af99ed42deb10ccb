"""Reference policies on the suite and how to score a tool-choice policy on a split.

Three baselines bracket what learning can do on the suite:

* :func:`random_policy`: a uniformly random tool (the floor);
* :func:`keyword_policy`: the best fixed tool per keyword category
  (:func:`~learnloop.envs.featurize.keyword_category`), fitted on the train split
  (what a bandit keyed on the spec's categories converges to);
* :func:`oracle_policy`: the tool with the highest success probability for the
  sub-task's true type (the ceiling of any tool-choice policy).

A policy is any callable ``(subtask, rng) -> tool name``.

    >>> from learnloop.envs.suite import SuiteConfig, ToolUseSuite
    >>> suite = ToolUseSuite(SuiteConfig(seed=0, num_tasks=200))
    >>> oracle = evaluate_policy(suite, oracle_policy(suite), np.random.default_rng(0))
    >>> rand = evaluate_policy(suite, random_policy(suite), np.random.default_rng(0))
    >>> oracle.expected_task_success - rand.expected_task_success > 0.4
    True
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from learnloop.envs.featurize import KEYWORD_CATEGORIES, keyword_category
from learnloop.envs.suite import Split, SubTask, ToolUseSuite
from learnloop.errors import ConfigError

__all__ = [
    "Policy",
    "PolicyScore",
    "evaluate_policy",
    "fit_keyword_tools",
    "keyword_policy",
    "oracle_policy",
    "random_policy",
]

#: A tool-choice policy: sub-task and a generator in, tool name out.
Policy = Callable[[SubTask, np.random.Generator], str]


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyScore:
    """How a policy did on one split."""

    task_success: float
    """Share of task attempts whose every sub-task's call succeeded (sampled)."""
    expected_task_success: float
    """Mean over tasks of the product of the chosen tools' success probabilities."""
    decision_accuracy: float
    """Share of sub-task decisions that picked the sub-task's best tool."""
    decision_success: float
    """Mean success probability of the chosen tool per decision."""
    num_tasks: int
    """Tasks in the split."""
    num_attempts: int
    """Task attempts sampled (tasks x repeats)."""


def random_policy(suite: ToolUseSuite) -> Policy:
    """A uniformly random tool."""
    tools = suite.tools

    def choose(subtask: SubTask, rng: np.random.Generator) -> str:
        return tools[int(rng.integers(len(tools)))]

    return choose


def fit_keyword_tools(suite: ToolUseSuite, split: Split = "train") -> dict[str, str]:
    """Best fixed tool per keyword category, from the true success probabilities.

    For each category, the tool with the highest mean success probability over the
    ``split``'s sub-tasks whose text falls in that category (a category with no
    sub-task gets the tool that is best over all of them).
    """
    matrix = suite.success_matrix()
    rows: dict[str, list[int]] = defaultdict(list)
    every: list[int] = []
    for task in suite.tasks(split):
        for subtask in task.subtasks:
            row = suite.task_types.index(subtask.task_type)
            rows[keyword_category(subtask.text)].append(row)
            every.append(row)
    overall = suite.tools[int(np.argmax(matrix[every].mean(axis=0)))]
    fitted: dict[str, str] = {}
    for category in (*KEYWORD_CATEGORIES, "general"):
        if rows[category]:
            fitted[category] = suite.tools[int(np.argmax(matrix[rows[category]].mean(axis=0)))]
        else:
            fitted[category] = overall
    return fitted


def keyword_policy(suite: ToolUseSuite, split: Split = "train") -> Policy:
    """The best fixed tool per keyword category, fitted on ``split``.

    See :func:`fit_keyword_tools`.
    """
    tools = fit_keyword_tools(suite, split)

    def choose(subtask: SubTask, rng: np.random.Generator) -> str:
        return tools[keyword_category(subtask.text)]

    return choose


def oracle_policy(suite: ToolUseSuite, decision_index: int | None = None) -> Policy:
    """The best tool for the sub-task's true type (knows the ground truth)."""
    best = {name: suite.best_tool(name, decision_index) for name in suite.task_types}

    def choose(subtask: SubTask, rng: np.random.Generator) -> str:
        return best[subtask.task_type]

    return choose


def evaluate_policy(
    suite: ToolUseSuite,
    policy: Policy,
    rng: np.random.Generator,
    *,
    split: Split = "heldout",
    repeats: int = 1,
) -> PolicyScore:
    """Run ``policy`` ``repeats`` times on every task of ``split`` through ``suite.execute``.

    A task attempt stops at its first failed call (the task has failed). Decision
    accuracy and expected success use one decision per sub-task of every attempt.
    """
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats!r}")
    tasks = suite.tasks(split)
    successes = 0
    expected = 0.0
    correct = 0
    decisions = 0
    decision_success = 0.0
    for _ in range(repeats):
        for task in tasks:
            chosen = [policy(subtask, rng) for subtask in task.subtasks]
            probabilities = [
                suite.success_probability(subtask, tool)
                for subtask, tool in zip(task.subtasks, chosen, strict=True)
            ]
            expected += float(np.prod(probabilities))
            decision_success += sum(probabilities)
            correct += sum(
                tool == subtask.best_tool
                for subtask, tool in zip(task.subtasks, chosen, strict=True)
            )
            decisions += len(chosen)
            succeeded = True
            for subtask, tool in zip(task.subtasks, chosen, strict=True):
                if not suite.execute(subtask, tool, rng).success:
                    succeeded = False
                    break
            successes += succeeded
    attempts = repeats * len(tasks)
    return PolicyScore(
        task_success=successes / attempts,
        expected_task_success=expected / attempts,
        decision_accuracy=correct / decisions,
        decision_success=decision_success / decisions,
        num_tasks=len(tasks),
        num_attempts=attempts,
    )
