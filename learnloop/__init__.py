"""learnloop: the learning loop for tool-using agents.

Record every attempt as an episode, score it, attribute credit to its steps, and
improve the agent's tool choice, prompts and weights from its own experience.
"""

from __future__ import annotations

from learnloop.episode import (
    Episode,
    EpisodeId,
    Observation,
    OutcomeStatus,
    Step,
    negative_reward,
    neutral_reward,
    positive_reward,
    terminal_reward,
)
from learnloop.errors import (
    ClosedError,
    ConfigError,
    ConflictError,
    InvalidInputError,
    LearnloopError,
    NotFoundError,
    StoreError,
)
from learnloop.recorder import Recorder, RecorderConfig
from learnloop.store import EpisodeQuery, Store, open_store

__version__ = "0.1.0"

__all__ = [
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
