"""How agents write episodes: ``begin`` → ``step``/``observe`` → ``complete``.

The recorder keeps open episodes in memory, bounded so that a storm of events
cannot exhaust it, and hands completed ones to a background writer that stores
them in batches. Every value is checked, bounded and stripped of secrets on the
way in (see :mod:`learnloop.redaction`), so nothing secret is held or stored.

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

Threads: each open episode has its own lock, and no lock shared by all threads
is taken to begin, step or complete, so threads recording different episodes
never wait for each other. Completed episodes go to the store through an
:class:`~learnloop.writer.EpisodeWriter`.

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

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
from learnloop.errors import (
    ClosedError,
    ConfigError,
    InvalidInputError,
    LearnloopError,
    NotFoundError,
)
from learnloop.handle import EpisodeHandle, current_episode, record_tool_calls
from learnloop.open_episode import OpenEpisode, episode_from_body
from learnloop.redaction import Redactor
from learnloop.store.sqlite import episode_row
from learnloop.writer import EpisodeWriter

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
    batch_size: int = 2048
    """Episodes written per transaction at most; large ones let a lagging writer catch up."""
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


def _completed_error(episode: OpenEpisode) -> ClosedError:
    return ClosedError(
        f"episode {episode.id!r} was already completed ({episode.final_status}); "
        "begin a new episode"
    )


class _Tally:
    """The recorder's counters, kept per thread: counting takes no shared lock, so
    recording threads never wait on each other for it. :meth:`totals` adds them up
    (exact whenever no thread is counting)."""

    NAMES = (
        "begun",
        "completed",
        "evicted",
        "timed_out",
        "steps",
        "observations",
        "refused",
        "truncated_values",
        "redactions",
    )

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._per_thread: list[tuple[threading.Thread, dict[str, int]]] = []
        self._of_ended_threads = dict.fromkeys(self.NAMES, 0)

    def mine(self) -> dict[str, int]:
        """The calling thread's counters."""
        counts: dict[str, int] | None = getattr(self._local, "counts", None)
        if counts is None:
            counts = self._local.counts = dict.fromkeys(self.NAMES, 0)
            with self._lock:
                self._fold_ended_threads()
                self._per_thread.append((threading.current_thread(), counts))
        return counts

    def _fold_ended_threads(self) -> None:
        """Keep one sum for threads that ended (call with the lock held): a recorder
        used by a thread per request would otherwise keep a dict per request."""
        alive = []
        for thread, counts in self._per_thread:
            if thread.is_alive():
                alive.append((thread, counts))
            else:
                for name, value in counts.items():
                    self._of_ended_threads[name] += value
        self._per_thread = alive

    def totals(self) -> dict[str, int]:
        with self._lock:
            self._fold_ended_threads()
            totals = dict(self._of_ended_threads)
            for _, counts in self._per_thread:
                for name, value in counts.items():
                    totals[name] += value
        return totals


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
        # Open and recently finished episodes are read and changed without a lock:
        # each get/setdefault/pop/popitem is one atomic step under the GIL, and an
        # episode's own lock settles who finishes it (see _claim). A lock shared by
        # all threads formed convoys, each hand-off waiting for the GIL (measured,
        # 4 threads: 12-15k context switches per 40k steps, 51-57k steps/s against
        # 93-98k on 1 thread); it remains for evictions and timeouts only.
        self._lock = threading.Lock()
        self._open: OrderedDict[EpisodeId, OpenEpisode] = OrderedDict()
        self._finished: OrderedDict[EpisodeId, str] = OrderedDict()  # id -> status, recent
        self._closed = False
        self._last_cleanup = clock()
        self._tally = _Tally()
        self._writer = EpisodeWriter(
            store,
            batch_size=config.batch_size,
            max_pending=config.max_pending_episodes,
            flush_timeout_s=config.flush_timeout_s,
        )

    @property
    def config(self) -> RecorderConfig:
        return self._config

    def _sanitizer(self) -> Sanitizer:
        config = self._config
        return Sanitizer(
            max_chars=config.max_string_chars,
            max_items=config.max_collection_items,
            max_depth=config.max_depth,
            plain_keys=self._redactor.plain_keys,
            redact=self._redactor.redact_string if config.redact_secrets else None,
        )

    def _redact(
        self, value: dict[str, JSONValue], sanitizer: Sanitizer
    ) -> tuple[dict[str, JSONValue], int]:
        """``value`` (whose strings and keys ``sanitizer`` collected) with secrets
        redacted, and the number of replacements. Most values hold no secret: one
        test over their joined strings (and the cached verdicts on their keys)
        shows it, and only then are they walked string by string."""
        if not self._config.redact_secrets:
            return value, 0
        redactor = self._redactor
        if not redactor.needs_redaction(sanitizer.keys, sanitizer.texts):
            return value, sanitizer.redactions
        redacted, count = redactor.redact_value(value)
        return cast("dict[str, JSONValue]", redacted), count + sanitizer.redactions

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
        text_limit = self._config.max_text_chars
        now = self._clock()
        version_pairs = {str(k): str(v) for k, v in (versions or {}).items()}
        sanitizer.keys.extend(version_pairs)
        sanitizer.texts.extend(version_pairs.values())
        fields, redactions = self._redact(
            {
                "id": sanitizer.text(str(episode_id)) if episode_id else new_episode_id(),
                "task": sanitizer.text(task, text_limit),
                "agent_id": sanitizer.text(str(agent_id)),
                "kind": sanitizer.text(str(kind)),
                "parent_id": sanitizer.text(str(parent_id)) if parent_id else None,
                "expected_outcome": sanitizer.value(dict(expected_outcome), "expected_outcome")
                if expected_outcome is not None
                else None,
                "acceptance_criteria": [
                    sanitizer.text(str(c), text_limit) for c in acceptance_criteria
                ],
                "metadata": sanitizer.value(dict(metadata or {}), "metadata"),
                "versions": version_pairs,
            },
            sanitizer,
        )
        episode = OpenEpisode(started_at=now, **fields)
        self._check_open()
        if (
            self._writer.pending_row(episode.id) is not None
            or self._open.setdefault(episode.id, episode) is not episode
        ):
            raise InvalidInputError(f"episode id {episode.id!r} is already in use; omit episode_id")
        counts = self._tally.mine()
        counts["begun"] += 1
        counts["truncated_values"] += sanitizer.truncated
        counts["redactions"] += redactions
        if len(self._open) > self._config.max_open_episodes:
            self._evict_oldest()
        if now - self._last_cleanup > min(60.0, self._config.ttl_s / 10):
            self.cleanup_expired()
        return episode.id

    def _evict_oldest(self) -> None:
        """Complete the oldest open episodes as ``evicted`` until ``max_open_episodes``
        are open."""
        limit = self._config.max_open_episodes
        evicted: list[OpenEpisode] = []
        with self._lock:  # one evicting thread at a time: none evicts more than needed
            while len(self._open) > limit:
                try:
                    oldest = self._open.popitem(last=False)[1]
                except KeyError:  # emptied meanwhile
                    break
                if self._claim(oldest, OutcomeStatus.EVICTED):  # else being completed
                    evicted.append(oldest)
        for old in evicted:
            logger.warning("evicting episode %s: more than %d open", old.id, limit)
            self._tally.mine()["evicted"] += 1
            self._finish(
                old, OutcomeStatus.EVICTED, reason=f"evicted: more than {limit} episodes open"
            )

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
        # `x - x == 0.0` holds for finite floats only: the common case skips a call.
        if type(reward) is not float or reward - reward != 0.0:
            reward = check_reward(reward)
        if confidence is not None:
            confidence = check_confidence(confidence)
        components: dict[str, float] = {}
        if reward_components:
            for name, value in reward_components.items():
                components[str(name)] = check_reward(value, f"reward component {name!r}")
        if duration_s is not None and (type(duration_s) is not float or duration_s - duration_s):
            duration_s = check_reward(duration_s, "duration_s")
        logprobs = tuple(float(x) for x in completion_logprobs) if completion_logprobs else ()
        if logprobs and not math.isfinite(math.fsum(logprobs)):
            raise InvalidInputError(
                "completion_logprobs holds NaN or inf; pass finite log-probabilities"
            )
        sanitizer = self._sanitizer()
        text_limit = self._config.max_text_chars
        record: dict[str, JSONValue] = {
            "index": 0,
            "action": sanitizer.text(str(action), text_limit),
        }
        if tool is not None:
            record["tool"] = sanitizer.text(str(tool))
        if state:
            record["state"] = sanitizer.value(state, "state", 0, lenient)
        if decision is not None:
            record["decision"] = sanitizer.text(str(decision), text_limit)
        if result is not None:
            record["result"] = sanitizer.value(result, "result", 0, lenient)
        record["reward"] = reward
        if components:
            record["reward_components"] = components
            sanitizer.keys.extend(components)
        if confidence is not None:
            record["confidence"] = confidence
        if success is not None:
            record["success"] = bool(success)
        if error is not None:
            record["error"] = sanitizer.text(str(error), text_limit)
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
        record, redactions = self._redact(record, sanitizer)
        return self._add(episode_id, record, "steps", sanitizer.truncated, redactions)

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
        record: dict[str, JSONValue] = {
            "index": 0,
            "source": sanitizer.text(str(source)),
            "content": sanitizer.value(content, "content"),
            "observed_at": observed_at if observed_at is not None else self._clock(),
        }
        if confidence is not None:
            record["confidence"] = confidence
        record, redactions = self._redact(record, sanitizer)
        return self._add(episode_id, record, "observations", sanitizer.truncated, redactions)

    def _add(
        self,
        episode_id: str,
        record: dict[str, JSONValue],
        kind: str,
        truncated: int,
        redactions: int,
    ) -> int | None:
        """Append a step or observation ``record`` to the open episode; its index, or
        None if the episode is full."""
        episode = self._open.get(episode_id)  # type: ignore[call-overload]
        if episode is None:
            raise self._not_open(episode_id)
        counts = self._tally.mine()
        if truncated or redactions:
            counts["truncated_values"] += truncated
            counts["redactions"] += redactions
        with episode.lock:  # settles a race with complete(): see _claim
            if episode.final_status is not None:
                raise _completed_error(episode)
            index = len(episode.steps) + len(episode.observations)
            if index >= self._config.max_items_per_episode:
                episode.num_refused += 1
                counts["refused"] += 1
                return None
            record["index"] = index
            (episode.steps if kind == "steps" else episode.observations).append(record)
        counts[kind] += 1
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
        final_fields, redactions = self._redact(
            {
                "outcome": sanitizer.value(dict(outcome), "outcome")
                if outcome is not None
                else None,
                "reason": sanitizer.text(reason, self._config.max_text_chars) if reason else None,
            },
            sanitizer,
        )
        episode = self._open.get(EpisodeId(episode_id))
        if episode is None:
            raise self._not_open(episode_id)
        if not self._claim(episode, status):
            raise _completed_error(episode)
        counts = self._tally.mine()
        counts["completed"] += 1
        counts["truncated_values"] += sanitizer.truncated
        counts["redactions"] += redactions
        return self._finish(
            episode,
            status,
            reason=final_fields["reason"],
            outcome=final_fields["outcome"],
            terminal=terminal,
        )

    def _claim(self, episode: OpenEpisode, status: OutcomeStatus) -> bool:
        """Mark ``episode`` finished as ``status`` and take it out of the open ones,
        unless another thread finished it first (then False). From here on its
        steps and observations raise ClosedError: a step holds the episode's lock
        while it checks ``final_status`` and appends, so it lands before or not at all.
        """
        with episode.lock:
            if episode.final_status is not None:
                return False
            episode.final_status = status.value
        # Finished before it leaves the open ones: a lookup never finds it in neither.
        self._finished[episode.id] = status.value
        if len(self._finished) > 10_000:
            try:
                self._finished.popitem(last=False)
            except KeyError:  # trimmed by another thread meanwhile
                pass
        self._open.pop(episode.id, None)
        return True

    def _finish(
        self,
        episode: OpenEpisode,
        status: OutcomeStatus,
        *,
        reason: str | None = None,
        outcome: dict[str, JSONValue] | None = None,
        terminal: float = 0.0,
    ) -> Episode:
        """Queue an episode that :meth:`_claim` took for the store."""
        data = episode.body(
            status=status.value,
            status_reason=reason,
            outcome=outcome,
            terminal_reward=terminal,
            ended_at=self._clock(),
        )
        final = episode_from_body(data)
        self._writer.put(episode_row(final, orjson.dumps(data).decode()))
        return final

    # --- lookups ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this recorder is closed; create a new Recorder")

    def _not_open(self, episode_id: str) -> LearnloopError:
        """The error for a step, observation or completion of an episode not open."""
        if self._closed:
            return ClosedError("this recorder is closed; create a new Recorder")
        finished = self._finished.get(EpisodeId(episode_id))
        if finished is not None:
            return ClosedError(
                f"episode {episode_id!r} was already completed ({finished}); begin a new episode"
            )
        return NotFoundError(f"no open episode with id {episode_id!r}; call begin() first")

    def is_open(self, episode_id: str) -> bool:
        return episode_id in self._open

    def get(self, episode_id: str) -> Episode:
        """The episode as it stands: open (a snapshot), waiting for the writer, or stored."""
        episode = self._open.get(EpisodeId(episode_id))
        if episode is not None:
            return episode.snapshot()
        row = self._writer.pending_row(episode_id)
        if row is not None:
            return Episode.from_dict(orjson.loads(row[-1]))
        return cast(Episode, self._store.get_episode(episode_id))

    def open_episode_ids(self) -> list[EpisodeId]:
        return list(self._open)

    def stats(self) -> RecorderStats:
        writer = self._writer
        return RecorderStats(
            open_episodes=len(self._open),
            pending_writes=writer.pending,
            written=writer.written,
            dropped=writer.dropped,
            write_errors=writer.write_errors,
            **self._tally.totals(),
        )

    def cleanup_expired(self, now: float | None = None) -> list[EpisodeId]:
        """Complete every episode open longer than ``ttl_s`` as ``timeout``."""
        now = self._clock() if now is None else now
        deadline = now - self._config.ttl_s
        with self._lock:
            self._last_cleanup = now
            candidates = [e for e in list(self._open.values()) if e.started_at < deadline]
            expired = [e for e in candidates if self._claim(e, OutcomeStatus.TIMEOUT)]
        for episode in expired:
            self._tally.mine()["timed_out"] += 1
            self._finish(
                episode,
                OutcomeStatus.TIMEOUT,
                reason=f"open longer than ttl_s={self._config.ttl_s:g} s",
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
            return record_tool_calls(self, fn, name or str(getattr(fn, "__name__", "tool")))

        return decorate(func) if func is not None else decorate

    # --- writing ----------------------------------------------------------------------

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every episode completed so far is committed to the store."""
        self._writer.flush(timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        """Flush and stop the writer; open episodes stay unrecorded and are logged.

        Idempotent. Episodes still open are *not* completed: call ``complete`` (or
        ``abort_open``) first if they should be kept.
        """
        if self._closed:
            return
        try:
            self._writer.close(timeout_s)
        finally:
            self._closed = True
            still_open = len(self._open)
            if still_open:
                logger.warning(
                    "recorder closed with %d episodes still open (not stored)", still_open
                )

    def abort_open(self, reason: str = "recorder closing") -> list[EpisodeId]:
        """Complete every open episode as ``aborted`` (e.g. before ``close`` on shutdown)."""
        episodes = [e for e in list(self._open.values()) if self._claim(e, OutcomeStatus.ABORTED)]
        for episode in episodes:
            self._tally.mine()["completed"] += 1
            self._finish(episode, OutcomeStatus.ABORTED, reason=reason)
        return [e.id for e in episodes]

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
