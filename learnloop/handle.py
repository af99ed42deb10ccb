"""An open episode as a context manager, and the "current episode" of the running code.

``with recorder.episode(task) as ep:`` yields an :class:`EpisodeHandle`; inside the
block, :func:`current_episode` returns it (a contextvar, so every thread and every
asyncio task sees its own), which is how the recorder's tool decorator knows where
a tool call belongs.
"""

from __future__ import annotations

import asyncio
import contextvars
from types import TracebackType
from typing import TYPE_CHECKING, Any

from learnloop.episode import Episode, EpisodeId, JSONValue, OutcomeStatus

if TYPE_CHECKING:
    from learnloop.recorder import Recorder

__all__ = ["EpisodeHandle", "current_episode"]

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
