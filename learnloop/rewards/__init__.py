"""Reward functions: plain typed callables over a tool call, a step or an episode.

A reward function returns a float or a :class:`RewardSignal`, which carries the
total *and* the parts it is made of, so anyone can see why a step scored what it did::

    >>> reward = ToolReward(quality_checks={"search": {"required_fields": ["hits"]}})
    >>> signal = reward(ToolCallContext(tool="search", success=True, duration_s=1.0,
    ...                                 expected_duration_s=1.5, output={"hits": [1, 2]}))
    >>> dict(signal.components)
    {'success': 1.0, 'efficiency': 0.25, 'quality': 0.5, 'feedback': 0.0}
    >>> signal.total
    1.75

Kinds of reward function (each a one-argument callable, no ``**kwargs``):

* :class:`ToolReward` scores one :class:`ToolCallContext` (success, speed, quality,
  user feedback).
* Step-level functions take a :class:`~learnloop.episode.Step`
  (e.g. :meth:`ToolReward.score_step`).
* Episode-level functions take an :class:`~learnloop.episode.Episode`:
  :class:`OutcomeReward` and the shaped rewards :class:`ToolUsageReward`,
  :class:`VerificationReward` and :class:`LengthPenalty`. The shaped rewards also
  say which step earned each part (:meth:`ToolUsageReward.step_signals`).

Combinators (:func:`sum_rewards`, :func:`weighted_sum`, :func:`clip_reward`) keep
every part visible by prefixing it with the name of the function it came from;
:class:`RewardRegistry` maps an agent type to its reward function; and
:func:`score_episode` / :func:`score_steps` write the result back onto a copy of
the episode.

The code lives in three modules: :mod:`learnloop.rewards.signal` (the signal,
protocols, combinators, registry and write-back), :mod:`learnloop.rewards.tool` (the
tool reward) and :mod:`learnloop.rewards.shaping` (the outcome and shaped rewards).
"""

from __future__ import annotations

from learnloop.rewards.shaping import (
    LengthPenalty,
    LengthPenaltyConfig,
    OutcomeReward,
    OutcomeRewardConfig,
    ToolUsageConfig,
    ToolUsageReward,
    VerificationConfig,
    VerificationReward,
)
from learnloop.rewards.signal import (
    EPISODE_COMPONENTS_KEY,
    ClippedReward,
    EpisodeRewardFn,
    NamedReward,
    RewardRegistry,
    RewardSignal,
    RewardValue,
    StepRewardFn,
    StepwiseRewardFn,
    SumReward,
    as_signal,
    clip_reward,
    named,
    reward_name,
    score_episode,
    score_steps,
    sum_rewards,
    weighted_sum,
)
from learnloop.rewards.tool import (
    QualityCheck,
    QualitySpec,
    ToolCallContext,
    ToolReward,
    ToolRewardConfig,
    normalize_quality_check,
    speedup,
    tool_call_from_step,
)

__all__ = [
    "EPISODE_COMPONENTS_KEY",
    "ClippedReward",
    "EpisodeRewardFn",
    "LengthPenalty",
    "LengthPenaltyConfig",
    "NamedReward",
    "OutcomeReward",
    "OutcomeRewardConfig",
    "QualityCheck",
    "QualitySpec",
    "RewardRegistry",
    "RewardSignal",
    "RewardValue",
    "StepRewardFn",
    "StepwiseRewardFn",
    "SumReward",
    "ToolCallContext",
    "ToolReward",
    "ToolRewardConfig",
    "ToolUsageConfig",
    "ToolUsageReward",
    "VerificationConfig",
    "VerificationReward",
    "as_signal",
    "clip_reward",
    "named",
    "normalize_quality_check",
    "reward_name",
    "score_episode",
    "score_steps",
    "speedup",
    "sum_rewards",
    "tool_call_from_step",
    "weighted_sum",
]
