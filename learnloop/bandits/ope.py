"""Off-policy evaluation: a new policy's value, estimated on logged choices.

Every choice a :class:`~learnloop.bandits.selector.ToolSelector` makes can be
recorded as a step whose ``state`` holds the context, the candidates and the
propensity (:meth:`Choice.log_state`). :func:`load_logs` reads them back;
:func:`evaluate` estimates what a target policy would have earned on them:

* IPS — inverse propensity scoring (Horvitz & Thompson 1952):
  ``V = 1/n sum pi(a_i|x_i) / mu_i * r_i``;
* SNIPS — self-normalised IPS (Swaminathan & Joachims 2015):
  ``V = sum w_i r_i / sum w_i`` with ``w_i = pi(a_i|x_i) / mu_i``;
* DR — doubly robust (Dudík, Langford & Li 2011, eq. 3):
  ``V = 1/n sum [ sum_a pi(a|x_i) qhat(x_i, a) + w_i (r_i - qhat(x_i, a_i)) ]``,
  with a ridge reward model ``qhat`` per tool over hashed text features, fitted
  on one half of the logs and applied to the other (cross-fitting).

Intervals are 95% normal intervals from the per-decision terms (SNIPS by the
delta method).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from learnloop.bandits.contexts import HashedTextFeaturizer
from learnloop.errors import InvalidInputError
from learnloop.store.base import EpisodeQuery, EpisodeStore

__all__ = [
    "Estimate",
    "LoggedChoice",
    "OPEResult",
    "evaluate",
    "load_logs",
    "logs_from_dicts",
    "selector_target",
]

Floats = npt.NDArray[np.float64]

#: target policy: (task text, candidate tools) -> probability of each candidate
TargetPolicy = Callable[[str, Sequence[str]], Sequence[float]]

_Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggedChoice:
    """One logged decision: what was seen, what was chosen, its probability, the reward."""

    task: str
    """The text the choice was made for."""
    candidates: tuple[str, ...]
    """The tools it was made among."""
    tool: str
    """The tool chosen."""
    propensity: float
    """The probability the logging policy chose ``tool``."""
    reward: float
    """The reward observed."""
    policy_version: str = ""
    """The logging policy's version."""
    started_at: float = 0.0
    """When the episode holding it started (Unix time)."""


def load_logs(
    store: EpisodeStore,
    *,
    since: float | None = None,
    agent_id: str | None = None,
    limit: int | None = None,
) -> list[LoggedChoice]:
    """Logged choices from the steps of episodes started at or after ``since``.

    A step counts when its ``state`` has ``propensity`` and ``candidates`` and it
    names a ``tool``; the task text is ``state["task"]`` if given, else the episode's.
    """
    query = EpisodeQuery(agent_id=agent_id, started_after=since)
    out: list[LoggedChoice] = []
    for episode in store.iter_episodes(query):
        for step in episode.steps:
            state = step.state
            if step.tool is None or "propensity" not in state or "candidates" not in state:
                continue
            out.append(
                LoggedChoice(
                    task=str(state.get("task", episode.task)),
                    candidates=tuple(state["candidates"]),
                    tool=step.tool,
                    propensity=float(state["propensity"]),
                    reward=float(step.reward),
                    policy_version=str(state.get("policy_version", "")),
                    started_at=episode.started_at,
                )
            )
            if limit is not None and len(out) >= limit:
                return out
    return out


def selector_target(selector: Any) -> TargetPolicy:
    """A frozen :class:`ToolSelector` as a target policy (its probabilities, no learning)."""

    def target(task: str, candidates: Sequence[str]) -> Sequence[float]:
        probabilities = selector.probabilities(task, candidates)
        return [probabilities[c] for c in candidates]

    return target


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    """A point estimate with its 95% interval."""

    value: float
    """The estimate."""
    low: float
    """Lower end of the 95% interval."""
    high: float
    """Upper end of the 95% interval."""
    std_error: float
    """Standard error."""

    def to_dict(self) -> dict[str, float]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "std_error": self.std_error,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class OPEResult:
    """IPS, SNIPS and DR estimates of one target policy on one set of logs."""

    ips: Estimate
    """Inverse propensity scoring."""
    snips: Estimate
    """Self-normalised IPS."""
    dr: Estimate
    """Doubly robust."""
    num_logs: int
    """Decisions used."""
    logged_value: float
    """Mean reward the logging policy actually earned."""
    effective_sample_size: float
    """(sum w)^2 / sum w^2: how many logs the estimate is really worth."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ips": self.ips.to_dict(),
            "snips": self.snips.to_dict(),
            "dr": self.dr.to_dict(),
            "num_logs": self.num_logs,
            "logged_value": self.logged_value,
            "effective_sample_size": self.effective_sample_size,
        }


def _mean_estimate(terms: Floats) -> Estimate:
    n = terms.size
    value = float(terms.mean())
    se = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else float("inf")
    return Estimate(value=value, low=value - _Z95 * se, high=value + _Z95 * se, std_error=se)


def ips_terms(weights: Floats, rewards: Floats) -> Floats:
    """Per-decision IPS terms ``w_i r_i``."""
    return weights * rewards


def snips_estimate(weights: Floats, rewards: Floats) -> Estimate:
    """``sum w r / sum w`` with a delta-method interval."""
    total = float(weights.sum())
    if total <= 0.0:
        return Estimate(
            value=float("nan"), low=float("nan"), high=float("nan"), std_error=float("nan")
        )
    value = float(weights @ rewards / total)
    n = weights.size
    influence = weights * (rewards - value) / (total / n)
    se = float(influence.std(ddof=1) / math.sqrt(n)) if n > 1 else float("inf")
    return Estimate(value=value, low=value - _Z95 * se, high=value + _Z95 * se, std_error=se)


def dr_terms(
    target_probs: Floats,
    qhat: Floats,
    chosen: npt.NDArray[np.intp],
    weights: Floats,
    rewards: Floats,
) -> Floats:
    """Per-decision DR terms ``sum_a pi(a|x) qhat(x,a) + w (r - qhat(x, a_chosen))``.

    ``target_probs`` and ``qhat`` are ``(n, k)`` over a common tool axis (zero where a
    tool was not a candidate).
    """
    rows = np.arange(chosen.size)
    return np.asarray((target_probs * qhat).sum(axis=1) + weights * (rewards - qhat[rows, chosen]))


class _RidgeRewardModel:
    """Per-tool ridge regression of reward on hashed text features (the DR model)."""

    def __init__(
        self,
        features: Floats,
        tools: npt.NDArray[np.intp],
        rewards: Floats,
        num_tools: int,
        ridge: float,
    ) -> None:
        d = features.shape[1]
        self.theta = np.zeros((num_tools, d))
        prior = float(rewards.mean()) if rewards.size else 0.0
        for a in range(num_tools):
            mask = tools == a
            x, r = features[mask], rewards[mask] - prior
            if x.shape[0] < d:  # same solution from the n x n system: X^T (X X^T + lambda I)^-1 r
                self.theta[a] = x.T @ np.linalg.solve(x @ x.T + ridge * np.eye(x.shape[0]), r)
            else:
                self.theta[a] = np.linalg.solve(x.T @ x + ridge * np.eye(d), x.T @ r)
        self.prior = prior

    def predict(self, features: Floats) -> Floats:
        return np.asarray(features @ self.theta.T + self.prior)


def evaluate(
    logs: Sequence[LoggedChoice],
    target: TargetPolicy,
    *,
    feature_dim: int = 256,
    ridge: float = 1.0,
    max_weight: float | None = None,
) -> OPEResult:
    """Estimate ``target``'s expected reward on ``logs`` with IPS, SNIPS and DR.

    Args:
        logs: logged choices (see :func:`load_logs`).
        target: ``(task, candidates) -> probabilities`` of the policy to evaluate.
        feature_dim: hashed text dimension of the DR reward model.
        ridge: regularisation of the DR reward model.
        max_weight: clip importance weights at this value (biased, lower variance);
            None keeps them exact.

    Raises:
        InvalidInputError: no logs, or a propensity outside (0, 1].
    """
    if not logs:
        raise InvalidInputError(
            "no logged choices to evaluate on; record choices with "
            "Choice.log_state() first or widen --since"
        )
    tools = sorted({t for log in logs for t in (*log.candidates, log.tool)})
    index = {t: i for i, t in enumerate(tools)}
    n, k = len(logs), len(tools)
    featurizer = HashedTextFeaturizer(dim=feature_dim)
    features = np.zeros((n, feature_dim))
    target_probs = np.zeros((n, k))
    chosen = np.empty(n, dtype=np.intp)
    mu = np.empty(n)
    rewards = np.empty(n)
    for i, log in enumerate(logs):
        if not 0.0 < log.propensity <= 1.0:
            raise InvalidInputError(
                f"logged propensity {log.propensity!r} for tool {log.tool!r} is outside (0, 1]; "
                "a deterministic logging policy cannot be evaluated off-policy (add epsilon)"
            )
        context = featurizer(log.task)
        features[i, context.indices] = context.values
        probs = np.asarray(target(log.task, log.candidates), dtype=np.float64)
        target_probs[i, [index[c] for c in log.candidates]] = probs
        chosen[i], mu[i], rewards[i] = index[log.tool], log.propensity, log.reward
    weights = target_probs[np.arange(n), chosen] / mu
    if max_weight is not None:
        weights = np.minimum(weights, max_weight)
    # cross-fitting: the reward model for each half is fitted on the other half
    qhat = np.zeros((n, k))
    half = np.arange(n) % 2 == 0
    for fit, apply in ((half, ~half), (~half, half)):
        if fit.any() and apply.any():
            model = _RidgeRewardModel(features[fit], chosen[fit], rewards[fit], k, ridge)
            qhat[apply] = model.predict(features[apply])
    ess = float(weights.sum() ** 2 / max(float(weights @ weights), 1e-300))
    return OPEResult(
        ips=_mean_estimate(ips_terms(weights, rewards)),
        snips=snips_estimate(weights, rewards),
        dr=_mean_estimate(dr_terms(target_probs, qhat, chosen, weights, rewards)),
        num_logs=n,
        logged_value=float(rewards.mean()),
        effective_sample_size=ess,
    )


def logs_from_dicts(rows: Iterable[Mapping[str, Any]]) -> list[LoggedChoice]:
    """Logged choices from plain dicts (e.g. a JSONL export)."""
    return [LoggedChoice(**{**row, "candidates": tuple(row["candidates"])}) for row in rows]
