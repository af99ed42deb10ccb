"""Usage and budgets: count every model call, and stop a run when its budget is spent.

>>> from learnloop.prompts.llm import ScriptedLLMClient, user_message
>>> client = MeteredClient(ScriptedLLMClient(default="shell_exec"), budget=Budget(max_calls=1))
>>> request = ChatRequest(messages=[user_message("run the tests")])
>>> client.complete(request).text
'shell_exec'
>>> client.meter.totals.num_calls
1
>>> client.complete(request)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
learnloop.errors.BudgetExceededError: LLM budget exhausted (calls spent 1 of a limit of 1)...
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from learnloop.errors import BudgetExceededError, ConfigError
from learnloop.prompts.llm import ChatRequest, ChatResponse, LLMClient, TokenUsage

__all__ = ["Budget", "MeteredClient", "UsageMeter", "UsageTotals"]


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageTotals:
    """Totals over the calls a :class:`UsageMeter` saw."""

    num_calls: int = 0
    """Calls answered."""
    usage: TokenUsage = field(default_factory=TokenUsage)
    """Tokens consumed."""
    cost_usd: float = 0.0
    """Dollars spent."""
    latency_s: float = 0.0
    """Summed wall time of the calls, in seconds."""


class UsageMeter:
    """Thread-safe running totals of calls, tokens, cost and latency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = UsageTotals()

    def add(self, response: ChatResponse) -> UsageTotals:
        """Count one response; returns the new totals."""
        with self._lock:
            self._totals = UsageTotals(
                num_calls=self._totals.num_calls + 1,
                usage=self._totals.usage + response.usage,
                cost_usd=self._totals.cost_usd + response.cost_usd,
                latency_s=self._totals.latency_s + response.latency_s,
            )
            return self._totals

    @property
    def totals(self) -> UsageTotals:
        with self._lock:
            return self._totals


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """Limits on model usage; None means unlimited."""

    max_calls: int | None = None
    """Most calls."""
    max_tokens: int | None = None
    """Most tokens, prompt plus completion."""
    max_cost_usd: float | None = None
    """Most dollars (priced by the client's PriceTable)."""

    def __post_init__(self) -> None:
        for name in ("max_calls", "max_tokens", "max_cost_usd"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be >= 0 or None, got {value!r}")

    def exceeded(self, totals: UsageTotals, *, before_call: bool) -> str | None:
        """Why ``totals`` break the budget, or None.

        Before a call, a limit already reached refuses it (one more call would
        pass it); after a call, only a limit passed counts.
        """
        checks = (
            ("calls", totals.num_calls, self.max_calls),
            ("tokens", totals.usage.total_tokens, self.max_tokens),
            ("cost_usd", totals.cost_usd, self.max_cost_usd),
        )
        for name, spent, limit in checks:
            if limit is None:
                continue
            if spent > limit or (before_call and spent >= limit):
                return f"{name} spent {spent:g} of a limit of {limit:g}"
        return None


class MeteredClient:
    """Wraps a client: counts every call in ``meter`` and enforces ``budget``.

    The budget is checked before each call (a spent budget makes no call) and
    after it (a call that overspent raises, its response kept on the error), so
    the overspend is at most one call.

    Raises:
        BudgetExceededError: from :meth:`complete` when the budget is spent.
    """

    def __init__(
        self, inner: LLMClient, *, meter: UsageMeter | None = None, budget: Budget | None = None
    ) -> None:
        self.inner = inner
        self.meter = meter if meter is not None else UsageMeter()
        self.budget = budget if budget is not None else Budget()

    def complete(self, request: ChatRequest) -> ChatResponse:
        """Check the budget, call the inner client, count the call, check again."""
        reason = self.budget.exceeded(self.meter.totals, before_call=True)
        if reason is not None:
            raise BudgetExceededError(
                f"LLM budget exhausted ({reason}); no call made for {request.preview(40)}. "
                "Raise the Budget limits or stop the run"
            )
        response = self.inner.complete(request)
        totals = self.meter.add(response)
        reason = self.budget.exceeded(totals, before_call=False)
        if reason is not None:
            raise BudgetExceededError(
                f"LLM budget exceeded by the last call ({reason}); raise the Budget limits "
                "or stop the run (the call's response is on this error's .response)",
                response,
            )
        return response

    def __repr__(self) -> str:
        return f"MeteredClient({self.inner!r}, budget={self.budget!r})"
