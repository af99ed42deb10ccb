"""The reward signal and what works on any reward function.

:class:`RewardSignal` (a total and its named parts) and :data:`RewardValue`; the
reward-function protocols; the combinators (:func:`named`, :func:`sum_rewards`,
:func:`weighted_sum`, :func:`clip_reward`), which keep every part visible;
:class:`RewardRegistry`; and :func:`score_episode` / :func:`score_steps`, which write
rewards back onto a copy of an episode.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from learnloop.episode import Episode, JSONValue, Step, check_reward
from learnloop.errors import ConfigError, InvalidInputError

__all__ = [
    "EPISODE_COMPONENTS_KEY",
    "ClippedReward",
    "EpisodeRewardFn",
    "NamedReward",
    "RewardRegistry",
    "RewardSignal",
    "RewardValue",
    "StepRewardFn",
    "StepwiseRewardFn",
    "SumReward",
    "as_signal",
    "clip_reward",
    "named",
    "reward_name",
    "score_episode",
    "score_steps",
    "sum_rewards",
    "weighted_sum",
]

# Tolerance for ``total == fsum(components)``: totals computed by a different
# summation order (e.g. a plain ``sum``) may differ in the last bits.
_TOTAL_RTOL = 1e-9
_TOTAL_ATOL = 1e-12


# --- the signal -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RewardSignal:
    """A reward total together with the named parts it is the sum of."""

    total: float
    """The reward; equals ``math.fsum(components.values())`` when components are given."""
    components: Mapping[str, float] = field(default_factory=dict)
    """The parts, e.g. ``{"success": 1.0, "efficiency": 0.25}`` (copied; do not mutate)."""

    def __post_init__(self) -> None:
        total = check_reward(self.total, "RewardSignal.total")
        parts: dict[str, float] = {}
        for key, value in self.components.items():
            if not isinstance(key, str) or not key:
                raise InvalidInputError(
                    f"reward component names must be non-empty strings, got {key!r}; "
                    "name each part, e.g. 'success'"
                )
            parts[key] = check_reward(value, f"reward component {key!r}")
        if parts:
            expected = math.fsum(parts.values())
            if not math.isclose(total, expected, rel_tol=_TOTAL_RTOL, abs_tol=_TOTAL_ATOL):
                raise InvalidInputError(
                    f"RewardSignal.total {total!r} is not the sum of its components "
                    f"({expected!r} from {parts}); build it with RewardSignal.of(components)"
                )
        object.__setattr__(self, "total", total)
        object.__setattr__(self, "components", parts)

    @classmethod
    def _trusted(cls, total: float, components: dict[str, float]) -> RewardSignal:
        """A signal from parts known valid, skipping ``__post_init__``'s checks.

        For reward functions on a hot path that built the parts themselves: every
        value a finite ``float``, every name a non-empty string and ``total`` their
        ``math.fsum``. ``components`` is kept, not copied.
        """
        signal = object.__new__(cls)
        object.__setattr__(signal, "total", total)
        object.__setattr__(signal, "components", components)
        return signal

    @classmethod
    def of(cls, components: Mapping[str, float]) -> RewardSignal:
        """The signal whose total is the exact (``math.fsum``) sum of ``components``."""
        checked = {k: check_reward(v, f"reward component {k!r}") for k, v in components.items()}
        return cls(total=math.fsum(checked.values()), components=checked)

    def prefixed(self, prefix: str) -> RewardSignal:
        """The same signal with every component renamed ``"{prefix}/{name}"``.

        A signal without components becomes one component named ``prefix``.
        """
        if not self.components:
            return RewardSignal(total=self.total, components={prefix: self.total})
        return RewardSignal(
            total=self.total,
            components={f"{prefix}/{k}": v for k, v in self.components.items()},
        )

    def scaled(self, weight: float) -> RewardSignal:
        """Every component (and so the total) multiplied by ``weight``."""
        weight = check_reward(weight, "reward weight")
        if not self.components:
            return RewardSignal(total=self.total * weight)
        return RewardSignal.of({k: v * weight for k, v in self.components.items()})

    def __float__(self) -> float:
        return self.total

    def to_dict(self) -> dict[str, JSONValue]:
        return {"total": self.total, "components": dict(self.components)}

    @classmethod
    def from_dict(cls, data: Mapping[str, JSONValue]) -> RewardSignal:
        if not isinstance(data, Mapping) or "total" not in data:
            raise InvalidInputError(f"a reward signal must be a mapping with 'total', got {data!r}")
        return cls(total=data["total"], components=dict(data.get("components") or {}))


#: What a reward function may return.
RewardValue = float | RewardSignal


def as_signal(value: RewardValue, name: str = "reward") -> RewardSignal:
    """``value`` as a :class:`RewardSignal`; a bare float becomes ``{name: value}``."""
    if isinstance(value, RewardSignal):
        return value
    value = check_reward(value, f"reward {name!r}")
    return RewardSignal(total=value, components={name: value})


# --- protocols ---------------------------------------------------------------------------


class StepRewardFn(Protocol):
    """Scores one step."""

    def __call__(self, step: Step, /) -> RewardValue: ...


class EpisodeRewardFn(Protocol):
    """Scores one whole episode."""

    def __call__(self, episode: Episode, /) -> RewardValue: ...


class StepwiseRewardFn(Protocol):
    """Scores an episode step by step: one value per step, in order."""

    def __call__(self, episode: Episode, /) -> Sequence[RewardValue]: ...


# --- config checks (shared by the reward configs) ---------------------------------------


def _check_finite(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{owner}.{name} must be a finite number, got {value!r}")


# --- naming and combinators -------------------------------------------------------------

A = TypeVar("A")


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def reward_name(fn: object) -> str:
    """The name a reward function's parts are prefixed with in a combination.

    In order: its ``name`` attribute; for a bound method, its object's ``name``; its
    ``__name__`` (not ``<lambda>``); its class name in snake case. Name a lambda with
    :func:`named`.
    """
    for candidate in (fn, getattr(fn, "__self__", None)):
        name = getattr(candidate, "name", None)
        if isinstance(name, str) and name:
            return name
    name = getattr(fn, "__name__", None)
    if isinstance(name, str) and name and name != "<lambda>":
        return name
    if name == "<lambda>":
        return "reward"
    return _snake_case(type(fn).__name__)


class NamedReward(Generic[A]):
    """A reward function under a chosen name (see :func:`named`)."""

    def __init__(self, name: str, fn: Callable[[A], RewardValue]) -> None:
        if not isinstance(name, str) or not name or "/" in name:
            raise ConfigError(f"a reward name must be a non-empty string without '/', got {name!r}")
        self.name = name
        self.fn = fn

    def __call__(self, arg: A, /) -> RewardValue:
        return self.fn(arg)

    def __repr__(self) -> str:
        return f"NamedReward({self.name!r}, {self.fn!r})"


def named(name: str, fn: Callable[[A], RewardValue]) -> NamedReward[A]:
    """``fn`` under ``name``, the prefix of its parts in :func:`sum_rewards` and friends.

    >>> named("speed", lambda step: 0.5).name
    'speed'
    """
    return NamedReward(name, fn)


class SumReward(Generic[A]):
    """A weighted sum of reward functions over the same argument; parts stay visible.

    Each term's components are multiplied by its weight and renamed
    ``"{term name}/{component}"`` (a term returning a float becomes one component
    named after the term), so the total is the sum of the components.
    """

    name = "sum"

    def __init__(self, terms: Sequence[tuple[Callable[[A], RewardValue], float]]) -> None:
        if not terms:
            raise ConfigError("a sum of rewards needs at least one reward function")
        self.terms: tuple[tuple[str, Callable[[A], RewardValue], float], ...] = ()
        seen: dict[str, int] = {}
        resolved = []
        for fn, weight in terms:
            if not callable(fn):
                raise ConfigError(f"reward term {fn!r} is not callable; pass a reward function")
            if (
                isinstance(weight, bool)
                or not isinstance(weight, (int, float))
                or not (math.isfinite(weight))
            ):
                raise ConfigError(
                    f"the weight of reward {reward_name(fn)!r} must be a finite number, "
                    f"got {weight!r}"
                )
            base = reward_name(fn)
            seen[base] = seen.get(base, 0) + 1
            name = base if seen[base] == 1 else f"{base}_{seen[base]}"
            resolved.append((name, fn, float(weight)))
        self.terms = tuple(resolved)

    def __call__(self, arg: A, /) -> RewardSignal:
        parts: dict[str, float] = {}
        for name, fn, weight in self.terms:
            value = fn(arg)
            signal = (
                value.prefixed(name) if isinstance(value, RewardSignal) else as_signal(value, name)
            )
            for key, part in signal.components.items():
                parts[key] = part * weight
        return RewardSignal.of(parts)

    def __repr__(self) -> str:
        terms = ", ".join(f"{name}={weight:g}" for name, _, weight in self.terms)
        return f"SumReward({terms})"


def sum_rewards(*fns: Callable[[A], RewardValue]) -> SumReward[A]:
    """The sum of reward functions that take the same argument (all steps or all episodes).

    >>> total = sum_rewards(named("a", lambda s: 1.0), named("b", lambda s: 0.5))
    >>> total(None).components
    {'a': 1.0, 'b': 0.5}
    """
    return SumReward([(fn, 1.0) for fn in fns])


def weighted_sum(
    weights: Mapping[Callable[[A], RewardValue], float]
    | Iterable[tuple[Callable[[A], RewardValue], float]],
) -> SumReward[A]:
    """``sum_i w_i f_i`` from ``{f_i: w_i}`` or ``[(f_i, w_i), ...]``; parts are weighted.

    >>> mix = weighted_sum([(named("a", lambda s: 1.0), 0.5), (named("b", lambda s: 2.0), -1)])
    >>> mix(None).total, mix(None).components
    (-1.5, {'a': 0.5, 'b': -2.0})
    """
    pairs = list(weights.items()) if isinstance(weights, Mapping) else list(weights)
    return SumReward(pairs)


class ClippedReward(Generic[A]):
    """A reward function whose total is clipped to ``[low, high]`` (see :func:`clip_reward`)."""

    def __init__(
        self, fn: Callable[[A], RewardValue], low: float | None, high: float | None
    ) -> None:
        for label, bound in (("low", low), ("high", high)):
            if bound is not None and (
                isinstance(bound, bool) or not isinstance(bound, (int, float)) or math.isnan(bound)
            ):
                raise ConfigError(f"clip bound {label} must be a number or None, got {bound!r}")
        if low is not None and high is not None and low > high:
            raise ConfigError(f"clip bounds are reversed: low={low!r} > high={high!r}; swap them")
        self.fn = fn
        self.low = low
        self.high = high
        self.name = reward_name(fn)

    def __call__(self, arg: A, /) -> RewardSignal:
        signal = as_signal(self.fn(arg), self.name)
        clipped = signal.total
        if self.low is not None:
            clipped = max(clipped, float(self.low))
        if self.high is not None:
            clipped = min(clipped, float(self.high))
        if clipped == signal.total:
            return signal
        parts = dict(signal.components)
        parts["clip"] = parts.get("clip", 0.0) + (clipped - signal.total)
        return RewardSignal(total=clipped, components=parts)

    def __repr__(self) -> str:
        return f"ClippedReward({self.fn!r}, low={self.low!r}, high={self.high!r})"


def clip_reward(
    fn: Callable[[A], RewardValue], low: float | None = -1.0, high: float | None = 1.0
) -> ClippedReward[A]:
    """``fn`` with its total clipped to ``[low, high]`` (None: unbounded on that side).

    The parts stay as ``fn`` reported them, plus a ``clip`` part holding
    ``clipped - total``, so they still add up:

    >>> capped = clip_reward(named("r", lambda s: 2.5), low=-1.0, high=1.0)
    >>> capped(None).total, capped(None).components
    (1.0, {'r': 2.5, 'clip': -1.5})
    """
    return ClippedReward(fn, low, high)


# --- registry ---------------------------------------------------------------------------


class RewardRegistry(Generic[A]):
    """Which reward function scores which agent type (e.g. ``Episode.agent_id``).

    ``get`` of an unregistered type returns ``default`` when one was given and
    raises :class:`~learnloop.errors.ConfigError` otherwise.

    >>> from learnloop.rewards import LengthPenalty, OutcomeReward
    >>> registry = RewardRegistry(default=OutcomeReward())
    >>> registry.register("coder", sum_rewards(OutcomeReward(), LengthPenalty()))
    >>> registry.get("coder").name, registry.get("writer").name
    ('sum', 'outcome')
    """

    def __init__(self, default: Callable[[A], RewardValue] | None = None) -> None:
        self.default = default
        self._fns: dict[str, Callable[[A], RewardValue]] = {}

    def register(
        self, agent_type: str, fn: Callable[[A], RewardValue], *, replace: bool = False
    ) -> None:
        """Score ``agent_type`` with ``fn``; registering a type twice needs ``replace=True``."""
        if not isinstance(agent_type, str) or not agent_type:
            raise ConfigError(f"agent type must be a non-empty string, got {agent_type!r}")
        if not callable(fn):
            raise ConfigError(f"reward function for {agent_type!r} is not callable: {fn!r}")
        if agent_type in self._fns and not replace:
            raise ConfigError(
                f"agent type {agent_type!r} already has a reward function "
                f"({reward_name(self._fns[agent_type])!r}); pass replace=True to swap it"
            )
        self._fns[agent_type] = fn

    def get(self, agent_type: str) -> Callable[[A], RewardValue]:
        """The function for ``agent_type``, else the default."""
        fn = self._fns.get(agent_type, self.default)
        if fn is None:
            raise ConfigError(
                f"no reward function for agent type {agent_type!r} (registered: "
                f"{sorted(self._fns)}); register one or give the registry a default"
            )
        return fn

    def score(self, agent_type: str, arg: A) -> RewardSignal:
        """``agent_type``'s reward of ``arg``, as a signal named after the function."""
        fn = self.get(agent_type)
        return as_signal(fn(arg), reward_name(fn))

    @property
    def agent_types(self) -> tuple[str, ...]:
        """The registered agent types, sorted."""
        return tuple(sorted(self._fns))

    def __contains__(self, agent_type: object) -> bool:
        return agent_type in self._fns


# --- writing rewards back ---------------------------------------------------------------

#: ``Episode.metadata`` key holding the components of an episode-level reward.
EPISODE_COMPONENTS_KEY = "reward_components"


def _step_signal(step: Step) -> RewardSignal:
    """What a step already carries, as a signal (its components when they add up)."""
    if step.reward_components:
        parts = dict(step.reward_components)
        if math.isclose(math.fsum(parts.values()), step.reward, rel_tol=1e-9, abs_tol=1e-12):
            return RewardSignal(total=step.reward, components=parts)
    return as_signal(step.reward, "reward") if step.reward else RewardSignal(total=0.0)


def _merge(old: RewardSignal, new: RewardSignal) -> RewardSignal:
    parts = dict(old.components)
    for key, value in new.components.items():
        parts[key] = parts.get(key, 0.0) + value
    if not new.components and new.total:
        parts["reward"] = parts.get("reward", 0.0) + new.total
    return RewardSignal.of(parts)


def _with_signal(step: Step, signal: RewardSignal, combine: str) -> Step:
    if combine == "add":
        signal = _merge(_step_signal(step), signal)
    return _replace_step(step, reward=signal.total, reward_components=dict(signal.components))


def _replace_step(step: Step, **changes: Any) -> Step:
    return dataclasses.replace(step, **changes)


def _check_combine(combine: str) -> None:
    if combine not in ("replace", "add"):
        raise ConfigError(f"combine must be 'replace' or 'add', got {combine!r}")


def score_episode(
    episode: Episode,
    fn: StepRewardFn | EpisodeRewardFn,
    *,
    level: Literal["step", "episode"] = "step",
    combine: Literal["replace", "add"] = "replace",
) -> Episode:
    """A copy of ``episode`` carrying ``fn``'s rewards and their components.

    With ``level="step"``, ``fn`` scores each step and the step's ``reward`` and
    ``reward_components`` are set from the signal. With ``level="episode"``, ``fn``
    scores the whole episode: the total becomes ``terminal_reward`` and the components
    go to ``metadata["reward_components"]``. ``combine="add"`` adds to what is already
    there (components of the same name are summed) instead of replacing it.

    >>> from learnloop.rewards import ToolReward
    >>> ep = Episode.new("t", steps=[Step.new(0, "search", tool="search", success=True)])
    >>> scored = score_episode(ep, ToolReward().score_step)
    >>> scored.steps[0].reward, dict(scored.steps[0].reward_components)["success"]
    (1.0, 1.0)
    """
    _check_combine(combine)
    if level == "step":
        step_fn: Callable[[Step], RewardValue] = fn  # type: ignore[assignment]
        name = reward_name(fn)
        steps = tuple(
            _with_signal(step, as_signal(step_fn(step), name), combine) for step in episode.steps
        )
        return episode.replace(steps=steps)
    if level == "episode":
        episode_fn: Callable[[Episode], RewardValue] = fn  # type: ignore[assignment]
        signal = as_signal(episode_fn(episode), reward_name(fn))
        if combine == "add":
            old_parts = episode.metadata.get(EPISODE_COMPONENTS_KEY)
            old = (
                RewardSignal(total=episode.terminal_reward, components=dict(old_parts))
                if isinstance(old_parts, Mapping)
                and math.isclose(math.fsum(old_parts.values()), episode.terminal_reward)
                else as_signal(episode.terminal_reward, "reward")
            )
            signal = _merge(old, signal)
        metadata = dict(episode.metadata)
        metadata[EPISODE_COMPONENTS_KEY] = dict(signal.components)
        return episode.replace(terminal_reward=signal.total, metadata=metadata)
    raise ConfigError(f"level must be 'step' or 'episode', got {level!r}")


def score_steps(
    episode: Episode,
    fn: StepwiseRewardFn,
    *,
    combine: Literal["replace", "add"] = "replace",
) -> Episode:
    """A copy of ``episode`` whose steps carry ``fn(episode)``'s per-step rewards.

    ``fn`` returns one value per step, e.g. :meth:`ToolUsageReward.step_signals`.
    ``combine="add"`` adds to the rewards already on the steps (e.g. the tool reward
    recorded at run time).

    >>> from learnloop.rewards import LengthPenalty, LengthPenaltyConfig
    >>> ep = Episode.new("t", steps=[Step.new(i, "a") for i in range(3)])
    >>> shaped = score_steps(ep, LengthPenalty(LengthPenaltyConfig(step_budget=2)).step_signals)
    >>> [s.reward for s in shaped.steps]
    [0.0, 0.0, -0.05]
    """
    _check_combine(combine)
    values = list(fn(episode))
    if len(values) != len(episode.steps):
        raise InvalidInputError(
            f"{reward_name(fn)!r} returned {len(values)} rewards for an episode of "
            f"{len(episode.steps)} steps; a step-wise reward gives one value per step"
        )
    name = reward_name(fn)
    steps = tuple(
        _with_signal(step, as_signal(value, name), combine)
        for step, value in zip(episode.steps, values, strict=True)
    )
    return episode.replace(steps=steps)
