"""Contextual policies over text features: LinUCB, linear Thompson sampling, SquareCB.

All three model each arm's expected reward as a linear function of the sparse
text features of a :class:`~learnloop.bandits.contexts.Context`.

* :class:`LinUCB` — Li, Chu, Langford & Schapire 2010, Algorithm 1 (disjoint
  arms): per-arm ridge regression ``A_a = lambda I + sum x x^T``, ``b_a = sum r x``,
  score ``theta_a . x + alpha sqrt(x^T A_a^-1 x)``. ``A_a^-1`` is kept with
  Sherman–Morrison updates, so it costs ``d^2`` memory per arm: features are folded
  to ``max_dim`` buckets (default 256).
* :class:`LinearThompson` — per-arm Bayesian linear regression with a diagonal
  Gaussian posterior updated by assumed-density filtering (the linear-Gaussian
  case of Graepel et al. 2010, "Web-scale Bayesian click-through rate
  prediction", eq. 7–8), Thompson sampling over it (Agrawal & Goyal 2013), and a
  random-walk drift of the weights (a Kalman filter's process noise) as the
  forgetting option. Memory and time are ``O(num_arms x d)`` and ``O(nnz)``.
  Because the weights are independent Gaussians, each arm's score is exactly
  Gaussian, so the probability that the sampled arm wins is a one-dimensional
  integral (:class:`GaussianMaxProbability` computes it to ~1e-4 in a few
  microseconds): logged propensities are computed, not estimated from samples.
* :class:`SquareCB` — the same regression model with SquareCB's inverse-gap
  weighting (Foster & Rakhlin 2020, Algorithm 1): ``p_a = 1 / (m + gamma_t
  (yhat_best - yhat_a))``, ``gamma_t = gamma_scale * t ** gamma_exponent``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from learnloop.bandits.contexts import Context
from learnloop.bandits.policies import Arms, Floats, argmax_probabilities, epsilon_argmax_choice
from learnloop.errors import ConfigError, InvalidInputError

__all__ = [
    "DiagonalGaussianConfig",
    "DiagonalGaussianRegression",
    "GaussianMaxProbability",
    "LinUCB",
    "LinUCBConfig",
    "LinearThompson",
    "LinearThompsonConfig",
    "SquareCB",
    "SquareCBConfig",
    "normal_cdf",
    "probability_of_max",
    "squarecb_probabilities",
]


def normal_cdf(z: Floats) -> Floats:
    """Standard normal CDF, vectorised (|error| < 1.5e-7; Abramowitz & Stegun 7.1.26)."""
    x = np.abs(z) * (1.0 / math.sqrt(2.0))
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    half_erfc = 0.5 * poly * np.exp(-x * x)
    return np.where(z >= 0, 1.0 - half_erfc, half_erfc)


def probability_of_max(
    means: Floats, stds: Floats, position: int, nodes: Floats, weights: Floats
) -> float:
    """P(X_position is the largest) for independent ``X_a ~ N(means_a, stds_a^2)``.

    ``= E_{z ~ N(mu_k, s_k^2)} prod_{a != k} Phi((z - mu_a) / s_a)``, by Gauss–Hermite
    quadrature with ``nodes``/``weights`` from ``numpy.polynomial.hermite.hermgauss``.
    Accurate while the stds are within a small factor of ``stds[position]`` (24 nodes:
    6e-4 at a factor 3, 0.05 at 10); :class:`GaussianMaxProbability` handles any ratio.
    """
    if means.size == 1:
        return 1.0
    z = means[position] + math.sqrt(2.0) * stds[position] * nodes  # (q,)
    # arms that lie 8 sd below every node have Phi = 1 - 1e-15 there: leave them out
    rivals = np.flatnonzero(means + 8.0 * stds > z.min())
    rivals = rivals[rivals != position]
    if rivals.size == 0:
        return float(weights.sum() / math.sqrt(math.pi))
    cdf = normal_cdf((z[:, None] - means[rivals]) / stds[rivals])  # (q, rivals)
    return float(np.clip(weights @ cdf.prod(axis=1) / math.sqrt(math.pi), 0.0, 1.0))


@functools.cache
def _upper_tail_table(resolution: float, span: float) -> Floats:
    """Read-only ``P(N > v)`` for ``v = -span, -span + resolution, ..., span`` (exact erfc)."""
    count = round(2.0 * span / resolution) + 1
    table = np.fromiter(
        (0.5 * math.erfc((-span + i * resolution) / math.sqrt(2.0)) for i in range(count)),
        dtype=np.float64,
        count=count,
    )
    table.flags.writeable = False
    return table


class GaussianMaxProbability:
    """``P(X_k = max)`` for independent Gaussians, cheap enough to log with every choice.

    ``P = E_{z ~ N(mu_k, s_k^2)} prod_{a != k} Phi((z - mu_a) / s_a)``, computed two ways:

    * when no standard deviation is below ``s_k / max_ratio`` (the common case), by
      Gauss–Hermite quadrature on ``num_nodes`` nodes (the outermost ones, under 1e-9 of
      the mass, skipped): error below 1e-3 on 30 arms with ratios up to 2.5;
    * otherwise some factor is a sharp step that the nodes would straddle (24 nodes
      are off by 0.05 at a ratio of 10), so by Simpson's rule on a uniform grid of
      three points per smallest relevant standard deviation (at most ``max_points``).

    ``Phi`` is read from a table of step ``resolution`` (nearest entry: each factor is
    off by at most ``resolution / 2 * phi <= 2e-4``), so a call is a dozen numpy
    operations on preallocated buffers rather than a rational approximation per factor.
    The buffers make one instance unsafe to share between threads (a
    :class:`~learnloop.bandits.selector.ToolSelector` serialises its policy's calls).

    >>> p = GaussianMaxProbability()
    >>> round(p(np.array([0.3, 0.1]), np.array([0.2, 0.3]), 0), 4)  # Phi(0.2 / hypot(0.2, 0.3))
    0.7104
    >>> round(p(np.array([0.0, 0.05]), np.array([0.01, 0.1]), 1), 4)  # ratio 10: Simpson
    0.6906
    """

    def __init__(
        self,
        num_nodes: int = 24,
        *,
        resolution: float = 1e-3,
        span: float = 8.5,
        max_ratio: float = 2.5,
        max_points: int = 4096,
    ) -> None:
        if not 4 <= num_nodes <= 200:
            raise ConfigError(f"num_nodes must lie in [4, 200], got {num_nodes}")
        if not 0.0 < resolution <= 0.1 or not span >= 6.0:
            raise ConfigError(f"need 0 < resolution <= 0.1 and span >= 6, got {resolution}, {span}")
        if not max_ratio >= 1.0 or max_points < 16:
            raise ConfigError(
                f"need max_ratio >= 1 and max_points >= 16, got {max_ratio}, {max_points}"
            )
        nodes, weights = np.polynomial.hermite.hermgauss(num_nodes)
        weights = weights / math.sqrt(math.pi)
        keep = weights >= 1e-9
        self._nodes = math.sqrt(2.0) * nodes[keep]
        self._weights = weights[keep]
        self._table = _upper_tail_table(resolution, span)
        self._inv_resolution = 1.0 / resolution
        # entry of v is (v + span) / resolution; + 0.5 makes truncation round to nearest
        self._offset = span / resolution + 0.5
        self._last = float(self._table.size - 1)
        self._span = span
        self._max_ratio = max_ratio
        self._max_points = max_points
        q = self._nodes.size
        self._z = np.empty(q)
        self._product = np.empty(q)
        self._grid = np.empty((0, q))
        self._index = np.empty((0, q), dtype=np.intp)
        self._factors = np.empty((0, q))

    def __call__(self, means: Floats, stds: Floats, position: int) -> float:
        """P(``X_position`` is the largest) for ``X_a ~ N(means_a, stds_a^2)``, all stds > 0."""
        m = means.size
        if m == 1:
            return 1.0
        s_k = float(stds[position])
        if s_k > self._max_ratio * float(stds.min()):
            return self._simpson(means, stds, position)
        if self._grid.shape[0] < m:
            q = self._z.size
            self._grid, self._factors = np.empty((m, q)), np.empty((m, q))
            self._index = np.empty((m, q), dtype=np.intp)
        z = np.multiply(self._nodes, s_k, out=self._z)
        z += means[position]
        factors = self._factors[:m]
        self._tail(means, stds, z, self._grid[:m], self._index[:m], factors)
        factors[position] = 1.0
        np.multiply.reduce(factors, axis=0, out=self._product)
        return min(max(float(self._product @ self._weights), 0.0), 1.0)

    def _tail(
        self,
        means: Floats,
        stds: Floats,
        z: Floats,
        grid: Floats,
        index: npt.NDArray[np.intp],
        out: Floats,
    ) -> None:
        """``out[a, j] = Phi((z_j - means_a) / stds_a)`` looked up; ``grid``, ``index``: scratch."""
        # the entry of P(N > (mu_a - z) / s_a) = Phi((z - mu_a) / s_a), in table steps
        np.subtract.outer(means, z, out=grid)
        grid *= (self._inv_resolution / stds)[:, None]
        grid += self._offset
        np.minimum(grid, self._last, out=grid)
        np.copyto(index, grid, casting="unsafe")  # truncation; below the table clips to entry 0
        self._table.take(index, mode="clip", out=out)

    def _simpson(self, means: Floats, stds: Floats, position: int) -> float:
        # beyond 6.5 sd a factor is within 5e-11 of 0 or 1: the integrand lives in [low, high]
        mu_k, s_k, width = float(means[position]), float(stds[position]), 6.5
        low, high = mu_k - width * s_k, mu_k + width * s_k
        rivals = np.flatnonzero(means + width * stds > low)
        rivals = rivals[rivals != position]
        if rivals.size:
            low = max(low, float((means[rivals] - width * stds[rivals]).max()))
            # rivals entirely below the (raised) range are ~1 on it
            rivals = rivals[means[rivals] + width * stds[rivals] > low]
        if low >= high:
            return 0.0
        if rivals.size == 0:
            return min(max(0.5 * math.erfc((low - mu_k) / (s_k * math.sqrt(2.0))), 0.0), 1.0)
        mu, s = means[rivals], stds[rivals]
        step = min(s_k, float(s.min())) / 3.0
        intervals = min(self._max_points, max(16, 2 * math.ceil((high - low) / (2.0 * step))))
        z = np.linspace(low, high, intervals + 1)
        factors = np.empty((rivals.size, z.size))
        self._tail(mu, s, z, np.empty_like(factors), np.empty(factors.shape, np.intp), factors)
        u = (z - mu_k) / s_k
        density = np.exp(-0.5 * u * u)
        density *= factors.prod(axis=0)
        density[1:-1:2] *= 4.0
        density[2:-1:2] *= 2.0
        h = (high - low) / intervals
        integral = float(density.sum()) * h / (3.0 * s_k * math.sqrt(2.0 * math.pi))
        return min(max(integral, 0.0), 1.0)


def squarecb_probabilities(predictions: Floats, gamma: float) -> Floats:
    """Inverse-gap weighting (Foster & Rakhlin 2020, Alg. 1, line 4), rewards (higher=better).

    ``p_a = 1 / (m + gamma (yhat_b - yhat_a))`` for ``a != b = argmax``; ``p_b`` takes the rest.

    >>> squarecb_probabilities(np.array([1.0, 0.0]), 8.0).round(3).tolist()
    [0.9, 0.1]
    """
    m = predictions.size
    best = int(np.argmax(predictions))
    p = 1.0 / (m + gamma * (predictions[best] - predictions))
    p[best] = 0.0
    p[best] = 1.0 - p.sum()
    return np.asarray(p)


class _MeanVariance:
    """Means and variances side by side in one ``(dim, 2 * capacity)`` table.

    One row gather then serves both (selection is latency-bound);
    ``mean.data``/``variance.data`` are writable views.
    """

    def __init__(self, dim: int, mean: float, variance: float, capacity: int = 8) -> None:
        self.fills = (mean, variance)
        self.capacity = capacity
        self.table = self._new(dim, capacity)
        self._views()

    def _new(self, dim: int, capacity: int) -> Floats:
        table = np.empty((dim, 2 * capacity))
        table[:, :capacity] = self.fills[0]
        table[:, capacity:] = self.fills[1]
        return table

    def _views(self) -> None:
        c = self.capacity
        self.mean = _View(self.table[:, :c])
        self.variance = _View(self.table[:, c:])

    def grow(self, num_arms: int) -> None:
        if num_arms <= self.capacity:
            return
        old, c = self.table, self.capacity
        self.capacity = max(num_arms, 2 * c)
        self.table = self._new(old.shape[0], self.capacity)
        self.table[:, :c] = old[:, :c]
        self.table[:, self.capacity : self.capacity + c] = old[:, c:]
        self._views()


@dataclass(slots=True)
class _View:
    data: Floats


# --- diagonal Gaussian regression ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DiagonalGaussianConfig:
    """Per-arm Bayesian linear regression with a diagonal posterior (the shared model)."""

    prior_mean: float = 0.0
    """Prior mean of every weight (with the bias feature, the prior reward of a new tool)."""
    prior_variance: float = 1.0
    """Prior variance of every weight (how far one observation moves an untried arm)."""
    noise_variance: float = 0.25
    """Observation noise beta^2 (0.25 is the largest variance of a 0/1 reward)."""
    drift: float = 1e-3
    """Forgetting: variance added to each active weight before an update (random walk); 0 = none."""

    def __post_init__(self) -> None:
        if self.prior_variance <= 0 or self.noise_variance <= 0:
            raise ConfigError(
                f"prior_variance and noise_variance must be > 0, got {self.prior_variance}, "
                f"{self.noise_variance}"
            )
        if not 0.0 <= self.drift <= self.prior_variance:
            raise ConfigError(
                f"drift must lie in [0, prior_variance={self.prior_variance}], got {self.drift}"
            )


class DiagonalGaussianRegression:
    """``r ~ N(w_a . x, beta^2)``, ``w_a ~ N(mu_a, diag(var_a))`` per arm, ADF updates.

    The update for one observation ``(x, r)`` of arm ``a`` (Graepel et al. 2010,
    eq. 7–8, with a Gaussian likelihood): ``s^2 = beta^2 + sum_i x_i^2 var_i``,
    ``mu_i += var_i x_i (r - mu . x) / s^2``, ``var_i *= 1 - x_i^2 var_i / s^2``.
    It spreads the error over the active features by their uncertainty, so
    co-occurring words do not double count.
    """

    def __init__(self, dim: int, config: DiagonalGaussianConfig | None = None) -> None:
        if dim < 1:
            raise ConfigError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.config = config or DiagonalGaussianConfig()
        self._params = _MeanVariance(dim, self.config.prior_mean, self.config.prior_variance)

    @property
    def mean(self) -> _View:
        return self._params.mean

    @property
    def variance(self) -> _View:
        return self._params.variance

    def grow(self, num_arms: int) -> None:
        self._params.grow(num_arms)

    def predict(self, context: Context, arms: Arms) -> tuple[Floats, Floats]:
        """Posterior mean and variance of ``w_a . x`` for each of ``arms``."""
        x = context.values
        rows = self._params.table[context.indices]  # one contiguous gather, (nnz, 2 capacity)
        c = self._params.capacity
        return (x @ rows[:, :c])[arms], ((x * x) @ rows[:, c:])[arms]

    def update(self, context: Context, arm: int, reward: float) -> None:
        idx, x = context.indices, context.values
        mu = self.mean.data[idx, arm]
        var = self.variance.data[idx, arm]
        if self.config.drift > 0.0:
            var = np.minimum(var + self.config.drift, self.config.prior_variance)
        s2 = self.config.noise_variance + (x * x) @ var
        gain = var * x / s2
        self.mean.data[idx, arm] = mu + gain * (reward - mu @ x)
        self.variance.data[idx, arm] = var * (1.0 - gain * x)

    def to_dict(self, num_arms: int) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "config": asdict(self.config),
            "mean": self.mean.data[:, :num_arms].T.tolist(),
            "variance": self.variance.data[:, :num_arms].T.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiagonalGaussianRegression:
        model = cls(int(data["dim"]), DiagonalGaussianConfig(**data.get("config", {})))
        mean = np.asarray(data.get("mean", []), dtype=np.float64).reshape(-1, model.dim)
        variance = np.asarray(data.get("variance", []), dtype=np.float64).reshape(-1, model.dim)
        if mean.shape != variance.shape:
            raise InvalidInputError(f"mean {mean.shape} and variance {variance.shape} differ")
        model.grow(mean.shape[0])
        model.mean.data[:, : mean.shape[0]] = mean.T
        model.variance.data[:, : mean.shape[0]] = variance.T
        return model


class _LinearPolicy:
    """Arm bookkeeping shared by the contextual policies."""

    name: str

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.num_arms = 0
        self.num_updates = 0

    def _check(self, context: Context, arm: int | None = None) -> None:
        if context.dim != self.dim:
            raise InvalidInputError(
                f"context has dim {context.dim} but policy {self.name!r} was built for {self.dim}; "
                "use the featurizer the policy was trained with"
            )
        if arm is not None and not 0 <= arm < self.num_arms:
            raise InvalidInputError(
                f"arm {arm} is not one of the {self.num_arms} registered arms; add it first"
            )


# --- linear Thompson sampling ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LinearThompsonConfig:
    """Settings of :class:`LinearThompson`."""

    model: DiagonalGaussianConfig = DiagonalGaussianConfig()
    """The per-arm regression model."""
    exploration: float = 0.1
    """Scale of the sampled scores' standard deviation (v in Agrawal & Goyal 2013); 0 = greedy.

    The diagonal posterior cannot represent how co-occurring words share evidence, so
    its score variance stays near the prior far longer than the exact posterior's;
    0.1 compensates (measured on the suite stream: 1.0 explores almost uniformly)."""
    quadrature_nodes: int = 24
    """Gauss–Hermite nodes for the exact propensity (more: slower, more precise)."""

    def __post_init__(self) -> None:
        if self.exploration < 0 or not math.isfinite(self.exploration):
            raise ConfigError(f"exploration must be a finite number >= 0, got {self.exploration}")
        if not 4 <= self.quadrature_nodes <= 200:
            raise ConfigError(f"quadrature_nodes must lie in [4, 200], got {self.quadrature_nodes}")


class LinearThompson(_LinearPolicy):
    """Thompson sampling over :class:`DiagonalGaussianRegression` (see the module docstring)."""

    name = "linear_thompson"

    def __init__(self, dim: int, config: LinearThompsonConfig | None = None) -> None:
        super().__init__(dim)
        self.config = config or LinearThompsonConfig()
        self.model = DiagonalGaussianRegression(dim, self.config.model)
        self._max_probability = GaussianMaxProbability(self.config.quadrature_nodes)

    def add_arms(self, num_arms: int) -> None:
        self.model.grow(num_arms)
        self.num_arms = max(self.num_arms, num_arms)

    def _score_distribution(self, context: Context, arms: Arms) -> tuple[Floats, Floats]:
        self._check(context)
        mean, variance = self.model.predict(context, arms)
        std = np.sqrt(variance, out=variance)
        std *= self.config.exploration
        return mean, std

    def select(self, context: Context, arms: Arms, rng: np.random.Generator) -> tuple[int, float]:
        mean, std = self._score_distribution(context, arms)
        if self.config.exploration == 0.0:
            return epsilon_argmax_choice(mean, 0.0, rng)
        draw = rng.standard_normal(arms.size)
        draw *= std
        draw += mean
        position = int(draw.argmax())
        return position, self._max_probability(mean, std, position)

    def probabilities(self, context: Context, arms: Arms) -> Floats:
        mean, std = self._score_distribution(context, arms)
        if self.config.exploration == 0.0:
            return argmax_probabilities(mean, 0.0)
        p = np.array([self._max_probability(mean, std, k) for k in range(arms.size)])
        return np.asarray(p / p.sum())

    def values(self, context: Context, arms: Arms) -> Floats:
        self._check(context)
        return self.model.predict(context, arms)[0]

    def update(self, context: Context, arm: int, reward: float) -> None:
        self._check(context, arm)
        self.model.update(context, arm, reward)
        self.num_updates += 1

    def to_dict(self) -> dict[str, Any]:
        config = asdict(self.config)
        return {
            "policy": self.name,
            "config": config,
            "num_arms": self.num_arms,
            "num_updates": self.num_updates,
            "model": self.model.to_dict(self.num_arms),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinearThompson:
        config = dict(data.get("config", {}))
        config["model"] = DiagonalGaussianConfig(**config.get("model", {}))
        model = DiagonalGaussianRegression.from_dict(data["model"])
        policy = cls(model.dim, LinearThompsonConfig(**config))
        policy.model = model
        policy.add_arms(int(data.get("num_arms", 0)))
        policy.num_updates = int(data.get("num_updates", 0))
        return policy


# --- SquareCB ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SquareCBConfig:
    """Settings of :class:`SquareCB`."""

    model: DiagonalGaussianConfig = DiagonalGaussianConfig()
    """The per-arm regression oracle."""
    gamma_scale: float = 10.0
    """gamma_t = gamma_scale * t ** gamma_exponent (Vowpal Wabbit's defaults: 10, 0.5)."""
    gamma_exponent: float = 0.5
    """How fast exploration shrinks with the number of updates t."""

    def __post_init__(self) -> None:
        if self.gamma_scale <= 0 or not 0 <= self.gamma_exponent <= 1:
            raise ConfigError(
                f"need gamma_scale > 0 and gamma_exponent in [0, 1], got {self.gamma_scale}, "
                f"{self.gamma_exponent}"
            )


class SquareCB(_LinearPolicy):
    """SquareCB (Foster & Rakhlin 2020) over :class:`DiagonalGaussianRegression` means."""

    name = "squarecb"

    def __init__(self, dim: int, config: SquareCBConfig | None = None) -> None:
        super().__init__(dim)
        self.config = config or SquareCBConfig()
        self.model = DiagonalGaussianRegression(dim, self.config.model)

    @property
    def gamma(self) -> float:
        t = max(self.num_updates, 1)
        return float(self.config.gamma_scale * t**self.config.gamma_exponent)

    def add_arms(self, num_arms: int) -> None:
        self.model.grow(num_arms)
        self.num_arms = max(self.num_arms, num_arms)

    def probabilities(self, context: Context, arms: Arms) -> Floats:
        self._check(context)
        return squarecb_probabilities(self.model.predict(context, arms)[0], self.gamma)

    def select(self, context: Context, arms: Arms, rng: np.random.Generator) -> tuple[int, float]:
        p = self.probabilities(context, arms)
        position = min(
            int(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right")), arms.size - 1
        )
        return position, float(p[position])

    def values(self, context: Context, arms: Arms) -> Floats:
        self._check(context)
        return self.model.predict(context, arms)[0]

    def update(self, context: Context, arm: int, reward: float) -> None:
        self._check(context, arm)
        self.model.update(context, arm, reward)
        self.num_updates += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.name,
            "config": asdict(self.config),
            "num_arms": self.num_arms,
            "num_updates": self.num_updates,
            "model": self.model.to_dict(self.num_arms),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SquareCB:
        config = dict(data.get("config", {}))
        config["model"] = DiagonalGaussianConfig(**config.get("model", {}))
        model = DiagonalGaussianRegression.from_dict(data["model"])
        policy = cls(model.dim, SquareCBConfig(**config))
        policy.model = model
        policy.add_arms(int(data.get("num_arms", 0)))
        policy.num_updates = int(data.get("num_updates", 0))
        return policy


# --- LinUCB -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LinUCBConfig:
    """Settings of :class:`LinUCB`."""

    alpha: float = 1.0
    """Width of the confidence bonus ``alpha sqrt(x^T A^-1 x)``."""
    ridge: float = 1.0
    """Ridge regularisation lambda (A starts at lambda I)."""
    max_dim: int = 256
    """Features are folded (index mod max_dim) to bound the d x d matrix per arm."""
    discount: float = 1.0
    """Forgetting: each update of an arm scales its past statistics by this."""
    epsilon: float = 0.0
    """Probability of a uniform choice on top (keeps every propensity > 0)."""

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.ridge <= 0 or self.max_dim < 1:
            raise ConfigError(
                f"need alpha >= 0, ridge > 0, max_dim >= 1; got {self.alpha}, {self.ridge}, "
                f"{self.max_dim}"
            )
        if not 0.0 < self.discount <= 1.0 or not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(
                "discount must lie in (0, 1] and epsilon in [0, 1], "
                f"got {self.discount}, {self.epsilon}"
            )


class LinUCB(_LinearPolicy):
    """Disjoint LinUCB (Li et al. 2010, Alg. 1) with Sherman–Morrison inverse updates.

    With ``discount < 1`` an update of arm ``a`` first sets ``A_a <- gamma A_a +
    (1 - gamma) lambda I`` and ``b_a <- gamma b_a`` (D-LinUCB, Russac et al. 2019,
    keeping the ridge), which needs one ``d x d`` inverse per update.
    """

    name = "linucb"

    def __init__(self, dim: int, config: LinUCBConfig | None = None) -> None:
        super().__init__(dim)
        self.config = config or LinUCBConfig()
        self.fold = min(dim, self.config.max_dim)
        self._a_inv = np.zeros((0, self.fold, self.fold))
        self._gram = np.zeros((0, self.fold, self.fold))
        self._b = np.zeros((self.fold, 0))
        self._theta = np.zeros((self.fold, 0))

    def add_arms(self, num_arms: int) -> None:
        if num_arms <= self._b.shape[1]:
            self.num_arms = max(self.num_arms, num_arms)
            return
        extra = num_arms - self._b.shape[1]
        eye = np.eye(self.fold)
        self._a_inv = np.concatenate(
            [self._a_inv, np.repeat(eye[None] / self.config.ridge, extra, 0)]
        )
        self._gram = np.concatenate(
            [self._gram, np.repeat(eye[None] * self.config.ridge, extra, 0)]
        )
        self._b = np.concatenate([self._b, np.zeros((self.fold, extra))], axis=1)
        self._theta = np.concatenate([self._theta, np.zeros((self.fold, extra))], axis=1)
        self.num_arms = num_arms

    def _folded(self, context: Context) -> tuple[npt.NDArray[np.intp], Floats]:
        if self.fold == self.dim:
            return context.indices, context.values
        folded = context.indices % self.fold
        values = np.zeros(self.fold)
        np.add.at(values, folded, context.values)
        idx = np.flatnonzero(values)
        return idx, values[idx]

    def _scores(self, context: Context, arms: Arms) -> tuple[Floats, Floats]:
        self._check(context)
        idx, x = self._folded(context)
        mean = x @ self._theta[idx][:, arms]
        block = self._a_inv[arms][:, idx[:, None], idx[None, :]]  # (m, n, n)
        width = np.sqrt(np.maximum(np.einsum("i,aij,j->a", x, block, x), 0.0))
        return mean, mean + self.config.alpha * width

    def select(self, context: Context, arms: Arms, rng: np.random.Generator) -> tuple[int, float]:
        return epsilon_argmax_choice(self._scores(context, arms)[1], self.config.epsilon, rng)

    def probabilities(self, context: Context, arms: Arms) -> Floats:
        return argmax_probabilities(self._scores(context, arms)[1], self.config.epsilon)

    def values(self, context: Context, arms: Arms) -> Floats:
        return self._scores(context, arms)[0]

    def update(self, context: Context, arm: int, reward: float) -> None:
        self._check(context, arm)
        idx, x = self._folded(context)
        gamma, ridge = self.config.discount, self.config.ridge
        if gamma < 1.0:
            self._gram[arm] = gamma * self._gram[arm] + (1.0 - gamma) * ridge * np.eye(self.fold)
            self._b[:, arm] *= gamma
            self._gram[arm][np.ix_(idx, idx)] += np.outer(x, x)
            self._a_inv[arm] = np.linalg.inv(self._gram[arm])
        else:
            self._gram[arm][np.ix_(idx, idx)] += np.outer(x, x)
            u = self._a_inv[arm][:, idx] @ x  # A^-1 x (A^-1 symmetric)
            self._a_inv[arm] -= np.outer(u, u) / (1.0 + x @ u[idx])
        self._b[idx, arm] += reward * x
        self._theta[:, arm] = self._a_inv[arm] @ self._b[:, arm]
        self.num_updates += 1

    def to_dict(self) -> dict[str, Any]:
        n = self.num_arms
        return {
            "policy": self.name,
            "config": asdict(self.config),
            "dim": self.dim,
            "num_arms": n,
            "num_updates": self.num_updates,
            "gram": self._gram[:n].tolist(),
            "b": self._b[:, :n].T.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinUCB:
        policy = cls(int(data["dim"]), LinUCBConfig(**data.get("config", {})))
        n = int(data.get("num_arms", 0))
        policy.add_arms(n)
        if n:
            policy._gram[:n] = np.asarray(data["gram"], dtype=np.float64)
            policy._b[:, :n] = np.asarray(data["b"], dtype=np.float64).T
            policy._a_inv[:n] = np.linalg.inv(policy._gram[:n])
            policy._theta[:, :n] = np.einsum("aij,ja->ia", policy._a_inv[:n], policy._b[:, :n])
        policy.num_updates = int(data.get("num_updates", 0))
        return policy
