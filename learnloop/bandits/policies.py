"""Bandit policies over tools: the protocol and the tabular learners.

A :class:`Policy` scores a set of candidate arms (tools, by integer index) in a
:class:`~learnloop.bandits.contexts.Context`, picks one with a known probability
(the *propensity*, logged for off-policy evaluation) and learns from the reward.

Tabular policies keep one row of statistics per discrete context key (the spec's
keyword category, or ``"*"``):

* :class:`EpsilonGreedyQ` — the spec's learner: ``Q(s,a) <- Q(s,a) + alpha (R - Q(s,a))``,
  epsilon 0.1 decaying by 0.995 per update to 0.01 (Sutton & Barto 2018, eq. 2.5).
* :class:`UCB1` — Auer, Cesa-Bianchi & Fischer 2002, with the discounted variant
  (D-UCB, Garivier & Moulines 2011) as the forgetting option.
* :class:`BetaThompson` — Beta-Bernoulli Thompson sampling (Thompson 1933; Chapelle &
  Li 2011), discounted towards the prior when forgetting.

Contextual policies over text features live in :mod:`learnloop.bandits.linear`.

Propensities are exact wherever the policy allows: argmax choices with uniform
tie-breaking and epsilon-uniform exploration give ``eps/m + (1-eps)/|ties|``.
Beta Thompson sampling has no closed form; it estimates the propensity from
``propensity_samples`` posterior draws (documented on the class).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from learnloop.bandits.contexts import Context
from learnloop.errors import ConfigError, InvalidInputError

__all__ = [
    "UCB1",
    "BetaThompson",
    "BetaThompsonConfig",
    "EpsilonGreedyQ",
    "EpsilonGreedyQConfig",
    "Policy",
    "UCB1Config",
    "argmax_probabilities",
    "epsilon_argmax_choice",
    "q_update",
]

Arms = npt.NDArray[np.intp]
Floats = npt.NDArray[np.float64]


@runtime_checkable
class Policy(Protocol):
    """How a tool is chosen among candidate arms and how rewards change that.

    ``arms`` are integer arm indices (the selector maps tool names to them);
    ``select`` returns the *position* in ``arms`` of the chosen arm and the
    probability with which it was chosen.
    """

    name: str

    def select(self, context: Context, arms: Arms, rng: np.random.Generator) -> tuple[int, float]:
        """Pick one of ``arms``: (position in ``arms``, propensity)."""
        ...

    def probabilities(self, context: Context, arms: Arms) -> Floats:
        """The probability of choosing each of ``arms`` (sums to 1)."""
        ...

    def values(self, context: Context, arms: Arms) -> Floats:
        """Current estimate of each arm's expected reward in ``context``."""
        ...

    def update(self, context: Context, arm: int, reward: float) -> None:
        """Learn from ``reward`` observed for ``arm`` in ``context``."""
        ...

    def add_arms(self, num_arms: int) -> None:
        """Make room for arms ``0 .. num_arms-1`` (new arms start cold)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The full learned state and config, JSON-safe."""
        ...


# --- pure rules --------------------------------------------------------------------------


def q_update(q: float, reward: float, alpha: float) -> float:
    """Constant step-size update ``Q + alpha (R - Q)`` (Sutton & Barto 2018, eq. 2.5)."""
    return q + alpha * (reward - q)


def argmax_probabilities(scores: Floats, epsilon: float) -> Floats:
    """Probabilities of an epsilon-greedy argmax with uniform tie-breaking.

    ``p_a = epsilon / m + (1 - epsilon) [a in argmax] / |argmax|`` for ``m`` scores.

    >>> argmax_probabilities(np.array([0.2, 0.5, 0.5]), 0.3).round(4).tolist()
    [0.1, 0.45, 0.45]
    """
    best = scores == scores.max()
    return np.asarray(epsilon / scores.size + (1.0 - epsilon) * best / np.count_nonzero(best))


def epsilon_argmax_choice(
    scores: Floats, epsilon: float, rng: np.random.Generator
) -> tuple[int, float]:
    """Sample from :func:`argmax_probabilities` without building the vector.

    Returns (position, exact propensity of that position).
    """
    m = scores.size
    top = scores.max()
    if epsilon > 0.0 and rng.random() < epsilon:
        position = int(rng.integers(m))
    else:
        ties = np.flatnonzero(scores == top)
        position = int(ties[0] if ties.size == 1 else ties[rng.integers(ties.size)])
    num_ties = int(np.count_nonzero(scores == top))
    in_top = scores[position] == top
    return position, epsilon / m + ((1.0 - epsilon) / num_ties if in_top else 0.0)


def _check_unit(name: str, value: float, *, low_open: bool = False) -> None:
    ok = (0.0 < value <= 1.0) if low_open else (0.0 <= value <= 1.0)
    if not ok:
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ConfigError(f"{name} must lie in {interval}, got {value!r}")


# --- tabular storage ---------------------------------------------------------------------


class _Tables:
    """Per-context-key rows of per-arm statistics: ``rows[key]`` is (num_fields, capacity)."""

    def __init__(
        self, fields: tuple[str, ...], initial: tuple[float, ...], capacity: int = 8
    ) -> None:
        self.fields = fields
        self.initial = np.asarray(initial, dtype=np.float64)[:, None]
        self.capacity = max(capacity, 1)
        self.rows: dict[str, Floats] = {}

    def row(self, key: str) -> Floats:
        row = self.rows.get(key)
        if row is None:
            row = np.repeat(self.initial, self.capacity, axis=1)
            self.rows[key] = row
        return row

    def grow(self, num_arms: int) -> None:
        if num_arms <= self.capacity:
            return
        capacity = max(num_arms, 2 * self.capacity)
        for key, row in self.rows.items():
            grown = np.repeat(self.initial, capacity, axis=1)
            grown[:, : self.capacity] = row
            self.rows[key] = grown
        self.capacity = capacity

    def to_dict(self, num_arms: int) -> dict[str, Any]:
        return {
            key: {f: row[i, :num_arms].tolist() for i, f in enumerate(self.fields)}
            for key, row in self.rows.items()
        }

    def load(self, data: Mapping[str, Mapping[str, list[float]]], num_arms: int) -> None:
        self.grow(num_arms)
        for key, columns in data.items():
            row = self.row(key)
            for i, f in enumerate(self.fields):
                values = np.asarray(columns[f], dtype=np.float64)
                row[i, : values.size] = values


class _TabularPolicy:
    """Shared plumbing of the tabular policies (arm growth, export)."""

    name: ClassVar[str]
    _fields: ClassVar[tuple[str, ...]]

    def __init__(self, initial: tuple[float, ...]) -> None:
        self.num_arms = 0
        self.num_updates = 0
        self.tables = _Tables(self._fields, initial)

    def add_arms(self, num_arms: int) -> None:
        self.tables.grow(num_arms)
        self.num_arms = max(self.num_arms, num_arms)

    def _check_arm(self, arm: int) -> None:
        if not 0 <= arm < self.num_arms:
            raise InvalidInputError(
                f"arm {arm} is not one of the {self.num_arms} registered arms; add it first"
            )

    def counts(self, key: str) -> Floats:
        """Number of updates (discounted, when forgetting) of each arm in ``key``."""
        return self.tables.row(key)[self._fields.index("n"), : self.num_arms].copy()

    def entry(self, key: str, arm: int) -> dict[str, float]:
        """Statistics of one (context, arm) pair, by field name."""
        row = self.tables.row(key)
        return {f: float(row[i, arm]) for i, f in enumerate(self._fields)}

    def set_entry(self, key: str, arm: int, values: Mapping[str, float]) -> None:
        """Overwrite the statistics of one (context, arm) pair (shared-state sync)."""
        self.add_arms(arm + 1)
        row = self.tables.row(key)
        for i, f in enumerate(self._fields):
            if f in values:
                row[i, arm] = float(values[f])

    def keys(self) -> list[str]:
        return list(self.tables.rows)

    def _state(self) -> dict[str, Any]:
        return {
            "num_arms": self.num_arms,
            "num_updates": self.num_updates,
            "tables": self.tables.to_dict(self.num_arms),
        }

    def _load_state(self, data: Mapping[str, Any]) -> None:
        self.add_arms(int(data.get("num_arms", 0)))
        self.num_updates = int(data.get("num_updates", 0))
        self.tables.load(data.get("tables", {}), self.num_arms)


# --- epsilon-greedy Q (the spec's learner) -------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EpsilonGreedyQConfig:
    """Settings of the spec's epsilon-greedy Q-learner."""

    epsilon: float = 0.1
    """Initial probability of choosing uniformly at random."""
    epsilon_decay: float = 0.995
    """Factor applied to epsilon after every update."""
    epsilon_min: float = 0.01
    """Epsilon never decays below this."""
    alpha: float = 0.1
    """Learning rate of the Q update (a constant rate also forgets old rewards)."""
    initial_q: float = 0.0
    """Q of an arm never tried in a context (above the reward range: optimistic cold start)."""

    def __post_init__(self) -> None:
        _check_unit("epsilon", self.epsilon)
        _check_unit("epsilon_decay", self.epsilon_decay, low_open=True)
        _check_unit("epsilon_min", self.epsilon_min)
        _check_unit("alpha", self.alpha, low_open=True)
        if self.epsilon_min > self.epsilon:
            raise ConfigError(
                f"epsilon_min ({self.epsilon_min}) exceeds epsilon ({self.epsilon}); lower it"
            )


class EpsilonGreedyQ(_TabularPolicy):
    """``Q(s,a) <- Q(s,a) + alpha (R - Q(s,a))`` per (context key, arm), epsilon-greedy.

    >>> from learnloop.bandits.contexts import KeywordFeaturizer
    >>> policy = EpsilonGreedyQ(); policy.add_arms(2)
    >>> ctx = KeywordFeaturizer()("grep for the error")
    >>> policy.update(ctx, 1, 1.0); round(policy.entry("search", 1)["q"], 3), policy.epsilon
    (0.1, 0.0995)
    """

    name = "epsilon_greedy"
    _fields = ("q", "n")

    def __init__(self, config: EpsilonGreedyQConfig | None = None) -> None:
        self.config = config or EpsilonGreedyQConfig()
        super().__init__((self.config.initial_q, 0.0))
        self.epsilon = self.config.epsilon

    def _q(self, context: Context, arms: Arms) -> Floats:
        return np.asarray(self.tables.row(context.key)[0, arms])

    def select(self, context: Context, arms: Arms, rng: np.random.Generator) -> tuple[int, float]:
        return epsilon_argmax_choice(self._q(context, arms), self.epsilon, rng)

    def probabilities(self, context: Context, arms: Arms) -> Floats:
        return argmax_probabilities(self._q(context, arms), self.epsilon)

    def values(self, context: Context, arms: Arms) -> Floats:
        return self._q(context, arms).copy()

    def update(self, context: Context, arm: int, reward: float) -> None:
        self._check_arm(arm)
        row = self.tables.row(context.key)
        row[0, arm] = q_update(row[0, arm], reward, self.config.alpha)
        row[1, arm] += 1.0
        self.num_updates += 1
        self.decay_epsilon()

    def decay_epsilon(self) -> None:
        """``epsilon <- max(epsilon_min, epsilon * epsilon_decay)``."""
        self.epsilon = max(self.config.epsilon_min, self.epsilon * self.config.epsilon_decay)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.name,
            "config": asdict(self.config),
            "epsilon": self.epsilon,
            **self._state(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpsilonGreedyQ:
        policy = cls(EpsilonGreedyQConfig(**data.get("config", {})))
        policy._load_state(data)
        policy.epsilon = float(data.get("epsilon", policy.config.epsilon))
        return policy


# --- UCB1 -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UCB1Config:
    """Settings of UCB1 (and discounted UCB when ``discount < 1``)."""

    c: float = 1.0
    """Scale of the exploration bonus ``c sqrt(2 ln N / n_a)`` (1.0 for rewards in [0, 1])."""
    discount: float = 1.0
    """Forgetting: every update multiplies the context's counts and sums by this (D-UCB)."""
    epsilon: float = 0.0
    """Probability of a uniform choice on top (keeps every propensity > 0 for evaluation)."""

    def __post_init__(self) -> None:
        if self.c < 0 or not math.isfinite(self.c):
            raise ConfigError(f"c must be a finite number >= 0, got {self.c!r}")
        _check_unit("discount", self.discount, low_open=True)
        _check_unit("epsilon", self.epsilon)


def ucb1_scores(sums: Floats, counts: Floats, c: float) -> Floats:
    """``mean_a + c sqrt(2 ln N / n_a)`` (Auer et al. 2002, UCB1); untried arms score +inf."""
    total = counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums / counts
        bonus = c * np.sqrt(2.0 * math.log(max(total, 1.0)) / counts)
    return np.where(counts > 0, means + bonus, np.inf)


class UCB1(_TabularPolicy):
    """UCB1 per context key; arms never tried in a context are tried first."""

    name = "ucb1"
    _fields = ("s", "n")

    def __init__(self, config: UCB1Config | None = None) -> None:
        self.config = config or UCB1Config()
        super().__init__((0.0, 0.0))

    def _scores(self, context: Context, arms: Arms) -> Floats:
        row = self.tables.row(context.key)
        return ucb1_scores(row[0, arms], row[1, arms], self.config.c)

    def select(self, context: Context, arms: Arms, rng: np.random.Generator) -> tuple[int, float]:
        return epsilon_argmax_choice(self._scores(context, arms), self.config.epsilon, rng)

    def probabilities(self, context: Context, arms: Arms) -> Floats:
        return argmax_probabilities(self._scores(context, arms), self.config.epsilon)

    def values(self, context: Context, arms: Arms) -> Floats:
        row = self.tables.row(context.key)
        n = row[1, arms]
        return np.asarray(np.divide(row[0, arms], n, out=np.zeros(arms.size), where=n > 0))

    def update(self, context: Context, arm: int, reward: float) -> None:
        self._check_arm(arm)
        row = self.tables.row(context.key)
        if self.config.discount < 1.0:
            row *= self.config.discount
        row[0, arm] += reward
        row[1, arm] += 1.0
        self.num_updates += 1

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.name, "config": asdict(self.config), **self._state()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UCB1:
        policy = cls(UCB1Config(**data.get("config", {})))
        policy._load_state(data)
        return policy


# --- Beta Thompson sampling ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BetaThompsonConfig:
    """Settings of Beta-Bernoulli Thompson sampling."""

    prior_alpha: float = 1.0
    """Beta prior pseudo-successes of an untried arm."""
    prior_beta: float = 1.0
    """Beta prior pseudo-failures of an untried arm."""
    discount: float = 1.0
    """Forgetting: every update pulls the context's posteriors this far back to the prior."""
    propensity_samples: int = 256
    """Posterior draws used to estimate the propensity (std. error <= 0.5/sqrt(draws))."""

    def __post_init__(self) -> None:
        if self.prior_alpha <= 0 or self.prior_beta <= 0:
            raise ConfigError(
                f"prior_alpha and prior_beta must be > 0, got {self.prior_alpha}, {self.prior_beta}"
            )
        _check_unit("discount", self.discount, low_open=True)
        if self.propensity_samples < 1:
            raise ConfigError(f"propensity_samples must be >= 1, got {self.propensity_samples}")


class BetaThompson(_TabularPolicy):
    """Thompson sampling with a Beta posterior per (context key, arm).

    A reward ``r`` counts as ``clip(r, 0, 1)`` successes and ``1 - clip(r, 0, 1)``
    failures (Agrawal & Goyal 2012 for fractional rewards). The propensity of the
    chosen arm is the share of ``propensity_samples`` fresh posterior draws in which
    it wins: an unbiased estimate, not the exact probability, which has no closed
    form here; prefer :class:`~learnloop.bandits.linear.LinearThompson` when logs
    feed off-policy evaluation.
    """

    name = "thompson"
    _fields = ("a", "b", "n")

    def __init__(self, config: BetaThompsonConfig | None = None, *, seed: int = 0) -> None:
        self.config = config or BetaThompsonConfig()
        super().__init__((self.config.prior_alpha, self.config.prior_beta, 0.0))
        self._rng = np.random.default_rng(seed)

    def select(self, context: Context, arms: Arms, rng: np.random.Generator) -> tuple[int, float]:
        row = self.tables.row(context.key)
        a, b = row[0, arms], row[1, arms]
        position = int(np.argmax(rng.beta(a, b)))
        draws = rng.beta(a, b, size=(self.config.propensity_samples, arms.size))
        wins = np.count_nonzero(draws.argmax(axis=1) == position)
        # +1/+m smoothing keeps the estimate > 0 so that 1/propensity stays finite
        return position, (wins + 1.0 / arms.size) / (self.config.propensity_samples + 1.0)

    def probabilities(self, context: Context, arms: Arms) -> Floats:
        row = self.tables.row(context.key)
        draws = self._rng.beta(
            row[0, arms], row[1, arms], size=(self.config.propensity_samples, arms.size)
        )
        counts = np.bincount(draws.argmax(axis=1), minlength=arms.size).astype(np.float64)
        return (counts + 1.0 / arms.size) / (self.config.propensity_samples + 1.0)

    def values(self, context: Context, arms: Arms) -> Floats:
        row = self.tables.row(context.key)
        a, b = row[0, arms], row[1, arms]
        return np.asarray(a / (a + b))

    def update(self, context: Context, arm: int, reward: float) -> None:
        self._check_arm(arm)
        row = self.tables.row(context.key)
        gamma = self.config.discount
        if gamma < 1.0:
            row[:, : self.num_arms] = (
                gamma * row[:, : self.num_arms] + (1.0 - gamma) * self.tables.initial
            )
        r = min(max(reward, 0.0), 1.0)
        row[0, arm] += r
        row[1, arm] += 1.0 - r
        row[2, arm] += 1.0
        self.num_updates += 1

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.name, "config": asdict(self.config), **self._state()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BetaThompson:
        policy = cls(BetaThompsonConfig(**data.get("config", {})))
        policy._load_state(data)
        return policy
