"""Tests of learnloop.envs.suite: generation, split, ground truth, execution, degradation."""

from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np
import pytest

from learnloop.envs import MULTI_STEP, SuiteConfig, ToolUseSuite, keyword_category
from learnloop.envs.catalog import TASK_TYPES, VOCABULARIES
from learnloop.errors import ConfigError, ToolError


@pytest.fixture(scope="module")
def suite() -> ToolUseSuite:
    return ToolUseSuite(SuiteConfig(seed=3, num_tasks=1000))


def test_sizes(suite: ToolUseSuite) -> None:
    assert len(suite.tools) >= 12 and len(set(suite.tools)) == len(suite.tools)
    assert len(suite.task_types) >= 15
    assert len(suite.train_tasks) == 800 and len(suite.heldout_tasks) == 200
    assert {task.split for task in suite.train_tasks} == {"train"}
    assert {task.split for task in suite.heldout_tasks} == {"heldout"}


def test_same_seed_same_suite_other_seed_other_suite() -> None:
    config = SuiteConfig(seed=11, num_tasks=100)
    a, b = ToolUseSuite(config), ToolUseSuite(config)
    assert a.train_tasks == b.train_tasks and a.heldout_tasks == b.heldout_tasks
    np.testing.assert_array_equal(a.success_matrix(), b.success_matrix())
    c = ToolUseSuite(SuiteConfig(seed=12, num_tasks=100))
    assert [t.text for t in c.train_tasks] != [t.text for t in a.train_tasks]
    assert not np.array_equal(a.success_matrix(), c.success_matrix())


def test_single_and_multi_step_tasks(suite: ToolUseSuite) -> None:
    tasks = suite.train_tasks + suite.heldout_tasks
    multi = [task for task in tasks if task.is_multi_step]
    single = [task for task in tasks if not task.is_multi_step]
    assert 0.2 < len(multi) / len(tasks) < 0.4  # multi_step_fraction=0.3
    assert {len(task.subtasks) for task in multi} == {2, 3, 4}
    assert all(task.task_type == MULTI_STEP for task in multi)
    assert all(task.task_type == task.subtasks[0].task_type for task in single)
    for task in multi:  # each clause appears in the task text, in order
        positions = [task.text.lower().find(sub.text.lower()) for sub in task.subtasks]
        assert -1 not in positions and positions == sorted(positions)
    assert len({task.id for task in tasks}) == len(tasks)


def test_heldout_split_is_disjoint(suite: ToolUseSuite) -> None:
    train_texts = {task.text for task in suite.train_tasks}
    train_subtexts = {sub.text for task in suite.train_tasks for sub in task.subtasks}
    train_templates = {sub.template_id for task in suite.train_tasks for sub in task.subtasks}
    train_values = {
        value for task in suite.train_tasks for sub in task.subtasks for _, value in sub.slots
    }
    heldout_subtasks = [sub for task in suite.heldout_tasks for sub in task.subtasks]
    assert not {task.text for task in suite.heldout_tasks} & train_texts
    assert not {sub.text for sub in heldout_subtasks} & train_subtexts
    heldout_only = set().union(*(suite.heldout_templates(name) for name in suite.task_types))
    assert not heldout_only & train_templates  # held-out phrasings never seen in training
    # about half the held-out decisions use a phrasing training never saw
    unseen = sum(sub.template_id in heldout_only for sub in heldout_subtasks)
    assert 0.25 < unseen / len(heldout_subtasks) < 0.75
    # held-out slot values never appear in a training task
    for sub in heldout_subtasks:
        for _, value in sub.slots:
            assert value not in train_values


def test_every_template_has_a_slot_and_types_are_distinct() -> None:
    for spec in TASK_TYPES:
        assert len(spec.templates) >= 6 and len(set(spec.templates)) == len(spec.templates)
        for template in spec.templates:
            assert re.search(r"\{\w+\}", template), template
    for name, values in VOCABULARIES.items():
        assert len(values) >= 10 and len(set(values)) == len(values), name
    every = [value for values in VOCABULARIES.values() for value in values]
    assert len(every) == len(set(every))  # a value names its vocabulary


def test_types_sharing_a_keyword_category_need_different_tools(suite: ToolUseSuite) -> None:
    best_tools: dict[str, set[str]] = defaultdict(set)
    for task in suite.train_tasks:
        for sub in task.subtasks:
            best_tools[keyword_category(sub.text)].add(sub.best_tool)
    assert len(best_tools["search"]) >= 4  # web_search, code_grep, file_find, doc_search, sql
    assert len(best_tools["data"]) >= 2
    assert len(best_tools["general"]) >= 4
    # and the same type is phrased into more than one category (distractor words)
    categories_per_type: dict[str, set[str]] = defaultdict(set)
    for task in suite.train_tasks:
        for sub in task.subtasks:
            categories_per_type[sub.task_type].add(keyword_category(sub.text))
    assert sum(len(c) > 1 for c in categories_per_type.values()) >= 10


def test_success_probabilities_have_best_second_and_poor_tools(suite: ToolUseSuite) -> None:
    matrix = suite.success_matrix()
    assert matrix.shape == (len(suite.task_types), len(suite.tools))
    for row, spec in zip(matrix, TASK_TYPES, strict=True):
        ordered = np.sort(row)[::-1]
        assert 0.85 <= ordered[0] <= 0.95 and 0.4 <= ordered[1] <= 0.6
        assert np.all((ordered[2:] >= 0.02) & (ordered[2:] <= 0.2))
        assert suite.tools[int(np.argmax(row))] == spec.best_tool == suite.best_tool(spec.name)


def test_execute_statistics_match_the_probabilities(suite: ToolUseSuite) -> None:
    sub = next(s for t in suite.train_tasks for s in t.subtasks if s.task_type == "fetch_page")
    rng = np.random.default_rng(0)
    n = 4000
    for tool in ("http_get", "html_extract", "sql_query"):
        p = suite.success_probability(sub, tool)
        results = [suite.execute(sub, tool, rng) for _ in range(n)]
        rate = sum(r.success for r in results) / n
        assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n)
        durations = np.array([r.duration_s for r in results])
        mean = suite.expected_duration(tool, "fetch_page")
        # lognormal with sigma 0.5: std of the mean = mean * sqrt(exp(0.25) - 1) / sqrt(n)
        assert abs(durations.mean() - mean) < 4 * mean * math.sqrt(math.exp(0.25) - 1) / math.sqrt(
            n
        )
        assert np.all(durations > 0)


def test_outputs_pass_the_quality_check_exactly_when_the_call_succeeds(suite: ToolUseSuite) -> None:
    rng = np.random.default_rng(1)
    subtasks = [s for t in suite.train_tasks[:60] for s in t.subtasks]
    seen = set()
    for sub in subtasks:
        for tool in suite.tools:
            result = suite.execute(sub, tool, rng)
            assert suite.quality_checks[tool](result.output) is result.success
            assert (result.error is None) is result.success
            seen.add(result.success)
    assert seen == {True, False}


def test_execute_is_reproducible_from_the_generator(suite: ToolUseSuite) -> None:
    sub = suite.heldout_tasks[0].subtasks[0]
    a = [suite.execute(sub, "web_search", np.random.default_rng(5)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_degradation_switches_at_the_decision_index() -> None:
    suite = ToolUseSuite(
        SuiteConfig(
            seed=0,
            num_tasks=100,
            degrade_tools=("web_search",),
            degrade_at=50,
            degraded_success=0.1,
        )
    )
    sub = next(
        s
        for t in suite.train_tasks + suite.heldout_tasks
        for s in t.subtasks
        if s.task_type == "find_papers"
    )
    p = suite.success_probability(sub, "web_search")
    assert p >= 0.85
    assert suite.success_probability(sub, "web_search", decision_index=49) == p
    assert suite.success_probability(sub, "web_search", decision_index=50) == 0.1
    assert suite.success_probability(
        sub, "doc_search", decision_index=50
    ) == suite.success_probability(sub, "doc_search")
    assert suite.best_tool("find_papers", decision_index=50) == "doc_search"
    rng = np.random.default_rng(0)
    late = sum(
        suite.execute(sub, "web_search", rng, decision_index=60).success for _ in range(2000)
    )
    assert abs(late / 2000 - 0.1) < 4 * math.sqrt(0.09 / 2000)


def test_unknown_tool_and_bad_configs_raise_with_the_fix(suite: ToolUseSuite) -> None:
    sub = suite.train_tasks[0].subtasks[0]
    with pytest.raises(ToolError, match="web_search"):
        suite.execute(sub, "teleport", np.random.default_rng(0))
    with pytest.raises(ConfigError, match="degrade_at"):
        SuiteConfig(degrade_tools=("web_search",))
    with pytest.raises(ConfigError, match="unknown tools"):
        SuiteConfig(degrade_tools=("teleport",), degrade_at=1)
    with pytest.raises(ConfigError, match="best_success"):
        SuiteConfig(best_success=(0.9, 0.8))
    with pytest.raises(ConfigError, match="split"):
        suite.tasks("test")  # type: ignore[arg-type]


def test_featurize_and_descriptions(suite: ToolUseSuite) -> None:
    x = suite.featurize(suite.train_tasks[0].text)
    assert x.shape == (suite.feature_dim,) and x.dtype == np.float32
    assert set(suite.tool_descriptions) == set(suite.tools)
    assert suite.expected_duration("file_read") < suite.expected_duration("web_search")
