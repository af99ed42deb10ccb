"""The recorder's background writer: completed episodes go to the store in batches.

Rows are queued by :meth:`EpisodeWriter.put` and written by one thread, one
transaction per batch. A failed write is retried with the rows kept, so nothing
acknowledged is lost; a row the store refuses as invalid (InvalidInputError) is
dropped and logged, not the batch. :meth:`EpisodeWriter.flush` returns once every
row queued before the call is committed.

Rows are :func:`learnloop.store.sqlite.episode_row` tuples (the id first, the JSON
body last); a store without ``add_episode_rows`` gets :class:`Episode` objects.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson

from learnloop.episode import Episode, EpisodeId
from learnloop.errors import InvalidInputError, StoreError

__all__ = ["EpisodeWriter"]

logger = logging.getLogger(__name__)

Row = tuple[Any, ...]


class EpisodeWriter:
    """Writes queued episode rows to ``store`` from a daemon thread."""

    def __init__(
        self,
        store: Any,
        *,
        batch_size: int,
        max_pending: int,
        flush_timeout_s: float,
        name: str = "learnloop-recorder",
    ) -> None:
        self._store = store
        self._batch_size = batch_size
        self._max_pending = max_pending
        self._flush_timeout_s = flush_timeout_s
        self._writes_rows = hasattr(store, "add_episode_rows")
        # Producers append to the queue without a lock (list.append is atomic under
        # the GIL): a lock taken by every completing thread formed convoys, each
        # hand-off waiting for the GIL. The lock guards the writer's side (taking a
        # batch, counting commits) and the wake-up of a sleeping writer.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: list[Row] = []
        self._pending: dict[EpisodeId, Row] = {}
        self._writer_sleeps = False
        self._committed = 0
        self.written = 0
        self.dropped = 0
        self.write_errors = 0
        self._last_error: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._write_loop, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Rows queued and not yet committed."""
        return len(self._queue)

    def put(self, row: Row) -> None:
        """Queue one row; blocks while ``max_pending`` rows wait (backpressure)."""
        if len(self._queue) >= self._max_pending:
            with self._lock:
                while len(self._queue) >= self._max_pending and not self._closing:
                    self._wake.wait(0.1)
        self._pending[row[0]] = row
        self._queue.append(row)
        # The writer sets the flag, then looks at the queue, both under the lock: if
        # it is not set here, the writer has yet to look and will see this row.
        if self._writer_sleeps:
            with self._lock:
                self._wake.notify_all()

    def pending_row(self, episode_id: str) -> Row | None:
        """The queued row of ``episode_id`` while it waits for the store."""
        return self._pending.get(EpisodeId(episode_id))

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every row queued so far is committed; StoreError on timeout."""
        timeout = self._flush_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        with self._lock:
            # The writer removes rows from the queue and counts them as committed in
            # one step under this lock, so this is every row queued so far.
            target = self._committed + len(self._queue)
            self._wake.notify_all()
            while self._committed < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    raise StoreError(
                        f"flush timed out after {timeout:g} s with {target - self._committed} "
                        f"episodes unwritten (last error: {self._last_error!r}); check the store"
                    )
                self._wake.wait(min(remaining, 0.5))

    def close(self, timeout_s: float | None = None) -> None:
        """Flush, then stop the thread (also when the flush fails)."""
        try:
            self.flush(timeout_s)
        finally:
            with self._lock:
                self._closing = True
                self._wake.notify_all()
            self._thread.join(timeout=5.0)

    # --- the thread -----------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                self._writer_sleeps = True
                while not self._queue and not self._closing:
                    self._wake.wait()
                self._writer_sleeps = False
                if not self._queue and self._closing:
                    return
                batch = self._queue[: self._batch_size]
            try:
                self._write(batch)
                dropped = 0
            except InvalidInputError:  # a row the store can never take: isolate it
                try:
                    dropped = self._write_row_by_row(batch)
                except Exception as exc:  # transient; rows are upserts, so retry them all
                    if self._note_error(exc, len(batch)):
                        return
                    continue
            except Exception as exc:  # keep the rows and retry: nothing acknowledged is lost
                if self._note_error(exc, len(batch)):
                    return
                continue
            with self._lock:
                del self._queue[: len(batch)]
                for row in batch:
                    if self._pending.get(row[0]) is row:  # not a newer row of that id
                        del self._pending[row[0]]
                self._committed += len(batch)
                self.written += len(batch) - dropped
                self.dropped += dropped
                self._last_error = None
                self._wake.notify_all()

    def _write(self, rows: list[Row]) -> None:
        if self._writes_rows:
            self._store.add_episode_rows(rows)
        else:
            self._store.add_episodes([Episode.from_dict(orjson.loads(r[-1])) for r in rows])

    def _write_row_by_row(self, batch: list[Row]) -> int:
        """Write rows one at a time, dropping (and logging) those the store refuses
        as invalid, which retrying would never fix; returns how many were dropped."""
        dropped = 0
        for row in batch:
            try:
                self._write([row])
            except InvalidInputError as exc:
                dropped += 1
                logger.error("dropping episode %s: the store refuses it: %s", row[0], exc)
        return dropped

    def _note_error(self, exc: BaseException, num_rows: int) -> bool:
        """Log a failed write and pause before the retry; True if closing (give up)."""
        logger.error("writing %d episodes failed, retrying: %s", num_rows, exc)
        with self._lock:
            self._last_error = exc
            self.write_errors += 1
            if self._closing:
                return True
            self._wake.wait(0.2)
            return False
