"""How agents write episodes: ``begin`` → ``step``/``observe`` → ``complete``.

The recorder keeps open episodes in memory, bounded so that a storm of events
cannot exhaust it, and hands completed ones to a background writer that stores
them in batches. Every value is checked and bounded on the way in; every secret
is redacted before an episode leaves for the store.

Durability: once ``complete()`` has returned, the episode is durable as soon as
``flush()`` (or ``close()``, which flushes) returns. A process killed after that
loses nothing; episodes completed but not flushed may be lost.

Bounds (all in :class:`RecorderConfig`):

* at most ``max_open_episodes`` (500) open at once; beginning one more completes
  the oldest as ``evicted``;
* at most ``max_items_per_episode`` (1,000) steps plus observations per episode;
  further ones are refused (``step`` returns None) and counted;
* strings in state, results, outcome and metadata are cut to
  ``max_string_chars`` (500) characters plus a marker ``…[+N chars]``; lists and
  dicts to ``max_collection_items`` (1,000) items; nesting deeper than
  ``max_depth`` (20) becomes a string;
* an episode open longer than ``ttl_s`` (6 h) is completed as ``timeout``.

Misuse raises at once: an unknown id raises NotFoundError, a step on a completed
episode raises ClosedError, a NaN reward or a confidence outside [0, 1] raises
InvalidInputError, as does state that is not JSON (a set, an object...).

>>> import tempfile, os
>>> from learnloop.store import SqliteStore
>>> store = SqliteStore(os.path.join(tempfile.mkdtemp(), "r.db"))
>>> recorder = Recorder(store)
>>> with recorder.episode("find the config file", agent_id="doc") as ep:
...     ep.step("call grep", tool="grep", result={"matches": 1}, reward=1.0)
0
>>> recorder.close()
>>> store.query_episodes()[0].status.value
'success'
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, cast, overload

import orjson

from learnloop.bounds import Sanitizer
from learnloop.episode import (
    Episode,
    EpisodeId,
    JSONValue,
    OutcomeStatus,
    check_confidence,
    check_reward,
    new_episode_id,
)
from learnloop.errors import ClosedError, ConfigError, InvalidInputError, NotFoundError, StoreError
from learnloop.handle import EpisodeHandle, current_episode
from learnloop.redaction import Redactor
from learnloop.store.sqlite import episode_row

__all__ = [
    "EpisodeHandle",
    "Recorder",
    "RecorderConfig",
    "RecorderStats",
    "current_episode",
]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True, kw_only=True)
class RecorderConfig:
    """Bounds and write behaviour of a :class:`Recorder`."""

    max_open_episodes: int = 500
    """Open episodes kept at most; beginning one more evicts the oldest."""
    max_items_per_episode: int = 1000
    """Steps plus observations per episode; further ones are refused and counted."""
    max_string_chars: int = 500
    """Strings in state, results, outcome and metadata are cut to this length."""
    max_text_chars: int = 4000
    """Task, action, decision and error texts are cut to this length."""
    max_collection_items: int = 1000
    """Lists and dicts in state are cut to this many items."""
    max_depth: int = 20
    """Nesting deeper than this is replaced by a short string."""
    ttl_s: float = 6 * 3600.0
    """Seconds an episode may stay open before it is completed as ``timeout``."""
    redact_secrets: bool = True
    """Replace API keys, tokens and passwords by ``[REDACTED]`` before storing."""
    extra_secret_patterns: tuple[str, ...] = ()
    """More regexes whose matches are redacted."""
    batch_size: int = 512
    """Episodes written per transaction at most."""
    max_pending_episodes: int = 20_000
    """Completed episodes waiting for the writer at most; ``complete`` blocks beyond."""
    flush_timeout_s: float = 60.0
    """How long ``flush``/``close`` wait for the writer before raising StoreError."""

    def __post_init__(self) -> None:
        for name in (
            "max_open_episodes",
            "max_items_per_episode",
            "max_string_chars",
            "max_text_chars",
            "max_collection_items",
            "max_depth",
            "batch_size",
            "max_pending_episodes",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"RecorderConfig.{name} must be an integer >= 1, got {value!r}")
        if not self.ttl_s > 0:
            raise ConfigError(f"RecorderConfig.ttl_s must be > 0 seconds, got {self.ttl_s!r}")


@dataclass(frozen=True, slots=True)
class RecorderStats:
    """Counters since the recorder was created."""

    open_episodes: int
    begun: int
    completed: int
    evicted: int
    timed_out: int
    steps: int
    observations: int
    refused: int
    truncated_values: int
    redactions: int
    pending_writes: int
    written: int
    dropped: int
    write_errors: int


@dataclass(slots=True)
class _OpenEpisode:
    """Mutable state of an episode being recorded (private to the recorder).

    Steps and observations are kept as the sparse dicts that ``Step.to_dict`` and
    ``Observation.to_dict`` write: completion serializes them as they are, and
    frozen records are built only when someone asks for the episode.
    """

    id: EpisodeId
    task: str
    agent_id: str
    kind: str
    parent_id: EpisodeId | None
    expected_outcome: dict[str, JSONValue] | None
    acceptance_criteria: tuple[str, ...]
    metadata: dict[str, JSONValue]
    versions: dict[str, str]
    started_at: float
    steps: list[dict[str, JSONValue]] = field(default_factory=list)
    observations: list[dict[str, JSONValue]] = field(default_factory=list)
    num_refused: int = 0

    def body(self, **final: Any) -> dict[str, JSONValue]:
        """The episode as ``Episode.to_dict`` writes it, with ``final`` fields set."""
        return {
            "id": self.id,
            "task": self.task,
            "agent_id": self.agent_id,
            "kind": self.kind,
            "parent_id": self.parent_id,
            "expected_outcome": self.expected_outcome,
            "acceptance_criteria": list(self.acceptance_criteria),
            "steps": self.steps,
            "observations": self.observations,
            "status": final.get("status", OutcomeStatus.IN_PROGRESS.value),
            "status_reason": final.get("status_reason"),
            "outcome": final.get("outcome"),
            "terminal_reward": final.get("terminal_reward", 0.0),
            "started_at": self.started_at,
            "ended_at": final.get("ended_at"),
            "metadata": self.metadata,
            "versions": self.versions,
            "num_refused": self.num_refused,
        }

    def snapshot(self) -> Episode:
        return Episode.from_dict(self.body())


class Recorder:
    """Records episodes into a store; thread-safe and asyncio-safe.

    Args:
        store: any object with ``add_episodes`` and ``get_episode`` (see
            :mod:`learnloop.store`); SQL stores also offer a faster row path.
        config: bounds and write behaviour.
        clock: returns Unix time; tests pass a fake one.
    """

    def __init__(
        self,
        store: Any,
        config: RecorderConfig = RecorderConfig(),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._redactor = Redactor(extra=config.extra_secret_patterns)
        self._lock = threading.Lock()
        self._open: OrderedDict[EpisodeId, _OpenEpisode] = OrderedDict()
        self._finished: OrderedDict[EpisodeId, str] = OrderedDict()  # id -> status, recent
        self._pending: dict[EpisodeId, tuple[Any, ...]] = {}
        self._queue: list[tuple[Any, ...]] = []
        self._enqueued = 0
        self._committed = 0
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._writer_error: BaseException | None = None
        self._give_up = False
        self._last_cleanup = clock()
        self._counts = dict.fromkeys(
            (
                "begun",
                "completed",
                "evicted",
                "timed_out",
                "steps",
                "observations",
                "refused",
                "truncated_values",
                "redactions",
                "written",
                "dropped",
                "write_errors",
            ),
            0,
        )
        self._writes_rows = hasattr(store, "add_episode_rows")
        self._writer = threading.Thread(
            target=self._write_loop, name="learnloop-recorder", daemon=True
        )
        self._writer.start()

    @property
    def config(self) -> RecorderConfig:
        return self._config

    def _sanitizer(self) -> Sanitizer:
        config = self._config
        return Sanitizer(
            max_chars=config.max_string_chars,
            max_items=config.max_collection_items,
            max_depth=config.max_depth,
        )

    # --- recording ------------------------------------------------------------------

    def begin(
        self,
        task: str,
        *,
        agent_id: str = "default",
        kind: str = "task",
        parent_id: str | None = None,
        expected_outcome: Mapping[str, JSONValue] | None = None,
        acceptance_criteria: Sequence[str] = (),
        metadata: Mapping[str, JSONValue] | None = None,
        versions: Mapping[str, str] | None = None,
        episode_id: str | None = None,
    ) -> EpisodeId:
        """Open an episode and return its id."""
        if not isinstance(task, str):
            raise InvalidInputError(f"task must be a string, got {type(task).__name__}")
        sanitizer = self._sanitizer()
        now = self._clock()
        episode = _OpenEpisode(
            id=EpisodeId(episode_id) if episode_id else new_episode_id(),
            task=sanitizer.cut(task, self._config.max_text_chars),
            agent_id=str(agent_id),
            kind=str(kind),
            parent_id=EpisodeId(parent_id) if parent_id else None,
            expected_outcome=cast(
                "dict[str, JSONValue] | None",
                sanitizer.value(dict(expected_outcome), "expected_outcome")
                if expected_outcome is not None
                else None,
            ),
            acceptance_criteria=tuple(
                sanitizer.cut(str(c), self._config.max_text_chars) for c in acceptance_criteria
            ),
            metadata=cast(
                "dict[str, JSONValue]", sanitizer.value(dict(metadata or {}), "metadata")
            ),
            versions={str(k): str(v) for k, v in (versions or {}).items()},
            started_at=now,
        )
        evicted: list[_OpenEpisode] = []
        with self._lock:
            self._check_open()
            if episode.id in self._open or episode.id in self._pending:
                raise InvalidInputError(
                    f"episode id {episode.id!r} is already in use; omit episode_id"
                )
            while len(self._open) >= self._config.max_open_episodes:
                evicted.append(self._open.popitem(last=False)[1])
            self._open[episode.id] = episode
            self._counts["begun"] += 1
            self._counts["truncated_values"] += sanitizer.truncated
        for old in evicted:
            logger.warning(
                "evicting episode %s: more than %d open", old.id, self._config.max_open_episodes
            )
            self._finish(
                old,
                OutcomeStatus.EVICTED,
                reason=f"evicted: more than {self._config.max_open_episodes} episodes open",
                counter="evicted",
            )
        if now - self._last_cleanup > min(60.0, self._config.ttl_s / 10):
            self.cleanup_expired()
        return episode.id

    def step(
        self,
        episode_id: str,
        action: str,
        *,
        tool: str | None = None,
        state: Mapping[str, Any] | None = None,
        decision: str | None = None,
        result: Any = None,
        reward: float = 0.0,
        reward_components: Mapping[str, float] | None = None,
        confidence: float | None = None,
        success: bool | None = None,
        error: str | None = None,
        duration_s: float | None = None,
        started_at: float | None = None,
        prompt_token_ids: Sequence[int] = (),
        completion_token_ids: Sequence[int] = (),
        completion_logprobs: Sequence[float] = (),
        metadata: Mapping[str, Any] | None = None,
        lenient: bool = False,
    ) -> int | None:
        """Record one action; returns its index, or None if the episode is full.

        ``lenient=True`` turns values that are not JSON into their ``repr`` instead
        of raising (used when recording arguments of arbitrary tool calls).
        """
        reward = check_reward(reward)
        confidence = check_confidence(confidence)
        components: dict[str, float] = {}
        if reward_components:
            for name, value in reward_components.items():
                components[str(name)] = check_reward(value, f"reward component {name!r}")
        if duration_s is not None:
            duration_s = check_reward(duration_s, "duration_s")
        logprobs = tuple(float(x) for x in completion_logprobs)
        if logprobs and not math.isfinite(math.fsum(logprobs)):
            raise InvalidInputError(
                "completion_logprobs holds NaN or inf; pass finite log-probabilities"
            )
        sanitizer = self._sanitizer()
        text_limit = self._config.max_text_chars
        record: dict[str, JSONValue] = {
            "index": 0,
            "action": sanitizer.cut(str(action), text_limit),
        }
        if tool is not None:
            record["tool"] = str(tool)
        if state:
            record["state"] = sanitizer.value(state, "state", 0, lenient)
        if decision is not None:
            record["decision"] = sanitizer.cut(str(decision), text_limit)
        if result is not None:
            record["result"] = sanitizer.value(result, "result", 0, lenient)
        record["reward"] = reward
        if components:
            record["reward_components"] = components
        if confidence is not None:
            record["confidence"] = confidence
        if success is not None:
            record["success"] = bool(success)
        if error is not None:
            record["error"] = sanitizer.cut(str(error), text_limit)
        if duration_s is not None:
            record["duration_s"] = duration_s
        record["started_at"] = started_at if started_at is not None else self._clock()
        if prompt_token_ids:
            record["prompt_token_ids"] = [int(t) for t in prompt_token_ids]
        if completion_token_ids:
            record["completion_token_ids"] = [int(t) for t in completion_token_ids]
        if logprobs:
            record["completion_logprobs"] = list(logprobs)
        if metadata:
            record["metadata"] = sanitizer.value(metadata, "metadata", 0, lenient)
        with self._lock:
            episode = self._lookup(episode_id)
            index = len(episode.steps) + len(episode.observations)
            self._counts["truncated_values"] += sanitizer.truncated
            if index >= self._config.max_items_per_episode:
                episode.num_refused += 1
                self._counts["refused"] += 1
                return None
            record["index"] = index
            episode.steps.append(record)
            self._counts["steps"] += 1
        return index

    def observe(
        self,
        episode_id: str,
        content: Any,
        *,
        source: str = "world",
        confidence: float | None = None,
        observed_at: float | None = None,
    ) -> int | None:
        """Record what the world reported; returns its index, or None if full."""
        confidence = check_confidence(confidence)
        sanitizer = self._sanitizer()
        value = sanitizer.value(content, "content")
        with self._lock:
            episode = self._lookup(episode_id)
            index = len(episode.steps) + len(episode.observations)
            self._counts["truncated_values"] += sanitizer.truncated
            if index >= self._config.max_items_per_episode:
                episode.num_refused += 1
                self._counts["refused"] += 1
                return None
            record: dict[str, JSONValue] = {
                "index": index,
                "source": str(source),
                "content": value,
                "observed_at": observed_at if observed_at is not None else self._clock(),
            }
            if confidence is not None:
                record["confidence"] = confidence
            episode.observations.append(record)
            self._counts["observations"] += 1
        return index

    def complete(
        self,
        episode_id: str,
        *,
        status: OutcomeStatus | str = OutcomeStatus.SUCCESS,
        outcome: Mapping[str, Any] | None = None,
        reward: float | None = None,
        reason: str | None = None,
    ) -> Episode:
        """End an episode and queue it for the store; returns the final episode.

        ``reward`` is the episode's terminal reward. The returned episode is what
        will be stored (secrets redacted); it is durable once ``flush`` returns.
        """
        try:
            status = OutcomeStatus(status)
        except ValueError:
            raise InvalidInputError(
                f"unknown status {status!r}; one of {[s.value for s in OutcomeStatus]}"
            ) from None
        if status is OutcomeStatus.IN_PROGRESS:
            raise InvalidInputError("complete() needs a final status, not 'in_progress'")
        terminal = check_reward(reward, "terminal reward") if reward is not None else 0.0
        sanitizer = self._sanitizer()
        outcome_value = sanitizer.value(dict(outcome), "outcome") if outcome is not None else None
        with self._lock:
            episode = self._lookup(episode_id)
            del self._open[episode.id]
        return self._finish(
            episode,
            status,
            reason=sanitizer.cut(reason, self._config.max_text_chars) if reason else None,
            outcome=cast("dict[str, JSONValue] | None", outcome_value),
            terminal=terminal,
            counter="completed",
        )

    def _finish(
        self,
        episode: _OpenEpisode,
        status: OutcomeStatus,
        *,
        reason: str | None = None,
        outcome: dict[str, JSONValue] | None = None,
        terminal: float = 0.0,
        counter: str,
    ) -> Episode:
        data = episode.body(
            status=status.value,
            status_reason=reason,
            outcome=outcome,
            terminal_reward=terminal,
            ended_at=self._clock(),
        )
        body = orjson.dumps(data).decode()
        redactions = 0
        if self._config.redact_secrets:
            body, redactions = self._redactor.redact(body)
        final = Episode.from_dict(orjson.loads(body) if redactions else data)
        row = episode_row(final, body)
        with self._lock:
            while len(self._queue) >= self._config.max_pending_episodes and not self._closed:
                self._wake.wait(0.1)  # backpressure: the writer is behind
            self._queue.append(row)
            self._pending[final.id] = row
            self._enqueued += 1
            self._finished[final.id] = status.value
            if len(self._finished) > 10_000:
                self._finished.popitem(last=False)
            self._counts[counter] += 1
            self._counts["redactions"] += redactions
            self._wake.notify_all()
        return final

    # --- lookups ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this recorder is closed; create a new Recorder")

    def _lookup(self, episode_id: str) -> _OpenEpisode:
        """The open episode (call with the lock held)."""
        episode = self._open.get(EpisodeId(episode_id))
        if episode is not None:
            return episode
        self._check_open()
        finished = self._finished.get(EpisodeId(episode_id))
        if finished is not None:
            raise ClosedError(
                f"episode {episode_id!r} was already completed ({finished}); begin a new episode"
            )
        raise NotFoundError(f"no open episode with id {episode_id!r}; call begin() first")

    def is_open(self, episode_id: str) -> bool:
        with self._lock:
            return EpisodeId(episode_id) in self._open

    def get(self, episode_id: str) -> Episode:
        """The episode as it stands: open (a snapshot), waiting for the writer, or stored."""
        with self._lock:
            episode = self._open.get(EpisodeId(episode_id))
            if episode is not None:
                return episode.snapshot()
            row = self._pending.get(EpisodeId(episode_id))
        if row is not None:
            return Episode.from_dict(orjson.loads(row[-1]))
        return cast(Episode, self._store.get_episode(episode_id))

    def open_episode_ids(self) -> list[EpisodeId]:
        with self._lock:
            return list(self._open)

    def stats(self) -> RecorderStats:
        with self._lock:
            return RecorderStats(
                open_episodes=len(self._open),
                pending_writes=self._enqueued - self._committed,
                **self._counts,
            )

    def cleanup_expired(self, now: float | None = None) -> list[EpisodeId]:
        """Complete every episode open longer than ``ttl_s`` as ``timeout``."""
        now = self._clock() if now is None else now
        deadline = now - self._config.ttl_s
        with self._lock:
            self._last_cleanup = now
            expired = [e for e in self._open.values() if e.started_at < deadline]
            for episode in expired:
                del self._open[episode.id]
        for episode in expired:
            self._finish(
                episode,
                OutcomeStatus.TIMEOUT,
                reason=f"open longer than ttl_s={self._config.ttl_s:g} s",
                counter="timed_out",
            )
        return [e.id for e in expired]

    # --- context manager and decorator ----------------------------------------------

    def episode(self, task: str, **fields: Any) -> EpisodeHandle:
        """Begin an episode and return a handle usable as ``with``/``async with``."""
        parent = current_episode()
        if parent is not None and "parent_id" not in fields:
            fields["parent_id"] = parent.id
            fields.setdefault("kind", "subtask")
        return EpisodeHandle(self, self.begin(task, **fields))

    @overload
    def tool(self, func: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def tool(
        self, func: None = None, /, *, name: str | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def tool(
        self, func: Callable[P, R] | None = None, /, *, name: str | None = None
    ) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a tool (sync or async) so that each call inside an open
        ``recorder.episode`` is recorded as a step with duration, success and output.
        Outside an episode the tool runs unrecorded. The tool's own exceptions are
        recorded, then re-raised; recording problems never break the call.
        """

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            tool_name = name or getattr(fn, "__name__", "tool")

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
                    self.step(
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

        return decorate(func) if func is not None else decorate

    # --- writing ----------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if not self._queue and self._closed:
                    return
                batch = self._queue[: self._config.batch_size]
            try:
                if self._writes_rows:
                    self._store.add_episode_rows(batch)
                else:
                    self._store.add_episodes(
                        [Episode.from_dict(orjson.loads(r[-1])) for r in batch]
                    )
                dropped = 0
            except InvalidInputError:  # a row the store can never take: isolate it
                try:
                    dropped = self._write_row_by_row(batch)
                except Exception as exc:  # transient; rows are upserts, so retry them all
                    self._note_write_error(exc, len(batch))
                    if self._give_up:
                        return
                    continue
            except Exception as exc:  # keep the rows and retry: nothing acknowledged is lost
                logger.error("writing %d episodes failed, retrying: %s", len(batch), exc)
                with self._lock:
                    self._writer_error = exc
                    self._counts["write_errors"] += 1
                    if self._give_up:
                        return
                    self._wake.wait(0.2)
                continue
            with self._lock:
                del self._queue[: len(batch)]
                for row in batch:
                    self._pending.pop(row[0], None)
                self._committed += len(batch)
                self._counts["written"] += len(batch) - dropped
                self._counts["dropped"] += dropped
                self._writer_error = None
                self._wake.notify_all()

    def _write_row_by_row(self, batch: list[tuple[Any, ...]]) -> int:
        """Write rows one at a time, dropping (and logging) those the store refuses
        as invalid, which retrying would never fix; returns how many were dropped."""
        dropped = 0
        for row in batch:
            try:
                if self._writes_rows:
                    self._store.add_episode_rows([row])
                else:
                    self._store.add_episodes([Episode.from_dict(orjson.loads(row[-1]))])
            except InvalidInputError as exc:
                dropped += 1
                logger.error("dropping episode %s: the store refuses it: %s", row[0], exc)
        return dropped

    def _note_write_error(self, exc: BaseException, num_rows: int) -> None:
        logger.error("writing %d episodes failed, retrying: %s", num_rows, exc)
        with self._lock:
            self._writer_error = exc
            self._counts["write_errors"] += 1
            if not self._give_up:
                self._wake.wait(0.2)

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every episode completed so far is committed to the store."""
        timeout = self._config.flush_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._enqueued
            self._wake.notify_all()
            while self._committed < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._writer.is_alive():
                    raise StoreError(
                        f"flush timed out after {timeout:g} s with {target - self._committed} "
                        f"episodes unwritten (last error: {self._writer_error!r}); check the store"
                    )
                self._wake.wait(min(remaining, 0.5))

    def close(self, timeout_s: float | None = None) -> None:
        """Flush and stop the writer; open episodes stay unrecorded and are logged.

        Idempotent. Episodes still open are *not* completed: call ``complete`` (or
        ``abort_open``) first if they should be kept.
        """
        if self._closed:
            return
        try:
            self.flush(timeout_s)
        finally:
            with self._lock:
                self._closed = True
                self._give_up = True
                self._wake.notify_all()
                still_open = len(self._open)
            self._writer.join(timeout=5.0)
            if still_open:
                logger.warning(
                    "recorder closed with %d episodes still open (not stored)", still_open
                )

    def abort_open(self, reason: str = "recorder closing") -> list[EpisodeId]:
        """Complete every open episode as ``aborted`` (e.g. before ``close`` on shutdown)."""
        with self._lock:
            episodes = list(self._open.values())
            self._open.clear()
        for episode in episodes:
            self._finish(episode, OutcomeStatus.ABORTED, reason=reason, counter="completed")
        return [e.id for e in episodes]

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
