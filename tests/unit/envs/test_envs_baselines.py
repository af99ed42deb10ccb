"""Tests of learnloop.envs.baselines: the gap between random and oracle that learning fills."""

from __future__ import annotations

import math

import numpy as np
import pytest

from learnloop.envs import SuiteConfig, ToolUseSuite
from learnloop.envs.baselines import (
    evaluate_policy,
    fit_keyword_tools,
    keyword_policy,
    oracle_policy,
    random_policy,
)
from learnloop.errors import ConfigError


@pytest.fixture(scope="module")
def suite() -> ToolUseSuite:
    return ToolUseSuite(SuiteConfig(seed=1, num_tasks=500))


def test_oracle_is_40_points_above_random_and_keyword_in_between(suite: ToolUseSuite) -> None:
    scores = {
        name: evaluate_policy(suite, policy, np.random.default_rng(7), repeats=3)
        for name, policy in (
            ("random", random_policy(suite)),
            ("keyword", keyword_policy(suite)),
            ("oracle", oracle_policy(suite)),
        )
    }
    assert scores["oracle"].task_success - scores["random"].task_success >= 0.40
    assert scores["oracle"].expected_task_success - scores["random"].expected_task_success >= 0.40
    assert (
        scores["random"].task_success + 0.1
        < scores["keyword"].task_success
        < scores["oracle"].task_success - 0.2
    )
    assert scores["oracle"].decision_accuracy == 1.0
    # random picks the best of 14 tools 1/14 of the time
    assert scores["random"].decision_accuracy == pytest.approx(1 / 14, abs=0.03)
    assert scores["random"].num_attempts == 3 * len(suite.heldout_tasks)


def test_expected_success_of_a_fixed_policy_by_hand() -> None:
    suite = ToolUseSuite(SuiteConfig(seed=2, num_tasks=20))
    score = evaluate_policy(suite, lambda sub, rng: "file_read", np.random.default_rng(0))
    expected = sum(
        math.prod(suite.success_probability(sub, "file_read") for sub in task.subtasks)
        for task in suite.heldout_tasks
    ) / len(suite.heldout_tasks)
    assert score.expected_task_success == pytest.approx(expected)


def test_keyword_tools_cover_every_category(suite: ToolUseSuite) -> None:
    tools = fit_keyword_tools(suite)
    assert set(tools) == {"search", "file_ops", "execute", "network", "data", "general"}
    assert tools["execute"] == "shell_exec"  # every "execute" type is run by the shell
    assert set(tools.values()) <= set(suite.tools)


def test_repeats_must_be_positive(suite: ToolUseSuite) -> None:
    with pytest.raises(ConfigError, match="repeats"):
        evaluate_policy(suite, random_policy(suite), np.random.default_rng(0), repeats=0)
