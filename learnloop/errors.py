"""The exception tree of learnloop.

Every error learnloop raises on purpose derives from :class:`LearnloopError`::

    LearnloopError
    ├── ConfigError            (also ValueError)  a config or argument cannot work
    ├── InvalidInputError      (also ValueError)  data handed in is malformed
    ├── ClosedError            (also RuntimeError) using something finished or closed
    ├── StoreError
    │   ├── NotFoundError      (also KeyError)    no such episode, document, version
    │   └── ConflictError                         a concurrent write won first
    ├── LLMError
    │   ├── RateLimitError
    │   └── LLMTimeoutError
    ├── ToolError                                 a tool is misconfigured (a tool
    │                                             *failing* is data, not an error)
    ├── BudgetExceededError                       a cost, token, call or time budget
    │                                             is spent (ends the run)
    └── JobError                                  an invalid job transition

Messages state what went wrong, the offending value, and the fix.
"""

from __future__ import annotations

__all__ = [
    "BudgetExceededError",
    "ClosedError",
    "ConfigError",
    "ConflictError",
    "InvalidInputError",
    "JobError",
    "LLMError",
    "LLMTimeoutError",
    "LearnloopError",
    "NotFoundError",
    "RateLimitError",
    "StoreError",
    "ToolError",
]


class LearnloopError(Exception):
    """Root of every error learnloop raises on purpose."""


class ConfigError(LearnloopError, ValueError):
    """A configuration value or argument cannot work; the message names the fix."""


class InvalidInputError(LearnloopError, ValueError):
    """Data handed to learnloop (a reward, a state, an imported line) is malformed."""


class ClosedError(LearnloopError, RuntimeError):
    """Something already completed or closed was used again."""


class StoreError(LearnloopError):
    """The store could not carry out an operation."""


class NotFoundError(StoreError, KeyError):
    """No record with that id exists."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConflictError(StoreError):
    """A concurrent writer changed the record first (compare-and-set failed)."""


class LLMError(LearnloopError):
    """A language-model call failed."""


class RateLimitError(LLMError):
    """The LLM endpoint refused the call for rate or quota reasons."""


class LLMTimeoutError(LLMError):
    """The LLM endpoint did not answer in time."""


class ToolError(LearnloopError):
    """A tool is registered or called in a way that cannot work."""


class BudgetExceededError(LearnloopError):
    """A usage budget (calls, tokens, dollars, wall time, rollouts) is spent.

    Not an :class:`LLMError`: code that records a failed model call as a failed
    step must not swallow it; running out of budget ends the run. When raised
    after a model call, that call's response is kept in :attr:`response`.
    """

    def __init__(self, message: str, response: object | None = None) -> None:
        super().__init__(message)
        self.response = response


class JobError(LearnloopError):
    """A training job cannot make the requested transition."""
