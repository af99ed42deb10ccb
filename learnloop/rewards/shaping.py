"""Episode-level rewards: the outcome reward and the shaped rewards.

:class:`OutcomeReward` scores how an episode ended. The shaped rewards
(:class:`ToolUsageReward`, :class:`VerificationReward`, :class:`LengthPenalty`) score
how it got there, and also say which step earned each part (``step_signals``, for
:func:`~learnloop.rewards.score_steps`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from learnloop.episode import Episode, OutcomeStatus, Step
from learnloop.errors import ConfigError, InvalidInputError
from learnloop.rewards.signal import RewardSignal, _check_finite

__all__ = [
    "LengthPenalty",
    "LengthPenaltyConfig",
    "OutcomeReward",
    "OutcomeRewardConfig",
    "ToolUsageConfig",
    "ToolUsageReward",
    "VerificationConfig",
    "VerificationReward",
]


# --- outcome reward ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeRewardConfig:
    """Value of each episode status, and the weight of the expected-outcome match."""

    success: float = 1.0
    """Reward of a successful episode."""
    failure: float = -1.0
    """Reward of a failed episode."""
    timeout: float = -1.0
    """Reward of an episode that ran out of time."""
    aborted: float = -1.0
    """Reward of an aborted episode."""
    evicted: float = 0.0
    """Reward of an episode evicted by the recorder (not the agent's doing)."""
    in_progress: float = 0.0
    """Reward of an episode still in progress."""
    expected_weight: float = 0.0
    """Weight of ``credit.success_score`` (in [0, 1]) as the ``expected`` part; 0: left out."""

    def __post_init__(self) -> None:
        for name in (
            "success",
            "failure",
            "timeout",
            "aborted",
            "evicted",
            "in_progress",
            "expected_weight",
        ):
            _check_finite("OutcomeRewardConfig", name, getattr(self, name))

    def value(self, status: OutcomeStatus) -> float:
        """The reward of ``status``."""
        return float(getattr(self, OutcomeStatus(status).value))


class OutcomeReward:
    """Episode-level reward for how the episode ended.

    Parts: ``outcome`` (the status's value from the config) and, when
    ``config.expected_weight`` is not 0, ``expected`` = ``expected_weight`` x
    :func:`learnloop.credit.success_score` of the episode's outcome against its
    expected outcome.

    >>> OutcomeReward()(Episode.new("t", status="failure")).components
    {'outcome': -1.0}
    """

    name = "outcome"

    def __init__(self, config: OutcomeRewardConfig | None = None) -> None:
        self.config = config if config is not None else OutcomeRewardConfig()

    def __call__(self, episode: Episode) -> RewardSignal:
        parts = {"outcome": self.config.value(episode.status)}
        if self.config.expected_weight != 0.0:
            from learnloop.credit import success_score

            parts["expected"] = self.config.expected_weight * success_score(
                episode.outcome, episode.expected_outcome, episode.status
            )
        return RewardSignal.of(parts)


# --- shaped rewards ---------------------------------------------------------------------


def _sum_signals(signals: Sequence[RewardSignal], keys: Sequence[str]) -> RewardSignal:
    return RewardSignal.of(
        {key: math.fsum(s.components.get(key, 0.0) for s in signals) for key in keys}
    )


def _lookup(step: Step, key: str) -> Any:
    if key in step.metadata:
        return step.metadata[key]
    return step.state.get(key)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolUsageConfig:
    """Shaping for tool choice: right tool, wrong tool, redundant calls."""

    right_tool: float = 0.2
    """Added for a call of the expected tool."""
    wrong_tool: float = -0.2
    """Added for a call of another tool when one was expected (use a negative value)."""
    redundant_call: float = -0.1
    """Added for a call repeating an earlier successful call (same tool, same state)."""
    expected_tool_key: str = "expected_tool"
    """Key in ``Step.metadata`` (else ``Step.state``) naming the right tool (or tools)."""

    def __post_init__(self) -> None:
        for name in ("right_tool", "wrong_tool", "redundant_call"):
            _check_finite("ToolUsageConfig", name, getattr(self, name))
        if not isinstance(self.expected_tool_key, str) or not self.expected_tool_key:
            raise ConfigError(
                f"ToolUsageConfig.expected_tool_key must be a non-empty string, "
                f"got {self.expected_tool_key!r}"
            )


class ToolUsageReward:
    """Shaped reward for using tools well, step by step.

    For each step that called a tool (``Step.tool`` set): ``right_tool`` when the tool
    is the expected one (or one of them), ``wrong_tool`` when a tool was expected and
    another was called, and ``redundant`` when the same tool was already called with
    the same state earlier in the episode and that call succeeded. Steps without an
    expected tool get neither right nor wrong. Called on an episode, it returns the
    sum over steps; :meth:`step_signals` gives each step's share.
    """

    name = "tool_usage"
    _keys = ("right_tool", "wrong_tool", "redundant")

    def __init__(self, config: ToolUsageConfig | None = None) -> None:
        self.config = config if config is not None else ToolUsageConfig()

    def _expected(self, step: Step) -> frozenset[str] | None:
        value = _lookup(step, self.config.expected_tool_key)
        if value is None:
            return None
        if isinstance(value, str):
            return frozenset((value,))
        if isinstance(value, (list, tuple, set, frozenset)) and all(
            isinstance(v, str) for v in value
        ):
            return frozenset(value)
        raise InvalidInputError(
            f"step {step.index}: {self.config.expected_tool_key!r} must be a tool name or a "
            f"list of tool names, got {value!r}"
        )

    def step_signals(self, episode: Episode) -> tuple[RewardSignal, ...]:
        """One signal per step of ``episode`` (all parts 0 for a step without a tool)."""
        cfg = self.config
        done: set[tuple[str, str]] = set()
        signals = []
        for step in episode.steps:
            parts = dict.fromkeys(self._keys, 0.0)
            if step.tool is not None:
                expected = self._expected(step)
                if expected is not None:
                    if step.tool in expected:
                        parts["right_tool"] = cfg.right_tool
                    else:
                        parts["wrong_tool"] = cfg.wrong_tool
                key = (step.tool, json.dumps(dict(step.state), sort_keys=True, default=str))
                if key in done:
                    parts["redundant"] = cfg.redundant_call
                elif step.success is True:
                    done.add(key)
            signals.append(RewardSignal.of(parts))
        return tuple(signals)

    def __call__(self, episode: Episode) -> RewardSignal:
        return _sum_signals(self.step_signals(episode), self._keys)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationConfig:
    """Shaping for verification: a bonus when the agent checked its own result."""

    bonus: float = 0.2
    """Granted once, on the first verification step that follows a step doing the work."""
    missing: float = 0.0
    """Added on the last step when no step verified anything (use a negative value)."""
    tools: tuple[str, ...] = ("verify", "validate")
    """Tool names (case-insensitive) whose calls are verifications."""
    action_prefixes: tuple[str, ...] = ("verify", "validate")
    """An action starting with one of these (case-insensitive) is a verification."""
    metadata_key: str = "verification"
    """``Step.metadata[metadata_key]`` True/False marks a verification, overriding the names."""

    def __post_init__(self) -> None:
        for name in ("bonus", "missing"):
            _check_finite("VerificationConfig", name, getattr(self, name))
        for name in ("tools", "action_prefixes"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(
                    f"VerificationConfig.{name} must be a list of non-empty strings, got {value!r}"
                )
            object.__setattr__(self, name, tuple(v.lower() for v in value))


class VerificationReward:
    """Shaped reward for checking one's own result before finishing.

    A step is a verification when ``Step.metadata["verification"]`` says so, else when
    its tool is in ``config.tools`` or its action starts with one of
    ``config.action_prefixes``. The bonus goes to the first verification that comes
    after at least one non-verification step (checking before doing anything checks
    nothing); when there is none, ``config.missing`` goes to the last step.
    """

    name = "verification"
    _keys = ("verified", "unverified")

    def __init__(self, config: VerificationConfig | None = None) -> None:
        self.config = config if config is not None else VerificationConfig()

    def is_verification(self, step: Step) -> bool:
        """Whether ``step`` checks a result (see the class docstring)."""
        flag = step.metadata.get(self.config.metadata_key)
        if isinstance(flag, bool):
            return flag
        if step.tool is not None and step.tool.lower() in self.config.tools:
            return True
        action = step.action.lower()
        return any(action.startswith(prefix) for prefix in self.config.action_prefixes)

    def step_signals(self, episode: Episode) -> tuple[RewardSignal, ...]:
        """One signal per step of ``episode``."""
        parts = [dict.fromkeys(self._keys, 0.0) for _ in episode.steps]
        worked = False
        verified = False
        for i, step in enumerate(episode.steps):
            if not self.is_verification(step):
                worked = True
            elif worked:
                parts[i]["verified"] = self.config.bonus
                verified = True
                break
        if not verified and parts:
            parts[-1]["unverified"] = self.config.missing
        return tuple(RewardSignal.of(p) for p in parts)

    def __call__(self, episode: Episode) -> RewardSignal:
        return _sum_signals(self.step_signals(episode), self._keys)


@dataclass(frozen=True, slots=True, kw_only=True)
class LengthPenaltyConfig:
    """Shaping against long episodes: a cost per step and per token beyond a budget."""

    step_budget: int | None = 10
    """Steps that cost nothing; each later step costs ``step_penalty``. None: no step cost."""
    step_penalty: float = 0.05
    """Cost (>= 0, subtracted) of each step beyond ``step_budget``."""
    token_budget: int | None = None
    """Completion tokens (over all steps) that cost nothing. None: no token cost."""
    token_penalty: float = 0.001
    """Cost (>= 0, subtracted) of each completion token beyond ``token_budget``."""

    def __post_init__(self) -> None:
        for name in ("step_budget", "token_budget"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ConfigError(
                    f"LengthPenaltyConfig.{name} must be an integer >= 0 or None, got {value!r}"
                )
        for name in ("step_penalty", "token_penalty"):
            value = getattr(self, name)
            _check_finite("LengthPenaltyConfig", name, value)
            if value < 0:
                raise ConfigError(
                    f"LengthPenaltyConfig.{name} is a cost and must be >= 0, got {value!r}; "
                    "it is subtracted"
                )
        if self.step_budget is None and self.token_budget is None:
            raise ConfigError(
                "LengthPenaltyConfig has neither step_budget nor token_budget, so it can never "
                "penalize; set one of them"
            )


class LengthPenalty:
    """Shaped penalty for length: steps beyond a budget, completion tokens beyond a budget.

    Step ``i`` (counting from 0) costs ``step_penalty`` when ``i >= step_budget``. The
    tokens of step ``i`` that take the running total of completion tokens past
    ``token_budget`` cost ``token_penalty`` each. Parts: ``steps`` and ``tokens``
    (both <= 0).
    """

    name = "length"
    _keys = ("steps", "tokens")

    def __init__(self, config: LengthPenaltyConfig | None = None) -> None:
        self.config = config if config is not None else LengthPenaltyConfig()

    def step_signals(self, episode: Episode) -> tuple[RewardSignal, ...]:
        """One signal per step of ``episode``."""
        cfg = self.config
        signals = []
        used = 0
        for i, step in enumerate(episode.steps):
            steps_cost = 0.0
            if cfg.step_budget is not None and i >= cfg.step_budget:
                steps_cost = -cfg.step_penalty
            tokens_cost = 0.0
            if cfg.token_budget is not None:
                before = max(0, used - cfg.token_budget)
                used += len(step.completion_token_ids)
                tokens_cost = -cfg.token_penalty * (max(0, used - cfg.token_budget) - before)
            signals.append(RewardSignal.of({"steps": steps_cost, "tokens": tokens_cost}))
        return tuple(signals)

    def __call__(self, episode: Episode) -> RewardSignal:
        return _sum_signals(self.step_signals(episode), self._keys)
