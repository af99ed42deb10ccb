"""The tool reward: one tool call scored on success, speed, quality and user feedback.

:class:`ToolCallContext` is what it looks at (:func:`tool_call_from_step` builds one
from a recorded step), :class:`ToolRewardConfig` weighs the parts, and the quality
checks (:class:`QualitySpec`, :data:`QualityCheck`) decide the quality bonus.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from learnloop.episode import Step, check_reward
from learnloop.errors import ConfigError, InvalidInputError
from learnloop.rewards.signal import RewardSignal, _check_finite

__all__ = [
    "QualityCheck",
    "QualitySpec",
    "ToolCallContext",
    "ToolReward",
    "ToolRewardConfig",
    "normalize_quality_check",
    "speedup",
    "tool_call_from_step",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallContext:
    """What the tool reward looks at: one call of one tool and how it went."""

    tool: str
    """The tool called."""
    success: bool
    """Whether the call worked."""
    duration_s: float | None = None
    """Wall time of the call in seconds, if measured."""
    expected_duration_s: float | None = None
    """How long the call is expected to take, in seconds, if known."""
    output: Any = None
    """What the tool returned; checked by the quality checks."""
    user_feedback: int | None = None
    """The user's verdict: +1, -1, 0 or None (none given)."""
    context: str | None = None
    """Task category or type; selects the per-context quality check."""

    def __post_init__(self) -> None:
        for name in ("duration_s", "expected_duration_s"):
            value = getattr(self, name)
            if value is not None:
                value = check_reward(value, name)
                if value < 0:
                    raise InvalidInputError(
                        f"{name} must be >= 0 seconds, got {value!r}; pass the wall time or None"
                    )
                object.__setattr__(self, name, value)
        feedback = self.user_feedback
        if feedback is not None and (isinstance(feedback, bool) or feedback not in (-1, 0, 1)):
            raise InvalidInputError(
                f"user_feedback must be +1, -1, 0 or None, got {feedback!r}; map thumbs "
                "up/down to +1/-1"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolRewardConfig:
    """Weights of the tool reward's four parts (see :class:`ToolReward`)."""

    success_reward: float = 1.0
    """The ``success`` part when the call worked."""
    failure_reward: float = -1.0
    """The ``success`` part when the call failed."""
    efficiency_weight: float = 0.5
    """The ``efficiency`` part is this times the speedup."""
    speedup_cap: float = 1.0
    """Largest speedup counted (1.0: half the expected time or less earns the full bonus)."""
    quality_bonus: float = 0.5
    """The ``quality`` part when the output passes every quality check that applies."""
    feedback_weight: float = 1.0
    """The ``feedback`` part is this times the user's feedback (+1, -1 or 0)."""
    bonuses_require_success: bool = True
    """Give the efficiency and quality bonuses only to calls that worked."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name != "bonuses_require_success":
                _check_finite("ToolRewardConfig", f.name, getattr(self, f.name))
        if self.speedup_cap < 0:
            raise ConfigError(
                f"ToolRewardConfig.speedup_cap must be >= 0, got {self.speedup_cap!r}; "
                "use 0 to switch the efficiency bonus off"
            )


def speedup(duration_s: float | None, expected_s: float | None, cap: float = 1.0) -> float:
    """How much faster than expected a call ran, capped: the efficiency bonus's input.

    ``speedup = min(cap, expected_s / duration_s - 1)`` when ``duration_s < expected_s``,
    else 0. A call that took half the expected time has speedup 1, a third 2; an
    instant call (``duration_s == 0``) gets ``cap``. Unknown durations give 0.

    >>> speedup(1.0, 1.5), speedup(2.0, 1.0), speedup(0.1, 1.0, cap=1.0)
    (0.5, 0.0, 1.0)
    """
    if duration_s is None or expected_s is None or not duration_s < expected_s:
        return 0.0
    if duration_s <= 0.0:
        return cap
    return min(cap, expected_s / duration_s - 1.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class QualitySpec:
    """A declarative quality check: the output passes when every given rule holds.

    The output's *text* is the string itself, or for anything else its JSON
    (``json.dumps(output, sort_keys=True, default=str)``).
    """

    required_fields: tuple[str, ...] = ()
    """Keys the output (a mapping) must have, each with a value other than None."""
    min_length: int | None = None
    """Least number of characters of the output's text."""
    patterns: tuple[str, ...] = ()
    """Regular expressions that must each be found (``re.search``) in the output's text."""
    _compiled: tuple[re.Pattern[str], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        for name in ("required_fields", "patterns"):
            value = getattr(self, name)
            if (
                isinstance(value, str)
                or not isinstance(value, Iterable)
                or not all(isinstance(v, str) for v in value)
            ):
                raise ConfigError(
                    f"QualitySpec.{name} must be a list of strings, got {value!r}; "
                    f"e.g. {name}=['answer']"
                )
            object.__setattr__(self, name, tuple(value))
        if self.min_length is not None and (
            isinstance(self.min_length, bool)
            or not isinstance(self.min_length, int)
            or self.min_length < 0
        ):
            raise ConfigError(
                f"QualitySpec.min_length must be an integer >= 0 or None, got {self.min_length!r}"
            )
        compiled = []
        for pattern in self.patterns:
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                raise ConfigError(
                    f"QualitySpec pattern {pattern!r} is not a valid regular expression "
                    f"({exc}); escape special characters with re.escape"
                ) from None
        object.__setattr__(self, "_compiled", tuple(compiled))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualitySpec:
        """Build a spec from ``{"required_fields": [...], "min_length": n, "patterns": [...]}``."""
        known = ("required_fields", "min_length", "patterns")
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ConfigError(
                f"unknown quality check key(s) {unknown}; the known keys are {list(known)} "
                "(or pass a function output -> bool)"
            )
        return cls(
            required_fields=data.get("required_fields", ()),
            min_length=data.get("min_length"),
            patterns=data.get("patterns", ()),
        )

    def __call__(self, output: Any) -> bool:
        if self.required_fields:
            if not isinstance(output, Mapping):
                return False
            if any(output.get(name) is None for name in self.required_fields):
                return False
        if self.min_length is None and not self._compiled:
            return True
        text = (
            output if isinstance(output, str) else json.dumps(output, sort_keys=True, default=str)
        )
        if self.min_length is not None and len(text) < self.min_length:
            return False
        return all(p.search(text) is not None for p in self._compiled)


#: A quality check: a predicate over the output, a :class:`QualitySpec`, or its dict form.
QualityCheck = Callable[[Any], bool] | QualitySpec | Mapping[str, Any]


def normalize_quality_check(check: QualityCheck) -> Callable[[Any], bool]:
    """The predicate for ``check``; a dict becomes a :class:`QualitySpec`.

    Raises:
        ConfigError: for a dict with unknown keys or anything that is not a check.
    """
    if isinstance(check, Mapping):
        return QualitySpec.from_dict(check)
    if callable(check):
        return check
    raise ConfigError(
        f"a quality check must be a function output -> bool or a dict with required_fields / "
        f"min_length / patterns, got {check!r}"
    )


class ToolReward:
    """The tool reward: success, efficiency, quality and user feedback, each reported.

    For a call ``c`` and config ``cfg`` the four components are:

    * ``success``: ``cfg.success_reward`` (+1) if ``c.success`` else ``cfg.failure_reward`` (-1);
    * ``efficiency``: ``cfg.efficiency_weight`` (0.5) x :func:`speedup` of
      ``c.duration_s`` against ``c.expected_duration_s``, capped at ``cfg.speedup_cap``;
    * ``quality``: ``cfg.quality_bonus`` (0.5) when the output passes every quality check
      that applies (the tool's, from ``quality_checks``, and the context's, from
      ``context_quality_checks``), 0 when one fails or none applies. A check that raises
      counts as failed;
    * ``feedback``: ``cfg.feedback_weight`` (1) x ``c.user_feedback`` (0 when None).

    With ``cfg.bonuses_require_success`` (the default) a failed call gets no efficiency
    or quality bonus. The total is the sum of the four.

    >>> ToolReward()(ToolCallContext(tool="t", success=False, user_feedback=-1)).total
    -2.0
    """

    name = "tool"

    def __init__(
        self,
        config: ToolRewardConfig | None = None,
        quality_checks: Mapping[str, QualityCheck] | None = None,
        context_quality_checks: Mapping[str, QualityCheck] | None = None,
    ) -> None:
        self.config = config if config is not None else ToolRewardConfig()
        self._tool_checks = {
            tool: normalize_quality_check(check) for tool, check in (quality_checks or {}).items()
        }
        self._context_checks = {
            ctx: normalize_quality_check(check)
            for ctx, check in (context_quality_checks or {}).items()
        }

    def quality_passed(self, call: ToolCallContext) -> bool | None:
        """Whether ``call.output`` passes its checks; None when no check applies."""
        return self._quality(call.tool, call.context, call.output)

    def _quality(self, tool: str, context: str | None, output: Any) -> bool | None:
        checks = []
        if tool in self._tool_checks:
            checks.append(("tool", tool, self._tool_checks[tool]))
        if context is not None and context in self._context_checks:
            checks.append(("context", context, self._context_checks[context]))
        if not checks:
            return None
        for kind, key, check in checks:
            try:
                passed = bool(check(output))
            except Exception as exc:  # a user's check must never crash the reward
                logger.debug("quality check for %s %r raised %r: counted as failed", kind, key, exc)
                return False
            if not passed:
                return False
        return True

    def __call__(self, call: ToolCallContext) -> RewardSignal:
        bonuses = call.success or not self.config.bonuses_require_success
        return self._signal(
            call.success,
            call.duration_s,
            call.expected_duration_s,
            call.user_feedback,
            quality=bonuses and bool(self.quality_passed(call)),
        )

    def _score_call(
        self,
        tool: str,
        success: bool,
        duration_s: float,
        expected_duration_s: float,
        output: Any,
        context: str | None,
    ) -> RewardSignal:
        """``self(ToolCallContext(...))`` of a call without feedback, without building the context.

        For callers whose durations are known valid (finite floats >= 0), such as
        the suite environment, which scores every step.
        """
        bonuses = success or not self.config.bonuses_require_success
        return self._signal(
            success,
            duration_s,
            expected_duration_s,
            None,
            quality=bonuses and bool(self._quality(tool, context, output)),
        )

    def _signal(
        self,
        success: bool,
        duration_s: float | None,
        expected_duration_s: float | None,
        user_feedback: int | None,
        *,
        quality: bool,
    ) -> RewardSignal:
        cfg = self.config
        efficiency = 0.0
        if success or not cfg.bonuses_require_success:
            efficiency = cfg.efficiency_weight * speedup(
                duration_s, expected_duration_s, cfg.speedup_cap
            )
        parts = {
            "success": float(cfg.success_reward if success else cfg.failure_reward),
            "efficiency": float(efficiency),
            "quality": float(cfg.quality_bonus) if quality else 0.0,
            "feedback": float(cfg.feedback_weight * (user_feedback or 0)),
        }
        # The config's weights are finite and feedback is -1, 0 or 1, so only the
        # efficiency part (a weight times a speedup) can overflow to infinity.
        if math.isfinite(parts["efficiency"]):
            return RewardSignal._trusted(math.fsum(parts.values()), parts)
        return RewardSignal.of(parts)  # raises, naming the part that is not finite

    def score_step(self, step: Step) -> RewardSignal:
        """The tool reward of a recorded step (see :func:`tool_call_from_step`)."""
        return self(tool_call_from_step(step))


def tool_call_from_step(step: Step) -> ToolCallContext:
    """The :class:`ToolCallContext` of a recorded step.

    ``tool`` is ``step.tool`` (else ``step.action``), ``success`` is ``step.success is
    True`` (else ``step.error is None`` when success was not recorded), ``output`` is
    ``step.result`` and ``duration_s`` is ``step.duration_s``. The rest comes from
    ``step.metadata`` (else ``step.state``): ``expected_duration_s``,
    ``user_feedback`` and ``context``.
    """

    def lookup(key: str) -> Any:
        if key in step.metadata:
            return step.metadata[key]
        return step.state.get(key)

    success = step.success if step.success is not None else step.error is None
    context = lookup("context")
    return ToolCallContext(
        tool=step.tool if step.tool is not None else step.action,
        success=bool(success),
        duration_s=step.duration_s,
        expected_duration_s=lookup("expected_duration_s"),
        output=step.result,
        user_feedback=lookup("user_feedback"),
        context=None if context is None else str(context),
    )
