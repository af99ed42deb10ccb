"""An open episode as a context manager, and the "current episode" of the running code.

``with recorder.episode(task) as ep:`` yields an :class:`EpisodeHandle`; inside the
block, :func:`current_episode` returns it (a contextvar, so every thread and every
asyncio task sees its own), which is how :func:`record_tool_calls` (the recorder's
tool decorator) knows where a tool call belongs.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from learnloop.episode import Episode, EpisodeId, JSONValue, OutcomeStatus

if TYPE_CHECKING:
    from learnloop.recorder import Recorder

__all__ = ["EpisodeHandle", "current_episode", "record_tool_calls"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_current: contextvars.ContextVar[EpisodeHandle | None] = contextvars.ContextVar(
    "learnloop_current_episode", default=None
)


def current_episode() -> EpisodeHandle | None:
    """The episode opened by the innermost ``with recorder.episode(...)`` here, if any."""
    return _current.get()


class EpisodeHandle:
    """An open episode; use as a context manager (sync or async).

    Leaving the block completes the episode: as ``failure`` with the error
    recorded if an exception escaped (which is then re-raised), as ``success``
    otherwise, unless :meth:`complete` was already called.
    """

    def __init__(self, recorder: Recorder, episode_id: EpisodeId) -> None:
        self._recorder = recorder
        self.id = episode_id
        self.result: Episode | None = None
        self._token: contextvars.Token[EpisodeHandle | None] | None = None

    def step(self, action: str, **fields: Any) -> int | None:
        return self._recorder.step(self.id, action, **fields)

    def observe(self, content: JSONValue, **fields: Any) -> int | None:
        return self._recorder.observe(self.id, content, **fields)

    def complete(self, **fields: Any) -> Episode:
        self.result = self._recorder.complete(self.id, **fields)
        return self.result

    def child(self, task: str, **fields: Any) -> EpisodeHandle:
        """Open a sub-episode whose parent is this one."""
        fields.setdefault("kind", "subtask")
        return self._recorder.episode(task, parent_id=self.id, **fields)

    def __enter__(self) -> EpisodeHandle:
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if self.result is not None or not self._recorder.is_open(self.id):
            return
        if exc is None:
            self.complete(status=OutcomeStatus.SUCCESS)
        else:
            reason = f"{type(exc).__name__}: {exc}"
            status = (
                OutcomeStatus.ABORTED
                if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError))
                else OutcomeStatus.FAILURE
            )
            self.complete(status=status, reason=reason, outcome={"error": reason})

    async def __aenter__(self) -> EpisodeHandle:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def record_tool_calls(recorder: Recorder, fn: Callable[P, R], tool_name: str) -> Callable[P, R]:
    """``fn`` (sync or async) wrapped so that each call inside an open episode is
    recorded there as a step with duration, success and output (arguments that are
    not JSON as their ``repr``). Outside an episode the tool runs unrecorded. The
    tool's own exceptions are recorded, then re-raised; recording problems never
    break the call. This is :meth:`Recorder.tool`.
    """

    def record(
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        started: float,
        output: Any,
        exc: BaseException | None,
    ) -> None:
        handle = current_episode()
        if handle is None:
            return
        try:
            recorder.step(
                handle.id,
                f"call {tool_name}",
                tool=tool_name,
                state={"args": list(args), "kwargs": kwargs},
                result=output,
                success=exc is None,
                error=f"{type(exc).__name__}: {exc}" if exc is not None else None,
                duration_s=time.perf_counter() - started,
                lenient=True,
            )
        except Exception:  # recording must never break the tool call
            logger.warning("could not record a call of %s", tool_name, exc_info=True)

    if inspect.iscoroutinefunction(fn):
        afn = cast(Callable[..., Awaitable[Any]], fn)

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                output = await afn(*args, **kwargs)
            except BaseException as exc:
                record(args, kwargs, started, None, exc)
                raise
            record(args, kwargs, started, output, None)
            return output

        return cast(Callable[P, R], async_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.perf_counter()
        try:
            output = fn(*args, **kwargs)
        except BaseException as exc:
            record(args, dict(kwargs), started, None, exc)
            raise
        record(args, dict(kwargs), started, output, None)
        return output

    return wrapper
