from __future__ import annotations

import doctest
import threading
from pathlib import Path

import numpy as np
import pytest

import learnloop.prompts.agent
from learnloop.envs import SuiteConfig, ToolUseSuite
from learnloop.errors import BudgetExceededError, LLMError
from learnloop.prompts.agent import AgentConfig, LLMToolAgent, explore_tools
from learnloop.prompts.llm import ChatRequest, ChatResponse, ScriptedLLMClient, TokenUsage
from learnloop.prompts.template import PromptTemplate
from learnloop.prompts.usage import Budget, MeteredClient
from learnloop.recorder import Recorder
from learnloop.store import EpisodeQuery, SqliteStore

SUITE = ToolUseSuite(SuiteConfig(seed=0, num_tasks=100))
SUBTASKS = [sub for task in SUITE.train_tasks[:12] for sub in task.subtasks]


def oracle(request: ChatRequest) -> str:
    """Answers the best tool of the sub-task named in the last message."""
    text = request.messages[-1]["content"]
    return next(sub.best_tool for sub in SUBTASKS if sub.text == text)


def test_oracle_answers_score_the_suites_probabilities() -> None:
    agent = LLMToolAgent(ScriptedLLMClient(default=oracle), SUITE)
    evaluation = agent.evaluate(PromptTemplate(), SUBTASKS)
    assert [a.task for a in evaluation.attempts] == [s.text for s in SUBTASKS]
    assert evaluation.accuracy == 1.0
    expected = np.mean([SUITE.success_probability(s, s.best_tool) for s in SUBTASKS])
    assert evaluation.success == pytest.approx(expected)


def test_requests_carry_the_prompt_and_a_grammar_of_the_tool_names() -> None:
    client = ScriptedLLMClient(default="file_read")
    agent = LLMToolAgent(client, SUITE, AgentConfig(num_workers=1))
    agent.evaluate(PromptTemplate(instructions=("Pick well.",)), SUBTASKS[:1])
    request = client.requests[0]
    assert request.messages[0]["content"].startswith("Pick well.")
    assert request.messages[-1]["content"] == SUBTASKS[0].text
    assert request.grammar is not None and request.grammar.count("|") == len(SUITE.tools) - 1
    assert request.temperature == 0.0 and request.seed is None


def test_same_subtask_same_draw_for_every_prompt() -> None:
    """Tool executions use common random numbers: the same tool gives the same outcome."""
    first = LLMToolAgent(ScriptedLLMClient(default="shell_exec"), SUITE).evaluate(
        PromptTemplate(), SUBTASKS
    )
    second = LLMToolAgent(ScriptedLLMClient(default="shell_exec"), SUITE).evaluate(
        PromptTemplate(instructions=("Other prompt.",)), SUBTASKS
    )
    assert [a.success for a in first.attempts] == [a.success for a in second.attempts]
    assert [a.reward for a in first.attempts] == [a.reward for a in second.attempts]


def test_an_answer_that_names_no_tool_is_a_failed_attempt() -> None:
    evaluation = LLMToolAgent(ScriptedLLMClient(default="I think grep"), SUITE).evaluate(
        PromptTemplate(), SUBTASKS[:3]
    )
    assert all(a.chosen == "" and not a.success for a in evaluation.attempts)
    assert evaluation.success == 0.0 and evaluation.mean_reward == -1.0


class _Flaky:
    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def complete(self, request: ChatRequest) -> ChatResponse:
        with self.lock:
            self.calls += 1
            if self.calls % 2:
                raise LLMError("server hiccup")
        return ChatResponse(text="file_read", finish_reason="stop", usage=TokenUsage(), model="m")


def test_a_failed_model_call_is_recorded_as_data_not_raised() -> None:
    evaluation = LLMToolAgent(_Flaky(), SUITE, AgentConfig(num_workers=1)).evaluate(
        PromptTemplate(), SUBTASKS[:4]
    )
    assert [a.chosen for a in evaluation.attempts] == ["", "file_read", "", "file_read"]


def test_a_spent_budget_ends_the_evaluation() -> None:
    client = MeteredClient(ScriptedLLMClient(default="file_read"), budget=Budget(max_calls=2))
    with pytest.raises(BudgetExceededError):
        LLMToolAgent(client, SUITE).evaluate(PromptTemplate(), SUBTASKS[:5])


def test_attempts_are_recorded_as_episodes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    recorder = Recorder(store)
    template = PromptTemplate()
    agent = LLMToolAgent(ScriptedLLMClient(default=oracle), SUITE, recorder=recorder)
    evaluation = agent.evaluate(template, SUBTASKS[:5])
    recorder.close()
    episodes = store.query_episodes(EpisodeQuery(agent_id="llm-agent"))
    store.close()
    assert len(episodes) == 5
    by_task = {e.task: e for e in episodes}
    for attempt in evaluation.attempts:
        episode = by_task[attempt.task]
        assert episode.versions == {"prompt": template.fingerprint()}
        assert episode.steps[0].tool == attempt.chosen
        assert (episode.status.value == "success") == attempt.success
        assert episode.steps[0].reward == pytest.approx(attempt.reward)


def test_explore_tools_tries_every_tool(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    recorder = Recorder(store)
    count = explore_tools(SUITE, SUBTASKS[:2], recorder, trials_per_tool=2)
    recorder.close()
    assert count == 2 * len(SUITE.tools) * 2
    episodes = store.query_episodes(EpisodeQuery(agent_id="explorer"))
    store.close()
    assert len(episodes) == count
    assert {e.steps[0].tool for e in episodes} == set(SUITE.tools)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(learnloop.prompts.agent).failed == 0
