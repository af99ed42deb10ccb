"""Episodes and steps: the record of one attempt at one task.

An :class:`Episode` holds the task, who attempted it, the :class:`Step` s the agent
took (action → result → reward), the :class:`Observation` s the world reported on
its own (sensors, world state, user feedback), and how it ended. Episodes nest: a
sub-task, retry or cascade points at its parent through ``parent_id``.

Everything here is pure, frozen data with a lossless ``to_dict``/``from_dict``
round trip (JSON-safe: floats survive exactly, tuples come back as tuples).

Rewards on a step are plain floats. The reward *kinds* are constructors::

    >>> positive_reward(0.5), negative_reward(0.2), neutral_reward(), terminal_reward(1.0)
    (0.5, -0.2, 0.0, 1.0)

A terminal reward belongs to the episode as a whole (``Episode.terminal_reward``)
and is counted after the last step.

    >>> ep = Episode.new("sum three numbers", steps=[Step.new(0, "add", reward=1.0)] * 3)
    >>> round(ep.discounted_return(0.9), 6)
    2.71
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NewType

from learnloop.errors import InvalidInputError

__all__ = [
    "Episode",
    "EpisodeId",
    "JSONValue",
    "Observation",
    "OutcomeStatus",
    "Step",
    "check_confidence",
    "check_reward",
    "negative_reward",
    "neutral_reward",
    "new_episode_id",
    "positive_reward",
    "terminal_reward",
]

EpisodeId = NewType("EpisodeId", str)
JSONValue = Any  # str | int | float | bool | None | list[JSONValue] | dict[str, JSONValue]


class OutcomeStatus(StrEnum):
    """How an episode ended (or that it has not yet)."""

    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAILURE = "failure"
    ABORTED = "aborted"
    TIMEOUT = "timeout"
    EVICTED = "evicted"

    @property
    def is_final(self) -> bool:
        return self is not OutcomeStatus.IN_PROGRESS


def new_episode_id() -> EpisodeId:
    """A new random episode id: 128 random bits as 32 hex characters.

    Drawn from :mod:`random` (reseeded in forked children) rather than
    ``os.urandom``: a system call here lets the recorder's writer thread take the
    GIL and stalls the caller for a whole switch interval.
    """
    return EpisodeId(f"{random.getrandbits(128):032x}")


# --- reward kinds: constructors returning plain floats -----------------------------


def check_reward(value: float, what: str = "reward") -> float:
    """Return ``value`` as a float, or raise if it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy scalars and the like
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"{what} must be a finite number, got {value!r} ({type(value).__name__}); "
                "pass a float"
            ) from None
    value = float(value)
    if not math.isfinite(value):
        raise InvalidInputError(
            f"{what} must be a finite number, got {value!r}; replace NaN/inf by a bounded "
            "value (e.g. -1.0 for a failure)"
        )
    return value


def check_confidence(value: float | None) -> float | None:
    """Return ``value`` if it lies in [0, 1] (or is None), else raise."""
    if value is None:
        return None
    value = check_reward(value, "confidence")
    if not 0.0 <= value <= 1.0:
        raise InvalidInputError(
            f"confidence must lie in [0, 1], got {value!r}; rescale it (e.g. a probability)"
        )
    return value


def positive_reward(amount: float = 1.0) -> float:
    """A reward for something good; ``amount`` must be >= 0."""
    amount = check_reward(amount)
    if amount < 0:
        raise InvalidInputError(
            f"positive_reward takes an amount >= 0, got {amount!r}; use negative_reward"
        )
    return amount


def negative_reward(penalty: float = 1.0) -> float:
    """A penalty: ``negative_reward(0.2) == -0.2``. The sign of ``penalty`` is ignored."""
    return -abs(check_reward(penalty))


def neutral_reward() -> float:
    """A step that neither helped nor hurt."""
    return 0.0


def terminal_reward(value: float) -> float:
    """The reward of an episode's end; pass it to ``complete(..., reward=...)``."""
    return check_reward(value)


# --- records -------------------------------------------------------------------------


def _tuple(values: Iterable[Any] | None) -> tuple[Any, ...]:
    return tuple(values) if values is not None else ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One action of the agent, what it got back, and the reward for it."""

    index: int
    """Position in the episode, counting steps and observations together from 0."""
    action: str
    """What the agent did, e.g. the tool call or the decision taken."""
    tool: str | None = None
    """The tool called, when the action is a tool call."""
    state: Mapping[str, JSONValue] = field(default_factory=dict)
    """What the agent saw or was given when it acted (inputs, arguments, context)."""
    decision: str | None = None
    """Why the agent chose this action, in its own words, if it said."""
    result: JSONValue = None
    """What came back: the tool's output or the environment's response."""
    reward: float = 0.0
    """The step's reward (the sum of ``reward_components`` when those are given)."""
    reward_components: Mapping[str, float] = field(default_factory=dict)
    """The parts the reward is made of, e.g. ``{"success": 1.0, "efficiency": 0.3}``."""
    credit: float | None = None
    """Per-step credit written back by credit assignment (return, advantage, share)."""
    confidence: float | None = None
    """The agent's confidence in this action, in [0, 1]."""
    success: bool | None = None
    """Whether the action itself worked (a tool that raised is False)."""
    error: str | None = None
    """The error message when the action failed."""
    duration_s: float | None = None
    """Wall time of the action in seconds."""
    started_at: float = 0.0
    """Unix time when the action started."""
    prompt_token_ids: tuple[int, ...] = ()
    """For language-model policies: the prompt's token ids."""
    completion_token_ids: tuple[int, ...] = ()
    """For language-model policies: the sampled completion's token ids."""
    completion_logprobs: tuple[float, ...] = ()
    """For language-model policies: log-probability of each completion token."""
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)
    """Anything else worth keeping."""

    @classmethod
    def new(cls, index: int, action: str, **fields: Any) -> Step:
        """Build a step, checking reward and confidence."""
        step = cls(index=index, action=action, **fields)
        check_reward(step.reward)
        check_confidence(step.confidence)
        return step

    def to_dict(self) -> dict[str, JSONValue]:
        data: dict[str, JSONValue] = {"index": self.index, "action": self.action}
        for f in dataclasses.fields(self):
            if f.name in data:
                continue
            value = getattr(self, f.name)
            if value is None or value == () or (isinstance(value, Mapping) and not value):
                continue  # sparse: defaults are not written
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            data[f.name] = value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, JSONValue]) -> Step:
        values = dict(data)
        for name in ("prompt_token_ids", "completion_token_ids", "completion_logprobs"):
            if name in values:
                values[name] = tuple(values[name])
        unknown = set(values) - _STEP_FIELDS
        if unknown:
            raise InvalidInputError(
                f"unknown step field(s) {sorted(unknown)}; known fields: {sorted(_STEP_FIELDS)}"
            )
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """Something the world reported that was not the result of the agent's action."""

    index: int
    """Position in the episode, counting steps and observations together from 0."""
    source: str
    """Where it came from: ``"sensor"``, ``"world"``, ``"user_feedback"``, a system name."""
    content: JSONValue = None
    """What was observed."""
    confidence: float | None = None
    """How far the source can be trusted, in [0, 1]."""
    observed_at: float = 0.0
    """Unix time of the observation."""

    def to_dict(self) -> dict[str, JSONValue]:
        data: dict[str, JSONValue] = {
            "index": self.index,
            "source": self.source,
            "content": self.content,
            "observed_at": self.observed_at,
        }
        if self.confidence is not None:
            data["confidence"] = self.confidence
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, JSONValue]) -> Observation:
        return cls(
            index=data["index"],
            source=data["source"],
            content=data.get("content"),
            confidence=data.get("confidence"),
            observed_at=data.get("observed_at", 0.0),
        )


_STEP_FIELDS = {f.name for f in dataclasses.fields(Step)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Episode:
    """One attempt at one task: its steps, observations, outcome and context."""

    id: EpisodeId
    """Unique id (see :func:`new_episode_id`)."""
    task: str
    """The task as the agent was given it."""
    agent_id: str = "default"
    """Which agent (or agent type) made the attempt."""
    kind: str = "task"
    """What sort of episode: ``"task"``, ``"subtask"``, ``"retry"``, ``"rollout"``..."""
    parent_id: EpisodeId | None = None
    """The episode this one is part of (sub-task, retry or cascade), if any."""
    expected_outcome: Mapping[str, JSONValue] | None = None
    """What success looks like, e.g. ``{"answer": 42}``; scored by credit.success_score."""
    acceptance_criteria: tuple[str, ...] = ()
    """Human-readable conditions the outcome must meet."""
    steps: tuple[Step, ...] = ()
    """The agent's actions, in order."""
    observations: tuple[Observation, ...] = ()
    """What the world reported, in order."""
    status: OutcomeStatus = OutcomeStatus.IN_PROGRESS
    """How it ended."""
    status_reason: str | None = None
    """Why it ended that way (the abort reason, the error, the eviction)."""
    outcome: Mapping[str, JSONValue] | None = None
    """The outcome data the agent produced."""
    terminal_reward: float = 0.0
    """Reward for the episode as a whole, counted after the last step."""
    started_at: float = 0.0
    """Unix time when the episode began."""
    ended_at: float | None = None
    """Unix time when it ended; None while in progress."""
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)
    """Anything else worth keeping (experiment, seed, environment...)."""
    versions: Mapping[str, str] = field(default_factory=dict)
    """Resource versions it ran with, e.g. ``{"prompt": "v3", "policy": "ckpt-40"}``."""
    num_refused: int = 0
    """Steps and observations refused because the episode hit its size cap."""

    @classmethod
    def new(
        cls,
        task: str,
        *,
        steps: Sequence[Step] = (),
        observations: Sequence[Observation] = (),
        **fields: Any,
    ) -> Episode:
        """Build an episode with a fresh id and the current time unless given."""
        fields.setdefault("id", new_episode_id())
        fields.setdefault("started_at", time.time())
        if "acceptance_criteria" in fields:
            fields["acceptance_criteria"] = _tuple(fields["acceptance_criteria"])
        if "status" in fields:
            fields["status"] = OutcomeStatus(fields["status"])
        return cls(task=task, steps=tuple(steps), observations=tuple(observations), **fields)

    # --- derived values ---------------------------------------------------------------

    @property
    def rewards(self) -> list[float]:
        """Step rewards in order, with the terminal reward added to the last step's."""
        values = [s.reward for s in self.steps]
        if self.terminal_reward:
            if values:
                values[-1] += self.terminal_reward
            else:
                values.append(self.terminal_reward)
        return values

    @property
    def total_reward(self) -> float:
        """Sum of step rewards plus the terminal reward."""
        return math.fsum(s.reward for s in self.steps) + self.terminal_reward

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or None while in progress."""
        return None if self.ended_at is None else self.ended_at - self.started_at

    @property
    def is_success(self) -> bool:
        return self.status is OutcomeStatus.SUCCESS

    def trajectory(self) -> list[tuple[str, JSONValue, float]]:
        """The steps as ``(action, result, reward)`` tuples (terminal reward on the last)."""
        rewards = self.rewards
        return [(s.action, s.result, rewards[i]) for i, s in enumerate(self.steps)]

    def discounted_return(self, gamma: float = 1.0) -> float:
        """G_0 = sum_t gamma^t r_t over :attr:`rewards` (Sutton & Barto, eq. 3.8)."""
        if not 0.0 <= gamma <= 1.0:
            raise InvalidInputError(f"gamma must lie in [0, 1], got {gamma!r}")
        total = 0.0
        for reward in reversed(self.rewards):
            total = reward + gamma * total
        return total

    def replace(self, **changes: Any) -> Episode:
        """A copy with ``changes`` applied (episodes are immutable)."""
        return dataclasses.replace(self, **changes)

    # --- serialization ----------------------------------------------------------------

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "id": self.id,
            "task": self.task,
            "agent_id": self.agent_id,
            "kind": self.kind,
            "parent_id": self.parent_id,
            "expected_outcome": (
                dict(self.expected_outcome) if self.expected_outcome is not None else None
            ),
            "acceptance_criteria": list(self.acceptance_criteria),
            "steps": [s.to_dict() for s in self.steps],
            "observations": [o.to_dict() for o in self.observations],
            "status": self.status.value,
            "status_reason": self.status_reason,
            "outcome": dict(self.outcome) if self.outcome is not None else None,
            "terminal_reward": self.terminal_reward,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "metadata": dict(self.metadata),
            "versions": dict(self.versions),
            "num_refused": self.num_refused,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, JSONValue]) -> Episode:
        """Rebuild an episode from :meth:`to_dict` output; raises on malformed data."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"an episode must be a JSON object, got {type(data).__name__}")
        for required in ("id", "task"):
            if not isinstance(data.get(required), str):
                raise InvalidInputError(
                    f"episode field {required!r} must be a string, got {data.get(required)!r}"
                )
        try:
            status = OutcomeStatus(data.get("status", "in_progress"))
        except ValueError:
            raise InvalidInputError(
                f"unknown episode status {data.get('status')!r}; one of "
                f"{[s.value for s in OutcomeStatus]}"
            ) from None
        try:
            return cls(
                id=EpisodeId(data["id"]),
                task=data["task"],
                agent_id=data.get("agent_id", "default"),
                kind=data.get("kind", "task"),
                parent_id=data.get("parent_id"),
                expected_outcome=data.get("expected_outcome"),
                acceptance_criteria=_tuple(data.get("acceptance_criteria")),
                steps=tuple(Step.from_dict(s) for s in data.get("steps", ())),
                observations=tuple(Observation.from_dict(o) for o in data.get("observations", ())),
                status=status,
                status_reason=data.get("status_reason"),
                outcome=data.get("outcome"),
                terminal_reward=data.get("terminal_reward", 0.0),
                started_at=data.get("started_at", 0.0),
                ended_at=data.get("ended_at"),
                metadata=data.get("metadata") or {},
                versions=data.get("versions") or {},
                num_refused=data.get("num_refused", 0),
            )
        except (KeyError, TypeError) as exc:
            raise InvalidInputError(f"malformed episode {data.get('id')!r}: {exc}") from None
