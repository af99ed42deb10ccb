from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from learnloop.episode import (
    Episode,
    Observation,
    OutcomeStatus,
    Step,
    negative_reward,
    neutral_reward,
    positive_reward,
    terminal_reward,
)
from learnloop.errors import InvalidInputError


def _episode(rewards: list[float], **fields) -> Episode:
    return Episode.new(
        "t",
        steps=[Step.new(i, f"a{i}", reward=r, result=i) for i, r in enumerate(rewards)],
        **fields,
    )


def test_discounted_return_matches_hand_values() -> None:
    assert _episode([1, 1, 1]).discounted_return(0.9) == pytest.approx(2.71)
    assert _episode([1, 1, 1]).discounted_return(0.5) == pytest.approx(1.75)
    assert _episode([1, 1, 1]).discounted_return(1.0) == pytest.approx(3.0)
    # terminal reward counts after the last step: 1 + 0.9 * (1 + 0.9 * (1 + 2))
    assert _episode([1, 1, 1], terminal_reward=2.0).discounted_return(0.9) == pytest.approx(4.33)
    assert _episode([]).discounted_return(0.9) == 0.0
    with pytest.raises(InvalidInputError, match="gamma"):
        _episode([1]).discounted_return(1.5)


def test_reward_kinds_are_plain_floats() -> None:
    assert positive_reward(0.5) == 0.5
    assert negative_reward(0.2) == -0.2
    assert negative_reward(-0.2) == -0.2
    assert neutral_reward() == 0.0
    assert terminal_reward(3) == 3.0
    with pytest.raises(InvalidInputError):
        positive_reward(-1)
    with pytest.raises(InvalidInputError, match="finite"):
        terminal_reward(float("nan"))


def test_totals_trajectory_duration() -> None:
    episode = _episode([1.0, -0.5], terminal_reward=2.0, started_at=10.0, ended_at=12.5)
    assert episode.total_reward == pytest.approx(2.5)
    assert episode.trajectory() == [("a0", 0, 1.0), ("a1", 1, 1.5)]
    assert episode.duration == 2.5
    assert _episode([]).duration is None
    assert _episode([], terminal_reward=1.0).rewards == [1.0]


def test_step_checks_reward_and_confidence() -> None:
    with pytest.raises(InvalidInputError, match="confidence must lie in"):
        Step.new(0, "a", confidence=1.5)
    with pytest.raises(InvalidInputError, match="finite"):
        Step.new(0, "a", reward=float("inf"))


def test_lossless_json_roundtrip() -> None:
    episode = Episode.new(
        "naïve ✓ 日本",
        steps=[
            Step.new(
                0,
                "call",
                tool="search",
                state={"q": "x", "nested": {"list": [1, 2.000000000000001, None, "é"]}},
                result={"hits": [0.1, 0.2]},
                reward=0.30000000000000004,
                reward_components={"success": 1.0, "penalty": -0.7},
                confidence=0.9,
                success=True,
                prompt_token_ids=(1, 2),
                completion_token_ids=(3,),
                completion_logprobs=(-0.25,),
            )
        ],
        observations=[Observation(index=1, source="sensor", content={"t": 21.5}, confidence=0.8)],
        parent_id="parent",
        expected_outcome={"answer": 42},
        acceptance_criteria=["is correct"],
        status=OutcomeStatus.ABORTED,
        status_reason="user cancelled",
        versions={"prompt": "v3"},
    )
    again = Episode.from_dict(json.loads(json.dumps(episode.to_dict())))
    assert again == episode
    assert isinstance(again.steps[0].prompt_token_ids, tuple)


def test_from_dict_rejects_malformed() -> None:
    with pytest.raises(InvalidInputError, match="'id' must be a string"):
        Episode.from_dict({"task": "x"})
    with pytest.raises(InvalidInputError, match="unknown episode status"):
        Episode.from_dict({"id": "a", "task": "x", "status": "finished"})
    with pytest.raises(InvalidInputError, match="unknown step field"):
        Episode.from_dict(
            {"id": "a", "task": "x", "steps": [{"index": 0, "action": "a", "foo": 1}]}
        )


def test_statuses() -> None:
    assert [s.value for s in OutcomeStatus] == [
        "in_progress",
        "success",
        "failure",
        "aborted",
        "timeout",
        "evicted",
    ]
    assert not OutcomeStatus.IN_PROGRESS.is_final and OutcomeStatus.TIMEOUT.is_final


@given(st.lists(st.floats(-10, 10), max_size=20), st.floats(0, 1))
def test_discounted_return_is_bounded(rewards: list[float], gamma: float) -> None:
    value = _episode(rewards).discounted_return(gamma)
    assert math.isfinite(value)
    assert abs(value) <= sum(abs(r) for r in rewards) + 1e-9
