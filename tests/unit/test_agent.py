import asyncio
import time

import pytest

from learnloop.agent import ToolAgent, ToolAgentConfig
from learnloop.bandits import ToolSelector, make_policy
from learnloop.recorder import Recorder
from learnloop.store import open_store


def agent_with(tools, **config):
    agent = ToolAgent(ToolSelector(make_policy("ucb1"), seed=0), config=ToolAgentConfig(**config))
    for name, fn in tools.items():
        agent.register_tool(name, fn, expected_duration_s=1.0)
    return agent


def test_failing_hanging_and_async_tools_are_failed_steps(tmp_path):
    def boom(task):
        raise RuntimeError("disk on fire")

    def hang(task):
        time.sleep(1.0)

    async def fine(task):
        await asyncio.sleep(0)
        return {"answer": task}

    store = open_store(f"sqlite:///{tmp_path}/s.db")
    recorder = Recorder(store)
    agent = ToolAgent(
        ToolSelector(make_policy("ucb1"), seed=0),
        recorder=recorder,
        config=ToolAgentConfig(timeout_s=0.1),
    )
    agent.register_tool("boom", boom)
    agent.register_tool("hang", hang)
    agent.register_tool("fine", fine, quality_check=lambda out: "answer" in out)
    results = {}
    for _ in range(3):  # UCB1 tries each untried tool once
        r = agent.execute_with_learning("do it", context="general")
        results[r.tool] = r
    assert set(results) == {"boom", "hang", "fine"}
    assert not results["boom"].success and "disk on fire" in results["boom"].error
    assert not results["hang"].success and "timed out" in results["hang"].error
    assert results["fine"].success and results["fine"].output == {"answer": "do it"}
    assert results["fine"].reward.components["success"] == 1.0
    assert results["fine"].reward.total > results["boom"].reward.total
    assert results["fine"].value_estimate == pytest.approx(results["fine"].reward.total)
    agent.close()
    recorder.close()
    episode = store.get_episode(results["boom"].episode_id)
    step = episode.steps[0]
    assert step.tool == "boom" and step.success is False and step.state["propensity"] == 1.0
    assert step.reward == pytest.approx(results["boom"].reward.total)
    store.close()


def test_learning_off_leaves_the_selector_untouched():
    agent = agent_with({"a": lambda t: "x"}, learning=False)
    agent.execute_with_learning("task")
    assert agent.selector.num_updates == 0
    agent.close()


def test_learns_to_prefer_the_tool_that_works():
    agent = agent_with({"good": lambda t: {"ok": 1}, "bad": lambda t: 1 / 0})
    picks = [agent.execute_with_learning("fetch the page").tool for _ in range(30)]
    assert picks[-10:].count("good") >= 9
    agent.close()
