"""The top-level public names are a promise: changing them is a decision."""

from __future__ import annotations

import learnloop


def test_public_names_are_pinned() -> None:
    assert sorted(learnloop.__all__) == sorted(
        [
            "ClosedError",
            "ConfigError",
            "ConflictError",
            "Episode",
            "EpisodeId",
            "EpisodeQuery",
            "InvalidInputError",
            "LearnloopError",
            "NotFoundError",
            "Observation",
            "OutcomeStatus",
            "Recorder",
            "RecorderConfig",
            "Step",
            "Store",
            "StoreError",
            "__version__",
            "negative_reward",
            "neutral_reward",
            "open_store",
            "positive_reward",
            "terminal_reward",
        ]
    )
    for name in learnloop.__all__:
        assert hasattr(learnloop, name), name
