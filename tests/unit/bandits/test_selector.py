import numpy as np
import pytest

from learnloop.bandits import ToolSelector, make_policy
from learnloop.bandits.contexts import HashedTextFeaturizer
from learnloop.errors import ConfigError, InvalidInputError, ToolError


def test_choose_update_stats_and_epsilon():
    selector = ToolSelector(make_policy("epsilon_greedy_keyword"), tools=["grep", "curl"], seed=1)
    choice = selector.choose("grep the logs")
    assert choice.context.key == "search" and choice.candidates == ("grep", "curl")
    assert choice.policy_version == "epsilon_greedy:0"
    assert choice.propensity == pytest.approx(selector.probabilities("grep the logs")[choice.tool])
    selector.update(choice, 1.0)
    stats = selector.stats()
    assert stats["total_updates"] == 1 and stats["epsilon"] == pytest.approx(0.0995)
    assert stats["contexts"]["search"]["counts"] == {choice.tool: 1}
    assert stats["contexts"]["search"]["top_tools"] == [choice.tool]
    assert selector.choose("grep the logs").policy_version == "epsilon_greedy:1"


def test_candidates_subset_unknown_tools_and_new_tool_cold_start():
    selector = ToolSelector(make_policy("ucb1"), tools=["a", "b"], seed=0)
    assert selector.choose("x", ["b"]).tool == "b"
    with pytest.raises(ToolError):
        selector.choose("x", ["zzz"])
    with pytest.raises(ToolError):
        ToolSelector(make_policy("ucb1")).choose("x")
    for _ in range(4):
        c = selector.choose("x")
        selector.update(c, 1.0)
    selector.add_tool("c")  # untried in this context: UCB1 tries it first
    assert selector.choose("x").tool == "c"


def test_update_rejects_foreign_choice_and_bad_reward():
    a = ToolSelector(make_policy("ucb1"), tools=["x", "y"])
    b = ToolSelector(make_policy("ucb1"), tools=["y", "x"])
    choice = a.choose("task")
    with pytest.raises(InvalidInputError):
        b.update(choice, 1.0)
    with pytest.raises(InvalidInputError):
        a.update(choice, float("nan"))


def test_dim_mismatch_is_a_config_error():
    with pytest.raises(ConfigError, match="dim"):
        ToolSelector(make_policy("squarecb", dim=64), featurizer=HashedTextFeaturizer(dim=128))


@pytest.mark.parametrize(
    "name", ["epsilon_greedy", "ucb1", "thompson", "linucb", "squarecb", "linear_thompson"]
)
def test_export_import_continues_identically(name):
    featurizer = (
        HashedTextFeaturizer(dim=128) if name in ("linucb", "squarecb", "linear_thompson") else None
    )
    kwargs = {"dim": 128} if featurizer else {}
    selector = ToolSelector(
        make_policy(name, **kwargs), featurizer=featurizer, tools=["a", "b", "c"], seed=5
    )
    rng = np.random.default_rng(0)
    for i in range(50):
        c = selector.choose(f"task {i % 4} read file")
        selector.update(c, float(rng.random() < 0.5))
    clone = ToolSelector.from_dict(selector.to_dict())
    assert clone.stats() == selector.stats()
    text = "task 1 read file"
    for tool, v in selector.values(text).items():
        assert clone.values(text)[tool] == pytest.approx(v)
    with pytest.raises(InvalidInputError):
        ToolSelector.from_dict({"format": "other"})


def test_unknown_policy_name():
    with pytest.raises(ConfigError, match="unknown policy"):
        make_policy("nope")
