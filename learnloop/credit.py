"""Credit assignment: which steps earned the outcome. Pure functions over arrays.

Each function cites the equation it implements:

* :func:`discounted_returns` — the return G_t (Sutton & Barto 2018, eq. 3.8/3.9);
* :func:`compute_gae` — generalized advantage estimation (Schulman et al. 2016, eq. 11-16);
* :func:`group_normalize` — group-relative advantages over attempts at the same task
  (Shao et al. 2024, DeepSeekMath, GRPO with outcome supervision, §4.1.2);
* :func:`attribution_weights` — temporal decay times confidence, normalized to sum 1;
* :func:`success_score` — how well an outcome matches the expected outcome;
* :func:`assign_credit` — writes per-step credit onto an episode's steps, so training
  can use rewards that depend on the action instead of copying the final reward to
  every step.

    >>> discounted_returns([1.0, 1.0, 1.0], gamma=0.9).round(6).tolist()
    [2.71, 1.9, 1.0]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from learnloop.episode import Episode, OutcomeStatus
from learnloop.errors import ConfigError, InvalidInputError

__all__ = [
    "CreditMethod",
    "assign_credit",
    "attribution_weights",
    "compute_gae",
    "discounted_returns",
    "group_normalize",
    "success_score",
]

CreditMethod = Literal["return", "advantage", "attribution"]

#: Numeric outcome values match an expected value within this relative tolerance...
RELATIVE_TOLERANCE = 0.1
#: ...or within this absolute tolerance, whichever is looser.
ABSOLUTE_TOLERANCE = 0.05


# --- input checks -----------------------------------------------------------------------


def _array(values: ArrayLike, name: str, *, ndim: tuple[int, ...] = (1,)) -> NDArray[np.float64]:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"{name} must be an array of numbers, got {values!r}; pass a list of floats"
        ) from None
    if array.ndim not in ndim:
        raise InvalidInputError(
            f"{name} must have {' or '.join(map(str, ndim))} dimension(s), got shape "
            f"{array.shape}; pass one value per step"
        )
    if not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)][0]
        raise InvalidInputError(
            f"{name} contains a non-finite value ({bad}); replace NaN/inf by a bounded number"
        )
    return array


def _unit(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise InvalidInputError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise InvalidInputError(
            f"{name} must lie in [0, 1], got {value!r}; e.g. {name}=0.99 for long horizons"
        )
    return float(value)


def _dones(dones: ArrayLike | None, shape: tuple[int, ...]) -> NDArray[np.float64]:
    if dones is None:
        return np.zeros(shape)
    array = _array(dones, "dones", ndim=(len(shape),))
    if array.shape != shape:
        raise InvalidInputError(
            f"dones has shape {array.shape} but rewards have shape {shape}; give one flag per step"
        )
    if not np.all((array == 0.0) | (array == 1.0)):
        raise InvalidInputError(
            f"dones must hold only 0/1 (or False/True), got {np.unique(array).tolist()}"
        )
    return array


# --- returns and advantages -------------------------------------------------------------


def discounted_returns(
    rewards: ArrayLike, gamma: float, dones: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Discounted return from every step: G_t = r_t + gamma (1 - done_t) G_{t+1}.

    Sutton & Barto (2018), eq. 3.8 (G_t = sum_k gamma^k R_{t+k+1}) in its recursive
    form, eq. 3.9. ``dones[t] = 1`` means an episode ended after step ``t``, so no
    return flows back across it; the last step bootstraps from 0.

    Args:
        rewards: shape ``(T,)``.
        gamma: discount in [0, 1].
        dones: shape ``(T,)`` of 0/1, or None for one episode.

    Returns:
        Shape ``(T,)``, float64.

    >>> discounted_returns([1, 2, 3, 4], gamma=0.5, dones=[0, 1, 0, 0]).tolist()
    [2.0, 2.0, 5.0, 4.0]
    """
    r = _array(rewards, "rewards")
    gamma = _unit(gamma, "gamma")
    done = _dones(dones, r.shape)
    returns = np.zeros_like(r)
    running = 0.0
    for t in range(len(r) - 1, -1, -1):
        running = r[t] + gamma * (1.0 - done[t]) * running
        returns[t] = running
    return returns


def compute_gae(
    rewards: ArrayLike,
    values: ArrayLike,
    dones: ArrayLike | None,
    last_value: float | ArrayLike,
    gamma: float,
    lam: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Generalized advantage estimation, GAE(gamma, lambda).

    Schulman et al. (2016), "High-Dimensional Continuous Control Using Generalized
    Advantage Estimation", eq. 11-16::

        delta_t = r_t + gamma V(s_{t+1}) (1 - done_t) - V(s_t)
        A_t     = sum_l (gamma lam)^l delta_{t+l}
                = delta_t + gamma lam (1 - done_t) A_{t+1}

    with ``V(s_T) = last_value`` (the bootstrap for a rollout cut off mid-episode).
    ``dones[t] = 1`` means the episode ended after step ``t``: neither the value nor
    the advantage of the next step flows back across it. The value targets are
    ``returns = A + V`` (the lambda-return).

    Args:
        rewards: shape ``(T,)``, or ``(T, N)`` for N parallel environments.
        values: V(s_t), same shape as ``rewards``.
        dones: 0/1 flags, same shape, or None (no episode ends inside the rollout).
        last_value: V(s_T), a float, or shape ``(N,)`` for ``(T, N)`` input.
        gamma: discount in [0, 1].
        lam: GAE lambda in [0, 1] (0: one-step TD, 1: Monte Carlo minus V).

    Returns:
        ``(advantages, returns)``, each the shape of ``rewards``, float64.

    >>> adv, ret = compute_gae([1.0, 1.0], [0.5, 0.5], None, 0.0, gamma=1.0, lam=1.0)
    >>> adv.tolist(), ret.tolist()
    ([1.5, 0.5], [2.0, 1.0])
    """
    r = _array(rewards, "rewards", ndim=(1, 2))
    v = _array(values, "values", ndim=(1, 2))
    if v.shape != r.shape:
        raise InvalidInputError(
            f"values has shape {v.shape} but rewards have shape {r.shape}; give V(s_t) for "
            "every step"
        )
    done = _dones(dones, r.shape)
    gamma = _unit(gamma, "gamma")
    lam = _unit(lam, "lam")
    bootstrap = _array(last_value, "last_value", ndim=(0, 1))
    if bootstrap.shape not in ((), r.shape[1:]):
        raise InvalidInputError(
            f"last_value has shape {bootstrap.shape}; for rewards of shape {r.shape} it must "
            f"be a float or have shape {r.shape[1:]}"
        )
    advantages = np.zeros_like(r)
    next_value = np.broadcast_to(bootstrap, r.shape[1:]).astype(np.float64)
    next_advantage = np.zeros(r.shape[1:])
    for t in range(r.shape[0] - 1, -1, -1):
        not_done = 1.0 - done[t]
        delta = r[t] + gamma * next_value * not_done - v[t]
        next_advantage = delta + gamma * lam * not_done * next_advantage
        advantages[t] = next_advantage
        next_value = v[t]
    return advantages, advantages + v


def group_normalize(
    rewards: ArrayLike, eps: float = 1e-8, *, group_ids: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Group-relative advantages: (r_i - mean(r)) / (std(r) + eps) within each group.

    GRPO with outcome supervision (Shao et al. 2024, DeepSeekMath, §4.1.2): the
    advantage of each of G attempts at the same task is its reward normalized by the
    group's mean and (population) standard deviation. A group whose rewards are all
    equal carries no signal and gets zeros, not NaN (nor the rounding noise of
    ``mean``).

    Args:
        rewards: shape ``(G,)``.
        eps: added to the standard deviation, > 0.
        group_ids: shape ``(G,)``; when given, each distinct id is normalized on its own
            (several tasks' groups in one batch).

    >>> group_normalize([1.0, 0.0, 0.0, 1.0]).round(6).tolist()
    [1.0, -1.0, -1.0, 1.0]
    """
    r = _array(rewards, "rewards")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise InvalidInputError(f"eps must be a number > 0, got {eps!r}; the default is 1e-8")
    if group_ids is None:
        return _normalize(r, float(eps))
    ids = np.asarray(group_ids)
    if ids.shape != r.shape:
        raise InvalidInputError(
            f"group_ids has shape {ids.shape} but rewards have shape {r.shape}; give one id "
            "per reward"
        )
    out = np.zeros_like(r)
    for gid in np.unique(ids):
        mask = ids == gid
        out[mask] = _normalize(r[mask], float(eps))
    return out


def _normalize(r: NDArray[np.float64], eps: float) -> NDArray[np.float64]:
    if r.size == 0 or np.all(r == r[0]):
        return np.zeros_like(r)
    normalized: NDArray[np.float64] = (r - r.mean()) / (r.std() + eps)
    return normalized


def attribution_weights(confidences: ArrayLike, decay: float = 0.9) -> NDArray[np.float64]:
    """Each step's share of an outcome: temporal decay times confidence, summing to 1.

    For ``n`` steps with confidences ``c_i`` in [0, 1]::

        w_i = decay^(n-1-i) x (0.5 + 0.5 c_i),   weight_i = w_i / sum_j w_j

    Later steps, nearer the outcome, get more credit; an unsure step gets down to half
    the weight of a sure one. When every ``w_i`` is 0 (or the sum is not a positive
    finite number) the weights are uniform, 1/n. No steps give an empty array.

    >>> attribution_weights([1.0, 1.0], decay=0.5).round(6).tolist()
    [0.333333, 0.666667]
    """
    c = _array(confidences, "confidences")
    if np.any((c < 0.0) | (c > 1.0)):
        raise InvalidInputError(
            f"confidences must lie in [0, 1], got {c.tolist()}; rescale them (probabilities)"
        )
    decay = _unit(decay, "decay")
    n = c.size
    if n == 0:
        return np.zeros(0)
    raw = np.power(decay, np.arange(n - 1, -1, -1, dtype=np.float64)) * (0.5 + 0.5 * c)
    total = raw.sum()
    if not (np.isfinite(total) and total > 0.0):
        return np.full(n, 1.0 / n)
    weights: NDArray[np.float64] = raw / total
    return weights


# --- success against an expected outcome ------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _matches(actual: Any, expected: Any) -> bool:
    flags = [isinstance(v, (bool, np.bool_)) for v in (actual, expected)]
    if any(flags):  # True == 1 in Python, but a flag is not a count
        return all(flags) and bool(actual) == bool(expected)
    if _is_number(actual) and _is_number(expected):
        actual, expected = float(actual), float(expected)
        if not (math.isfinite(actual) and math.isfinite(expected)):
            return bool(actual == expected)
        # Tiny slack so that a boundary given in decimal (10.0 vs 11.0) still matches.
        tolerance = max(RELATIVE_TOLERANCE * abs(expected), ABSOLUTE_TOLERANCE)
        return bool(abs(actual - expected) <= tolerance * (1.0 + 1e-12))
    return bool(actual == expected)


def success_score(
    outcome: Mapping[str, Any] | None,
    expected: Mapping[str, Any] | None,
    status: OutcomeStatus | str | None = None,
) -> float:
    """How well ``outcome`` matches ``expected``: the fraction of expected keys matched.

    In order:

    1. An error gives 0: ``status == "error"``, ``outcome["status"] == "error"``, or an
       ``"error"`` key in the outcome whose value is not None.
    2. No expectation (None or empty) gives 0.5, or 0.2 when the run timed out
       (``status`` or ``outcome["status"]`` is ``"timeout"``).
    3. Otherwise each expected key scores 1 when the outcome has it and the values
       match: numbers (not booleans) within 10% of the expected value or 0.05
       absolute, whichever is looser; anything else, booleans included, by equality
       (``True`` does not match ``1``). The score is the
       mean over expected keys, in [0, 1].

    >>> success_score({"answer": 10.9, "unit": "m"}, {"answer": 10.0, "unit": "cm"})
    0.5
    >>> success_score({"error": "boom"}, {"answer": 1}), success_score(None, None, "timeout")
    (0.0, 0.2)
    """
    if outcome is not None and not isinstance(outcome, Mapping):
        raise InvalidInputError(f"outcome must be a mapping or None, got {outcome!r}")
    if expected is not None and not isinstance(expected, Mapping):
        raise InvalidInputError(f"expected must be a mapping or None, got {expected!r}")
    data: Mapping[str, Any] = outcome if outcome is not None else {}
    states = {str(status) if status is not None else None, str(data.get("status"))}
    if "error" in states or data.get("error") is not None:
        return 0.0
    if not expected:
        return 0.2 if OutcomeStatus.TIMEOUT.value in states else 0.5
    matched = sum(1 for key, want in expected.items() if key in data and _matches(data[key], want))
    return matched / len(expected)


# --- writing credit onto an episode ------------------------------------------------------

# Statuses that cut an episode off rather than end it: the value of where it stopped
# is bootstrapped (``last_value``), as for a truncated rollout.
_TRUNCATED = frozenset({OutcomeStatus.IN_PROGRESS, OutcomeStatus.TIMEOUT, OutcomeStatus.EVICTED})


def assign_credit(
    episode: Episode,
    method: CreditMethod = "return",
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
    values: ArrayLike | None = None,
    last_value: float = 0.0,
    decay: float = 0.9,
    default_confidence: float = 0.5,
    reward: float | None = None,
) -> Episode:
    """A copy of ``episode`` whose steps carry their credit in ``Step.credit``.

    The per-step rewards are :attr:`Episode.rewards` (step rewards, with the terminal
    reward added to the last step). Methods:

    * ``"return"``: the discounted return from each step, G_t (:func:`discounted_returns`).
    * ``"advantage"``: the GAE advantage A_t (:func:`compute_gae`) with ``values``
      (V(s_t) per step; zeros when None). A finished episode ends after its last step;
      one in progress, timed out or evicted is bootstrapped with ``last_value``.
    * ``"attribution"``: the step's :func:`attribution_weights` share (confidence
      ``default_confidence`` where a step has none) times ``reward``, which defaults to
      :attr:`Episode.total_reward`.

    Only ``Step.credit`` changes. An episode without steps comes back unchanged.

    >>> from learnloop.episode import Step
    >>> ep = Episode.new("t", steps=[Step.new(i, "a") for i in range(3)], terminal_reward=1.0)
    >>> [s.credit for s in assign_credit(ep, "return", gamma=0.5).steps]
    [0.25, 0.5, 1.0]
    """
    if not episode.steps:
        return episode
    if method == "return":
        credit = discounted_returns(episode.rewards, gamma)
    elif method == "advantage":
        n = len(episode.steps)
        v = np.zeros(n) if values is None else _array(values, "values")
        if v.shape != (n,):
            raise InvalidInputError(
                f"values has {v.size} entries for an episode of {n} steps; give V(s_t) per step"
            )
        dones = np.zeros(n)
        if episode.status not in _TRUNCATED:
            dones[-1] = 1.0
        credit, _ = compute_gae(episode.rewards, v, dones, last_value, gamma, lam)
    elif method == "attribution":
        fallback = _unit(default_confidence, "default_confidence")
        confidences = [fallback if s.confidence is None else s.confidence for s in episode.steps]
        total = episode.total_reward if reward is None else reward
        credit = attribution_weights(confidences, decay) * float(_array(total, "reward", ndim=(0,)))
    else:
        raise ConfigError(
            f"unknown credit method {method!r}; use 'return', 'advantage' or 'attribution'"
        )
    steps = tuple(
        dataclasses.replace(step, credit=float(c))
        for step, c in zip(episode.steps, credit, strict=True)
    )
    return episode.replace(steps=steps)
