"""Reward functions, combinators and write-back against numbers worked by hand."""

from __future__ import annotations

import doctest
import logging
import math
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import learnloop.rewards
import learnloop.rewards.shaping
import learnloop.rewards.signal
import learnloop.rewards.tool
from learnloop.episode import Episode, Step
from learnloop.errors import ConfigError, InvalidInputError
from learnloop.rewards import (
    LengthPenalty,
    LengthPenaltyConfig,
    OutcomeReward,
    OutcomeRewardConfig,
    QualitySpec,
    RewardRegistry,
    RewardSignal,
    ToolCallContext,
    ToolReward,
    ToolRewardConfig,
    ToolUsageConfig,
    ToolUsageReward,
    VerificationConfig,
    VerificationReward,
    as_signal,
    clip_reward,
    named,
    normalize_quality_check,
    reward_name,
    score_episode,
    score_steps,
    speedup,
    sum_rewards,
    tool_call_from_step,
    weighted_sum,
)


@pytest.mark.parametrize(
    "module",
    [
        learnloop.rewards,
        learnloop.rewards.signal,
        learnloop.rewards.tool,
        learnloop.rewards.shaping,
    ],
    ids=lambda module: module.__name__,
)
def test_docstring_examples_run(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


def test_public_names_exist() -> None:
    missing = [name for name in learnloop.rewards.__all__ if not hasattr(learnloop.rewards, name)]
    assert missing == []


# --- RewardSignal ----------------------------------------------------------------------


def test_signal_of_sums_components() -> None:
    signal = RewardSignal.of({"a": 0.1, "b": 0.2, "c": -0.3})
    assert signal.total == math.fsum([0.1, 0.2, -0.3])
    assert dict(signal.components) == {"a": 0.1, "b": 0.2, "c": -0.3}


def test_signal_rejects_inconsistent_total_and_bad_values() -> None:
    with pytest.raises(InvalidInputError, match="not the sum"):
        RewardSignal(total=1.0, components={"a": 0.5})
    with pytest.raises(InvalidInputError, match="finite"):
        RewardSignal.of({"a": math.nan})
    with pytest.raises(InvalidInputError, match="finite"):
        RewardSignal(total=math.inf)
    with pytest.raises(InvalidInputError, match="names"):
        RewardSignal.of({"": 1.0})


def test_signal_copies_components() -> None:
    parts = {"a": 1.0}
    signal = RewardSignal(total=1.0, components=parts)
    parts["a"] = 5.0
    assert signal.components["a"] == 1.0


def test_signal_prefix_scale_and_round_trip() -> None:
    signal = RewardSignal.of({"success": 1.0, "quality": 0.5})
    assert dict(signal.prefixed("tool").components) == {"tool/success": 1.0, "tool/quality": 0.5}
    assert dict(RewardSignal(total=2.0).prefixed("x").components) == {"x": 2.0}
    scaled = signal.scaled(-2.0)
    assert scaled.total == -3.0 and dict(scaled.components) == {"success": -2.0, "quality": -1.0}
    assert RewardSignal.from_dict(signal.to_dict()) == signal
    assert float(signal) == 1.5
    with pytest.raises(InvalidInputError):
        RewardSignal.from_dict({"components": {}})


def test_as_signal() -> None:
    assert dict(as_signal(0.5, "bonus").components) == {"bonus": 0.5}
    signal = RewardSignal.of({"x": 1.0})
    assert as_signal(signal) is signal
    with pytest.raises(InvalidInputError):
        as_signal(math.nan)


@settings(max_examples=50, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
        max_size=8,
    )
)
def test_signal_total_is_fsum(parts: dict[str, float]) -> None:
    signal = RewardSignal.of(parts)
    assert signal.total == math.fsum(parts.values())
    assert RewardSignal.from_dict(signal.to_dict()) == signal


# --- speedup and the tool reward -------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "expected", "cap", "value"),
    [
        (1.0, 1.5, 1.0, 0.5),  # 1.5 / 1.0 - 1
        (0.5, 1.0, 1.0, 1.0),  # twice as fast: exactly the cap
        (0.25, 1.0, 1.0, 1.0),  # 3 capped at 1
        (0.25, 1.0, 2.0, 2.0),
        (0.25, 1.0, 5.0, 3.0),
        (1.0, 1.0, 1.0, 0.0),  # on time
        (2.0, 1.0, 1.0, 0.0),  # slower
        (0.0, 1.0, 1.0, 1.0),  # instant
        (None, 1.0, 1.0, 0.0),
        (1.0, None, 1.0, 0.0),
    ],
)
def test_speedup(duration: float | None, expected: float | None, cap: float, value: float) -> None:
    assert speedup(duration, expected, cap) == pytest.approx(value)


def test_tool_reward_success_fast_with_passing_dict_check() -> None:
    reward = ToolReward(quality_checks={"search": {"required_fields": ["hits"], "min_length": 5}})
    call = ToolCallContext(
        tool="search",
        success=True,
        duration_s=1.0,
        expected_duration_s=1.5,
        output={"hits": [1, 2]},
        user_feedback=1,
    )
    signal = reward(call)
    # 1 + 0.5 * 0.5 + 0.5 + 1
    assert dict(signal.components) == {
        "success": 1.0,
        "efficiency": 0.25,
        "quality": 0.5,
        "feedback": 1.0,
    }
    assert signal.total == 2.75


def test_tool_reward_failure_gets_no_bonuses_by_default() -> None:
    reward = ToolReward(quality_checks={"search": lambda output: True})
    call = ToolCallContext(
        tool="search", success=False, duration_s=0.1, expected_duration_s=1.0, user_feedback=-1
    )
    assert dict(reward(call).components) == {
        "success": -1.0,
        "efficiency": 0.0,
        "quality": 0.0,
        "feedback": -1.0,
    }
    lenient = ToolReward(
        ToolRewardConfig(bonuses_require_success=False), {"search": lambda output: True}
    )
    # fast failure: speedup 9 capped at 1 -> 0.5; quality passes -> 0.5
    assert lenient(call).total == pytest.approx(-1.0 + 0.5 + 0.5 - 1.0)


def test_tool_reward_config_weights() -> None:
    cfg = ToolRewardConfig(
        success_reward=2.0,
        failure_reward=-3.0,
        efficiency_weight=1.0,
        speedup_cap=2.0,
        quality_bonus=0.1,
        feedback_weight=0.5,
    )
    reward = ToolReward(cfg, {"t": {"min_length": 1}})
    call = ToolCallContext(
        tool="t",
        success=True,
        duration_s=1.0,
        expected_duration_s=4.0,
        output="x",
        user_feedback=-1,
    )
    # 2 + 1.0 * min(2, 3) + 0.1 - 0.5
    assert reward(call).total == pytest.approx(3.6)
    assert reward(ToolCallContext(tool="t", success=False)).total == -3.0


def test_tool_reward_without_checks_or_durations() -> None:
    signal = ToolReward()(ToolCallContext(tool="anything", success=True))
    assert dict(signal.components) == {
        "success": 1.0,
        "efficiency": 0.0,
        "quality": 0.0,
        "feedback": 0.0,
    }


def test_tool_and_context_checks_must_both_pass() -> None:
    reward = ToolReward(
        quality_checks={"calc": {"required_fields": ["value"]}},
        context_quality_checks={"math": {"patterns": [r"\d"]}},
    )

    def quality(output: Any, context: str | None) -> float:
        call = ToolCallContext(tool="calc", success=True, output=output, context=context)
        return reward(call).components["quality"]

    assert quality({"value": 4}, "math") == 0.5
    assert quality({"value": "four"}, "math") == 0.0  # the context check fails
    assert quality({"value": "four"}, "prose") == 0.5  # no check for that context
    assert quality({"other": 4}, "math") == 0.0  # the tool check fails
    # a context check alone applies to any tool
    other = ToolCallContext(tool="search", success=True, output="42", context="math")
    assert reward(other).components["quality"] == 0.5
    assert reward.quality_passed(ToolCallContext(tool="search", success=True)) is None


def test_quality_check_that_raises_counts_as_failed(caplog: pytest.LogCaptureFixture) -> None:
    def broken(output: Any) -> bool:
        return bool(output["missing"])

    reward = ToolReward(quality_checks={"t": broken})
    with caplog.at_level(logging.DEBUG, logger="learnloop.rewards"):
        signal = reward(ToolCallContext(tool="t", success=True, output={}))
    assert signal.components["quality"] == 0.0
    assert signal.total == 1.0
    assert any("counted as failed" in r.getMessage() for r in caplog.records)


def test_quality_spec_rules() -> None:
    spec = QualitySpec(required_fields=("a", "b"))
    assert spec({"a": 1, "b": 0})
    assert not spec({"a": 1, "b": None})  # None counts as missing
    assert not spec({"a": 1})
    assert not spec("a and b")  # not a mapping
    assert QualitySpec(min_length=3)("abc")
    assert not QualitySpec(min_length=4)("abc")
    assert QualitySpec(min_length=8)({"k": 1})  # JSON text '{"k": 1}' has 8 characters
    assert not QualitySpec(min_length=9)({"k": 1})
    both = QualitySpec(patterns=(r"^\d+$", r"7"))
    assert both("1729")
    assert not both("1234")
    assert QualitySpec(patterns=(r'"status": "ok"',))({"status": "ok", "n": 1})
    assert QualitySpec()(None)  # no rules: passes


def test_quality_dicts_are_checked() -> None:
    with pytest.raises(ConfigError, match="min_lenght"):
        normalize_quality_check({"min_lenght": 3})
    with pytest.raises(ConfigError, match="min_lenght"):
        ToolReward(context_quality_checks={"math": {"min_lenght": 3}})
    with pytest.raises(ConfigError, match="regular expression"):
        QualitySpec.from_dict({"patterns": ["("]})
    with pytest.raises(ConfigError, match="list of strings"):
        QualitySpec.from_dict({"required_fields": "answer"})
    with pytest.raises(ConfigError, match="min_length"):
        QualitySpec(min_length=-1)
    with pytest.raises(ConfigError, match="quality check"):
        normalize_quality_check(42)  # type: ignore[arg-type]
    spec = QualitySpec(required_fields=("a",))
    assert normalize_quality_check(spec) is spec


def test_tool_call_context_validation() -> None:
    for bad in (2, True, -2):
        with pytest.raises(InvalidInputError, match="user_feedback"):
            ToolCallContext(tool="t", success=True, user_feedback=bad)
    with pytest.raises(InvalidInputError, match="duration_s"):
        ToolCallContext(tool="t", success=True, duration_s=-1.0)
    with pytest.raises(InvalidInputError, match="expected_duration_s"):
        ToolCallContext(tool="t", success=True, expected_duration_s=math.nan)


def test_tool_reward_config_validation() -> None:
    with pytest.raises(ConfigError, match="speedup_cap"):
        ToolRewardConfig(speedup_cap=-1.0)
    with pytest.raises(ConfigError, match="quality_bonus"):
        ToolRewardConfig(quality_bonus=math.inf)


def test_tool_call_from_step_and_score_step() -> None:
    step = Step.new(
        3,
        "lookup",
        tool="search",
        success=True,
        duration_s=0.5,
        result={"hits": [1]},
        state={"context": "facts"},
        metadata={"expected_duration_s": 1.0, "user_feedback": 1},
    )
    call = tool_call_from_step(step)
    assert call == ToolCallContext(
        tool="search",
        success=True,
        duration_s=0.5,
        expected_duration_s=1.0,
        output={"hits": [1]},
        user_feedback=1,
        context="facts",
    )
    reward = ToolReward(context_quality_checks={"facts": {"required_fields": ["hits"]}})
    # 1 + 0.5 * min(1, 1.0 / 0.5 - 1) + 0.5 + 1
    assert reward.score_step(step).total == 3.0
    failed = tool_call_from_step(Step.new(0, "run", error="timeout"))
    assert failed.tool == "run" and failed.success is False


# --- combinators -----------------------------------------------------------------------


def test_sum_rewards_prefixes_components() -> None:
    tool = ToolReward()
    combined = sum_rewards(tool.score_step, named("bonus", lambda step: 0.25))
    signal = combined(Step.new(0, "a", tool="t", success=True))
    assert dict(signal.components) == {
        "tool/success": 1.0,
        "tool/efficiency": 0.0,
        "tool/quality": 0.0,
        "tool/feedback": 0.0,
        "bonus": 0.25,
    }
    assert signal.total == 1.25


def test_sum_rewards_duplicate_names_and_nesting() -> None:
    one = named("r", lambda x: 1.0)
    inner = sum_rewards(one, one)
    assert dict(inner(None).components) == {"r": 1.0, "r_2": 1.0}
    outer = sum_rewards(inner, named("s", lambda x: RewardSignal.of({"k": 2.0})))
    assert dict(outer(None).components) == {"sum/r": 1.0, "sum/r_2": 1.0, "s/k": 2.0}
    assert outer(None).total == 4.0


def test_weighted_sum_from_dict_and_pairs() -> None:
    a = named("a", lambda x: RewardSignal.of({"p": 1.0, "q": 3.0}))
    b = named("b", lambda x: -2.0)
    from_dict = weighted_sum({a: 0.5, b: 2.0})
    from_pairs = weighted_sum([(a, 0.5), (b, 2.0)])
    for mix in (from_dict, from_pairs):
        signal = mix(None)
        assert dict(signal.components) == {"a/p": 0.5, "a/q": 1.5, "b": -4.0}
        assert signal.total == -2.0
    with pytest.raises(ConfigError, match="weight"):
        weighted_sum([(a, math.nan)])
    with pytest.raises(ConfigError, match="at least one"):
        sum_rewards()


def test_clip_reward() -> None:
    big = named("big", lambda x: RewardSignal.of({"a": 2.0, "b": 1.0}))
    clipped = clip_reward(big, -1.0, 1.0)
    signal = clipped(None)
    assert signal.total == 1.0
    assert dict(signal.components) == {"a": 2.0, "b": 1.0, "clip": -2.0}
    assert clip_reward(named("x", lambda x: -5.0), low=-2.0, high=None)(None).total == -2.0
    assert clip_reward(named("x", lambda x: 0.5))(None) == RewardSignal.of({"x": 0.5})
    assert reward_name(clipped) == "big"
    with pytest.raises(ConfigError, match="reversed"):
        clip_reward(big, 1.0, -1.0)


def test_reward_names() -> None:
    def my_reward(step: Step) -> float:
        return 0.0

    assert reward_name(my_reward) == "my_reward"
    assert reward_name(ToolReward()) == "tool"
    assert reward_name(ToolReward().score_step) == "tool"
    assert reward_name(LengthPenalty().step_signals) == "length"
    assert reward_name(lambda s: 0.0) == "reward"
    with pytest.raises(ConfigError):
        named("a/b", my_reward)


# --- registry --------------------------------------------------------------------------


def test_registry() -> None:
    registry: RewardRegistry[Episode] = RewardRegistry()
    outcome = OutcomeReward()
    registry.register("coder", outcome)
    assert registry.get("coder") is outcome
    assert "coder" in registry and "writer" not in registry
    with pytest.raises(ConfigError, match="writer"):
        registry.get("writer")
    with pytest.raises(ConfigError, match="replace=True"):
        registry.register("coder", LengthPenalty())
    registry.register("coder", LengthPenalty(), replace=True)
    assert registry.agent_types == ("coder",)
    ep = Episode.new("t", agent_id="coder", status="success")
    assert registry.score(ep.agent_id, ep) == RewardSignal.of({"steps": 0.0, "tokens": 0.0})
    fallback: RewardRegistry[Episode] = RewardRegistry(default=outcome)
    assert fallback.get("anyone") is outcome
    assert fallback.score("anyone", ep) == RewardSignal.of({"outcome": 1.0})


# --- outcome and shaped rewards --------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "value"),
    [
        ("success", 1.0),
        ("failure", -1.0),
        ("timeout", -1.0),
        ("aborted", -1.0),
        ("evicted", 0.0),
        ("in_progress", 0.0),
    ],
)
def test_outcome_reward_statuses(status: str, value: float) -> None:
    assert OutcomeReward()(Episode.new("t", status=status)) == RewardSignal.of({"outcome": value})


def test_outcome_reward_with_expected_outcome() -> None:
    reward = OutcomeReward(OutcomeRewardConfig(expected_weight=0.5, timeout=-0.5))
    ep = Episode.new(
        "t",
        status="success",
        outcome={"x": 10.5, "unit": "m"},
        expected_outcome={"x": 10.0, "unit": "cm"},
    )
    # 1 + 0.5 * (1 of 2 keys)
    assert dict(reward(ep).components) == {"outcome": 1.0, "expected": 0.25}
    cut = Episode.new("t", status="timeout")
    assert reward(cut).total == pytest.approx(-0.5 + 0.5 * 0.2)
    with pytest.raises(ConfigError, match="failure"):
        OutcomeRewardConfig(failure=math.nan)


def usage_episode() -> Episode:
    steps = [
        Step.new(0, "s", tool="search", state={"q": "x"}, success=True,
                 metadata={"expected_tool": "search"}),
        Step.new(1, "c", tool="calc", state={"e": "1+1"}, success=False,
                 metadata={"expected_tool": "search"}),
        Step.new(2, "s", tool="search", state={"q": "x"}, success=True,
                 metadata={"expected_tool": ["search", "web"]}),
        Step.new(3, "c", tool="calc", state={"e": "1+1"}, success=True),
        Step.new(4, "think"),
        Step.new(5, "c", tool="calc", state={"e": "1+1"}, success=True),
    ]  # fmt: skip
    return Episode.new("t", steps=steps)


def test_tool_usage_reward_step_by_step() -> None:
    reward = ToolUsageReward()
    per_step = [dict(s.components) for s in reward.step_signals(usage_episode())]
    zero = {"right_tool": 0.0, "wrong_tool": 0.0, "redundant": 0.0}
    assert per_step == [
        {**zero, "right_tool": 0.2},
        {**zero, "wrong_tool": -0.2},
        {**zero, "right_tool": 0.2, "redundant": -0.1},  # repeats step 0, which worked
        zero,  # repeats step 1, which failed: a retry, not redundant
        zero,  # no tool
        {**zero, "redundant": -0.1},  # repeats step 3, which worked
    ]
    total = reward(usage_episode())
    assert dict(total.components) == pytest.approx(
        {"right_tool": 0.4, "wrong_tool": -0.2, "redundant": -0.2}
    )
    assert total.total == pytest.approx(0.0)


def test_tool_usage_config() -> None:
    cfg = ToolUsageConfig(
        right_tool=1.0, wrong_tool=-2.0, redundant_call=0.0, expected_tool_key="best"
    )
    ep = Episode.new("t", steps=[Step.new(0, "a", tool="x", state={"best": "y"})])
    assert ToolUsageReward(cfg)(ep).total == -2.0
    bad = Episode.new("t", steps=[Step.new(0, "a", tool="x", metadata={"expected_tool": 3})])
    with pytest.raises(InvalidInputError, match="expected_tool"):
        ToolUsageReward()(bad)
    with pytest.raises(ConfigError, match="right_tool"):
        ToolUsageConfig(right_tool=math.inf)


def test_verification_reward() -> None:
    reward = VerificationReward()
    work_then_verify = Episode.new(
        "t",
        steps=[
            Step.new(0, "write code"),
            Step.new(1, "run", tool="Verify"),
            Step.new(2, "verify again"),
        ],
    )
    assert [s.total for s in reward.step_signals(work_then_verify)] == [0.0, 0.2, 0.0]
    verify_first = Episode.new("t", steps=[Step.new(0, "verify"), Step.new(1, "write")])
    strict = VerificationReward(VerificationConfig(missing=-0.3))
    assert [s.total for s in strict.step_signals(verify_first)] == [0.0, -0.3]
    assert dict(strict(verify_first).components) == {"verified": 0.0, "unverified": -0.3}
    flagged = Episode.new(
        "t",
        steps=[
            Step.new(0, "work"),
            Step.new(1, "verify", metadata={"verification": False}),
            Step.new(2, "pytest", tool="pytest", metadata={"verification": True}),
        ],
    )
    assert [s.total for s in reward.step_signals(flagged)] == [0.0, 0.0, 0.2]
    assert reward(Episode.new("t")).total == 0.0
    with pytest.raises(ConfigError, match="tools"):
        VerificationConfig(tools="verify")  # type: ignore[arg-type]


def test_length_penalty_steps_and_tokens() -> None:
    cfg = LengthPenaltyConfig(step_budget=2, step_penalty=0.1, token_budget=5, token_penalty=0.01)
    ep = Episode.new(
        "t",
        steps=[
            Step.new(0, "a", completion_token_ids=(1, 2, 3)),  # 3 used
            Step.new(1, "b", completion_token_ids=(1, 2, 3, 4)),  # 7 used: 2 over
            Step.new(2, "c", completion_token_ids=(1, 2)),  # 9 used: 2 more, and step 3 of 2
        ],
    )
    signals = LengthPenalty(cfg).step_signals(ep)
    assert [s.components["steps"] for s in signals] == pytest.approx([0.0, 0.0, -0.1])
    assert [s.components["tokens"] for s in signals] == pytest.approx([0.0, -0.02, -0.02])
    assert LengthPenalty(cfg)(ep).total == pytest.approx(-0.14)
    with pytest.raises(ConfigError, match="neither"):
        LengthPenaltyConfig(step_budget=None)
    with pytest.raises(ConfigError, match="cost"):
        LengthPenaltyConfig(step_penalty=-0.1)
    with pytest.raises(ConfigError, match="step_budget"):
        LengthPenaltyConfig(step_budget=-1)


# --- writing rewards back --------------------------------------------------------------


def test_score_episode_step_level() -> None:
    ep = Episode.new(
        "t",
        steps=[
            Step.new(0, "a", tool="search", success=True, reward=7.0),
            Step.new(1, "b", tool="calc", success=False),
        ],
    )
    scored = score_episode(ep, ToolReward().score_step)
    assert [s.reward for s in scored.steps] == [1.0, -1.0]
    assert dict(scored.steps[1].reward_components)["success"] == -1.0
    assert ep.steps[0].reward == 7.0  # the original is untouched
    plain = score_episode(ep, named("flat", lambda step: 0.5))
    assert [dict(s.reward_components) for s in plain.steps] == [{"flat": 0.5}, {"flat": 0.5}]
    # the copy survives serialization with its components
    assert Episode.from_dict(scored.to_dict()) == scored


def test_score_episode_add_merges_components() -> None:
    ep = Episode.new(
        "t",
        steps=[
            Step.new(0, "a", reward=1.5, reward_components={"success": 1.0, "quality": 0.5}),
            Step.new(1, "b", reward=2.0),
        ],
    )
    bonus = named("bonus", lambda step: RewardSignal.of({"success": 0.25, "style": 0.1}))
    added = score_episode(ep, bonus, combine="add")
    assert dict(added.steps[0].reward_components) == pytest.approx(
        {"success": 1.25, "quality": 0.5, "style": 0.1}
    )
    assert added.steps[0].reward == pytest.approx(1.85)
    # a bare recorded reward becomes the "reward" component
    assert dict(added.steps[1].reward_components) == pytest.approx(
        {"reward": 2.0, "success": 0.25, "style": 0.1}
    )
    with pytest.raises(ConfigError, match="combine"):
        score_episode(ep, bonus, combine="merge")  # type: ignore[arg-type]


def test_score_episode_episode_level() -> None:
    ep = Episode.new(
        "t", steps=[Step.new(0, "a", reward=0.5)], status="failure", terminal_reward=3.0
    )
    scored = score_episode(ep, OutcomeReward(), level="episode")
    assert scored.terminal_reward == -1.0
    assert scored.metadata["reward_components"] == {"outcome": -1.0}
    assert scored.steps == ep.steps
    assert scored.total_reward == -0.5
    penalty = LengthPenalty(LengthPenaltyConfig(step_budget=0))
    added = score_episode(scored, penalty, level="episode", combine="add")
    assert added.terminal_reward == pytest.approx(-1.05)
    assert added.metadata["reward_components"] == pytest.approx(
        {"outcome": -1.0, "steps": -0.05, "tokens": 0.0}
    )
    with pytest.raises(ConfigError, match="level"):
        score_episode(ep, OutcomeReward(), level="task")  # type: ignore[arg-type]


def test_score_steps_with_shaped_rewards() -> None:
    ep = usage_episode()
    shaped = score_steps(ep, ToolUsageReward().step_signals)
    assert [s.reward for s in shaped.steps] == pytest.approx([0.2, -0.2, 0.1, 0.0, 0.0, -0.1])
    assert dict(shaped.steps[2].reward_components) == pytest.approx(
        {"right_tool": 0.2, "wrong_tool": 0.0, "redundant": -0.1}
    )
    # tool reward recorded at run time, then shaping added on top
    recorded = score_episode(ep, ToolReward().score_step)
    verification = VerificationReward(VerificationConfig(missing=-0.5))
    both = score_steps(recorded, verification.step_signals, combine="add")
    assert both.steps[-1].reward == pytest.approx(1.0 - 0.5)
    assert both.steps[-1].reward_components["unverified"] == -0.5
    assert both.steps[-1].reward_components["success"] == 1.0
    with pytest.raises(InvalidInputError, match="one value per step"):
        score_steps(ep, named("short", lambda e: [1.0]))


# --- the tool reward's shortcut (no context, no re-checking) ---------------------------------


@settings(max_examples=200, deadline=None)
@given(
    success=st.booleans(),
    duration=st.floats(0.0, 10.0),
    expected=st.floats(0.0, 10.0),
    weight=st.sampled_from([0.5, 2, -1.0]),
    require=st.booleans(),
    output=st.sampled_from([{"hits": [1]}, {"hits": []}, None]),
)
def test_tool_reward_shortcut_gives_the_same_signal(
    success: bool, duration: float, expected: float, weight: float, require: bool, output: Any
) -> None:
    cfg = ToolRewardConfig(
        success_reward=1, efficiency_weight=weight, bonuses_require_success=require
    )
    reward = ToolReward(cfg, {"search": {"required_fields": ["hits"]}}, {"facts": lambda o: True})
    call = ToolCallContext(
        tool="search",
        success=success,
        duration_s=duration,
        expected_duration_s=expected,
        output=output,
        context="facts",
    )
    slow = reward(call)
    fast = reward._score_call("search", success, duration, expected, output, "facts")
    assert fast == slow
    assert [type(v) for v in fast.components.values()] == [float] * 4
    # the long way round: every part checked, the total their exact sum
    assert fast == RewardSignal.of(dict(fast.components))


def test_tool_reward_worked_example_and_overflow() -> None:
    reward = ToolReward(quality_checks={"t": {"required_fields": ["x"]}})
    # 0.25 s against 1 s: speedup min(1, 1/0.25 - 1) = 1, efficiency 0.5; quality 0.5
    signal = reward._score_call("t", True, 0.25, 1.0, {"x": 1}, None)
    assert signal.total == 2.0
    assert dict(signal.components) == {
        "success": 1.0,
        "efficiency": 0.5,
        "quality": 0.5,
        "feedback": 0.0,
    }
    # 1.5 s against 2 s: speedup 2/1.5 - 1 = 1/3; failed output: no quality bonus
    signal = reward._score_call("t", True, 1.5, 2.0, {}, None)
    assert signal.total == pytest.approx(1.0 + 0.5 / 3, abs=1e-15)
    # a weight times a speedup that overflows is rejected as before, naming the part
    huge = ToolReward(ToolRewardConfig(efficiency_weight=1e308, speedup_cap=1e308))
    with pytest.raises(InvalidInputError, match="efficiency"):
        huge(ToolCallContext(tool="t", success=True, duration_s=1e-300, expected_duration_s=1.0))
    with pytest.raises(InvalidInputError, match="efficiency"):
        huge._score_call("t", True, 1e-300, 1.0, None, None)
