"""Budgets of training jobs: what a job may spend, what it has spent, and the checks.

Spend has four parts: money (US dollars, from LLM token usage priced by a
:class:`PriceTable`), tokens, wall time and rollouts (episodes played). A job
has a :class:`Budget` (any part may be unlimited); its owner has a monthly
allowance in dollars (default $100, counted per calendar month in UTC over all
of the owner's jobs).

Checks happen twice: before a job starts, on a pre-flight *estimate* of what the
job will spend (refused if the estimate alone would break the job's budget or
the owner's remaining allowance), and while it runs, on what it has actually
spent (:func:`exceeded`).

>>> prices = PriceTable({"gpt-x": Price(input_per_mtok=2.0, output_per_mtok=8.0)})
>>> prices.cost("gpt-x", tokens_in=500_000, tokens_out=250_000)
3.0
>>> exceeded(Spend(cost_usd=3.0), Budget(max_cost_usd=2.5))
'cost $3.0000 exceeds the job budget of $2.5000'
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from learnloop.errors import ConfigError, InvalidInputError

__all__ = [
    "DEFAULT_OWNER_MONTHLY_USD",
    "Budget",
    "BudgetPolicy",
    "Price",
    "PriceTable",
    "Spend",
    "exceeded",
    "month_key",
    "preflight",
]

#: The owner's monthly allowance when none is configured.
DEFAULT_OWNER_MONTHLY_USD = 100.0


def _check_limit(owner: str, name: str, value: float | None) -> None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise ConfigError(
            f"{owner}.{name} must be a finite number >= 0 or None (unlimited), got {value!r}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """What one model costs, in US dollars per million tokens."""

    input_per_mtok: float
    """Dollars per million prompt (input) tokens."""
    output_per_mtok: float
    """Dollars per million completion (output) tokens."""

    def __post_init__(self) -> None:
        _check_limit("Price", "input_per_mtok", self.input_per_mtok)
        _check_limit("Price", "output_per_mtok", self.output_per_mtok)


#: Models that run here cost nothing; hosted models must be priced explicitly.
_LOCAL_MODELS: Mapping[str, Price] = {
    "local": Price(input_per_mtok=0.0, output_per_mtok=0.0),
    "smollm2-135m": Price(input_per_mtok=0.0, output_per_mtok=0.0),
    "replay": Price(input_per_mtok=0.0, output_per_mtok=0.0),
}


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Model name -> :class:`Price`; local models (``local``, ``smollm2-135m``, ``replay``)
    are always present at zero cost."""

    prices: Mapping[str, Price] = field(default_factory=dict)

    def __post_init__(self) -> None:
        merged = {**_LOCAL_MODELS, **self.prices}
        for name, price in merged.items():
            if not isinstance(price, Price):
                raise ConfigError(f"price of model {name!r} must be a Price, got {price!r}")
        object.__setattr__(self, "prices", merged)

    def cost(self, model: str, *, tokens_in: int, tokens_out: int) -> float:
        """Dollars for ``tokens_in`` prompt and ``tokens_out`` completion tokens of ``model``.

        cost = tokens_in / 1e6 * input_per_mtok + tokens_out / 1e6 * output_per_mtok

        Raises:
            InvalidInputError: unknown model or negative token counts.
        """
        if tokens_in < 0 or tokens_out < 0:
            raise InvalidInputError(
                f"token counts must be >= 0, got tokens_in={tokens_in}, tokens_out={tokens_out}"
            )
        price = self.prices.get(model)
        if price is None:
            raise InvalidInputError(
                f"no price for model {model!r}; add it to the price table (known: "
                f"{sorted(self.prices)})"
            )
        return tokens_in / 1e6 * price.input_per_mtok + tokens_out / 1e6 * price.output_per_mtok

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, float]]) -> PriceTable:
        """From ``{"model": {"input_per_mtok": 2.0, "output_per_mtok": 8.0}}``."""
        try:
            return cls({name: Price(**dict(p)) for name, p in data.items()})
        except TypeError as exc:
            raise ConfigError(
                f"cannot read price table ({exc}); each model needs input_per_mtok and "
                "output_per_mtok"
            ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """What one job may spend; None means unlimited."""

    max_cost_usd: float | None = None
    """Dollars of LLM usage the job may spend."""
    max_wall_s: float | None = None
    """Seconds of wall time the job may run (summed over its attempts)."""
    max_rollouts: int | None = None
    """Episodes the job may play."""

    def __post_init__(self) -> None:
        for name in ("max_cost_usd", "max_wall_s", "max_rollouts"):
            _check_limit("Budget", name, getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_cost_usd": self.max_cost_usd,
            "max_wall_s": self.max_wall_s,
            "max_rollouts": self.max_rollouts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Budget:
        return cls(**dict(data or {}))


@dataclass(frozen=True, slots=True, kw_only=True)
class Spend:
    """What a job has spent (or is estimated to spend)."""

    cost_usd: float = 0.0
    """Dollars of LLM usage."""
    tokens_in: int = 0
    """Prompt tokens sent to LLMs."""
    tokens_out: int = 0
    """Completion tokens received from LLMs."""
    wall_s: float = 0.0
    """Seconds of wall time."""
    rollouts: int = 0
    """Episodes played."""

    def plus(self, other: Spend) -> Spend:
        """The sum of two spends."""
        return Spend(
            cost_usd=self.cost_usd + other.cost_usd,
            tokens_in=self.tokens_in + other.tokens_in,
            tokens_out=self.tokens_out + other.tokens_out,
            wall_s=self.wall_s + other.wall_s,
            rollouts=self.rollouts + other.rollouts,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "cost_usd": self.cost_usd,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "wall_s": self.wall_s,
            "rollouts": self.rollouts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Spend:
        return cls(**dict(data or {}))


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetPolicy:
    """The server's budget rules: owners' monthly allowances and the model price table."""

    owner_monthly_usd: float = DEFAULT_OWNER_MONTHLY_USD
    """Dollars each owner may spend per calendar month (UTC) over all their jobs."""
    owner_limits: Mapping[str, float] = field(default_factory=dict)
    """Per-owner monthly allowances that replace ``owner_monthly_usd``."""
    prices: PriceTable = field(default_factory=PriceTable)
    """Dollars per million tokens of each model."""

    def __post_init__(self) -> None:
        _check_limit("BudgetPolicy", "owner_monthly_usd", self.owner_monthly_usd)
        for owner, limit in self.owner_limits.items():
            _check_limit("BudgetPolicy", f"owner_limits[{owner!r}]", limit)

    def limit_for(self, owner: str) -> float:
        """The monthly allowance of ``owner`` in dollars."""
        return float(self.owner_limits.get(owner, self.owner_monthly_usd))

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner_monthly_usd": self.owner_monthly_usd,
            "owner_limits": dict(self.owner_limits),
            "prices": {
                name: {"input_per_mtok": p.input_per_mtok, "output_per_mtok": p.output_per_mtok}
                for name, p in self.prices.prices.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BudgetPolicy:
        return cls(
            owner_monthly_usd=float(data.get("owner_monthly_usd", DEFAULT_OWNER_MONTHLY_USD)),
            owner_limits=dict(data.get("owner_limits") or {}),
            prices=PriceTable.from_dict(data.get("prices") or {}),
        )


def exceeded(spend: Spend, budget: Budget) -> str | None:
    """Why ``spend`` breaks ``budget`` (the first broken limit, in words), or None."""
    if budget.max_cost_usd is not None and spend.cost_usd > budget.max_cost_usd:
        return (
            f"cost ${spend.cost_usd:.4f} exceeds the job budget of ${budget.max_cost_usd:.4f}"
        )
    if budget.max_wall_s is not None and spend.wall_s > budget.max_wall_s:
        return f"wall time {spend.wall_s:.1f} s exceeds the job budget of {budget.max_wall_s} s"
    if budget.max_rollouts is not None and spend.rollouts > budget.max_rollouts:
        return f"{spend.rollouts} rollouts exceed the job budget of {budget.max_rollouts}"
    return None


def preflight(
    estimate: Spend,
    budget: Budget,
    *,
    owner: str,
    owner_spent_usd: float,
    owner_limit_usd: float,
) -> str | None:
    """Why a job estimated to spend ``estimate`` must not start, or None if it may.

    Refused when the estimate alone breaks the job's budget, or when the owner's
    spend this month plus the estimated cost would pass the monthly allowance.
    """
    reason = exceeded(estimate, budget)
    if reason is not None:
        return f"estimated {reason}; raise the budget or shrink the config"
    if owner_spent_usd + estimate.cost_usd > owner_limit_usd:
        return (
            f"owner {owner!r} has spent ${owner_spent_usd:.2f} of ${owner_limit_usd:.2f} this "
            f"month and the job is estimated at ${estimate.cost_usd:.2f}; wait for next month "
            "or raise the owner's monthly budget"
        )
    return None


def month_key(unix_time: float) -> str:
    """The UTC calendar month of ``unix_time`` as ``YYYY-MM``.

    >>> month_key(0.0)
    '1970-01'
    """
    return dt.datetime.fromtimestamp(unix_time, tz=dt.UTC).strftime("%Y-%m")
