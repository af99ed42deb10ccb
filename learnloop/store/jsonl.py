"""JSONL export and import of episodes: one ``Episode.to_dict`` object per line.

Import is all or nothing: every line is parsed and validated (with pydantic, since
the file comes from outside) before anything is written, and a bad line is
reported with its number.

>>> import io, tempfile, os
>>> from learnloop.episode import Episode
>>> from learnloop.store.sqlite import SqliteStore
>>> store = SqliteStore(os.path.join(tempfile.mkdtemp(), "a.db"))
>>> store.add_episodes([Episode.new("t", status="success")])
>>> buffer = io.StringIO()
>>> export_jsonl(store, buffer)
1
>>> other = SqliteStore(os.path.join(tempfile.mkdtemp(), "b.db"))
>>> import_jsonl(other, io.StringIO(buffer.getvalue()))
1
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import IO, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from learnloop.episode import Episode, OutcomeStatus
from learnloop.errors import InvalidInputError
from learnloop.store.base import EpisodeQuery, EpisodeStore

__all__ = [
    "EpisodeModel",
    "ObservationModel",
    "StepModel",
    "export_jsonl",
    "import_jsonl",
    "read_jsonl",
]


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return value


class StepModel(BaseModel):
    """An episode step as it arrives from outside (files, remote agents)."""

    model_config = ConfigDict(extra="forbid", strict=False)

    index: int = Field(ge=0)
    action: str
    tool: str | None = None
    state: dict[str, Any] = Field(default_factory=dict)
    decision: str | None = None
    result: Any = None
    reward: float = 0.0
    reward_components: dict[str, float] = Field(default_factory=dict)
    credit: float | None = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    success: bool | None = None
    error: str | None = None
    duration_s: float | None = None
    started_at: float = 0.0
    prompt_token_ids: list[int] = Field(default_factory=list)
    completion_token_ids: list[int] = Field(default_factory=list)
    completion_logprobs: list[float] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    _check_reward = field_validator("reward", "credit", "duration_s")(_finite)


class ObservationModel(BaseModel):
    """An observation as it arrives from outside."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    source: str
    content: Any = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    observed_at: float = 0.0


class EpisodeModel(BaseModel):
    """An episode as it arrives from outside; convert with ``Episode.from_dict(m.model_dump())``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    task: str
    agent_id: str = "default"
    kind: str = "task"
    parent_id: str | None = None
    expected_outcome: dict[str, Any] | None = None
    acceptance_criteria: list[str] = Field(default_factory=list)
    steps: list[StepModel] = Field(default_factory=list)
    observations: list[ObservationModel] = Field(default_factory=list)
    status: OutcomeStatus = OutcomeStatus.IN_PROGRESS
    status_reason: str | None = None
    outcome: dict[str, Any] | None = None
    terminal_reward: float = 0.0
    started_at: float = 0.0
    ended_at: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    num_refused: int = Field(default=0, ge=0)

    _check_reward = field_validator("terminal_reward")(_finite)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    return f"{location}: {first['msg']} (got {first.get('input')!r:.60})"


def read_jsonl(lines: Iterable[str | bytes]) -> Iterator[Episode]:
    """Parse and validate episodes line by line; raises InvalidInputError naming
    the line number at the first bad line. Blank lines are skipped."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(
                f"line {number}: not valid JSON ({exc}); fix or remove it"
            ) from None
        try:
            model = EpisodeModel.model_validate(data)
        except ValidationError as exc:
            raise InvalidInputError(
                f"line {number}: not a valid episode: {_describe(exc)}; fix or remove the line"
            ) from None
        yield Episode.from_dict(model.model_dump())


def export_jsonl(
    store: EpisodeStore, out: IO[str], query: EpisodeQuery = EpisodeQuery(), *, page_size: int = 500
) -> int:
    """Write matching episodes to ``out``, one JSON object per line; returns the count."""
    count = 0
    for episode in store.iter_episodes(query, page_size=page_size):
        out.write(orjson.dumps(episode.to_dict()).decode())
        out.write("\n")
        count += 1
    return count


def import_jsonl(store: EpisodeStore, source: IO[str]) -> int:
    """Validate every line of ``source``, then add all episodes; returns the count.

    A corrupt line raises InvalidInputError with its line number and nothing is
    imported. Episodes whose id already exists are replaced. All episodes are
    written in one transaction, so a failure half way writes none of them.
    """
    lines = source.readlines() if hasattr(source, "readlines") else list(source)
    episodes = list(read_jsonl(lines))  # validate everything before writing anything
    store.add_episodes(episodes)  # one transaction: all or nothing
    return len(episodes)
