"""The recorder's fast construction of final episodes matches ``from_dict``."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from learnloop.episode import Episode, Step
from learnloop.open_episode import build_step, episode_from_body
from learnloop.recorder import Recorder
from learnloop.store import SqliteStore

FULL_STEP: dict[str, Any] = {
    "index": 4,
    "action": "call search",
    "tool": "search",
    "state": {"q": "x"},
    "decision": "because",
    "result": [1, {"a": None}],
    "reward": -0.5,
    "reward_components": {"success": 1.0, "cost": -1.5},
    "credit": 0.25,
    "confidence": 0.75,
    "success": False,
    "error": "ValueError: no",
    "duration_s": 0.125,
    "started_at": 1_700_000_000.5,
    "prompt_token_ids": [1, 2],
    "completion_token_ids": [3],
    "completion_logprobs": [-0.1],
    "metadata": {"k": "v"},
}


@pytest.mark.parametrize(
    "record",
    [FULL_STEP, {"index": 0, "action": "a"}, {**FULL_STEP, "result": None, "state": {}}],
)
def test_build_step_matches_from_dict(record: dict[str, Any]) -> None:
    built, reference = build_step(record), Step.from_dict(record)
    assert type(built) is Step and built == reference
    for f in dataclasses.fields(Step):
        assert getattr(built, f.name) == getattr(reference, f.name), f.name
        assert type(getattr(built, f.name)) is type(getattr(reference, f.name)), f.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.reward = 1.0  # type: ignore[misc]
    assert built.to_dict() == reference.to_dict()


def test_build_step_covers_every_field() -> None:
    assert set(FULL_STEP) == {f.name for f in dataclasses.fields(Step)}
    assert build_step(FULL_STEP).to_dict() == FULL_STEP


def test_episode_from_body_matches_from_dict(tmp_path: Any) -> None:
    store = SqliteStore(tmp_path / "body.db")
    with Recorder(store) as rec:
        eid = rec.begin(
            "t", acceptance_criteria=["c1"], expected_outcome={"a": 1}, versions={"p": "v1"}
        )
        rec.step(eid, "a", prompt_token_ids=[1], completion_logprobs=[-0.5], reward=0.5)
        rec.observe(eid, {"seen": 1}, confidence=0.5)
        final = rec.complete(eid, status="failure", reward=1.0, reason="r", outcome={"o": 2})
    body = final.to_dict()
    assert episode_from_body(body) == Episode.from_dict(body) == final
    assert store.get_episode(eid) == final and final.total_reward == pytest.approx(1.5)
    store.close()
