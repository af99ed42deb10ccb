"""Recording from many threads with per-episode locks, and the writer's batched rows."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from learnloop.episode import Episode, OutcomeStatus
from learnloop.errors import ClosedError, StoreError
from learnloop.recorder import Recorder, RecorderConfig
from learnloop.store import SqliteStore
from learnloop.store.sqlite import episode_row


def _run_in_threads(work: Callable[[int], None], count: int) -> None:
    """Run ``work(0) ... work(count - 1)`` on their own threads and wait for all."""
    threads = [threading.Thread(target=work, args=(w,)) for w in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_steps_racing_complete_are_either_kept_or_refused(tmp_path: Path) -> None:
    """A step that returned an index is in the completed episode; one that came too
    late raised ClosedError; none is lost in between."""
    store = SqliteStore(tmp_path / "race.db")
    rec = Recorder(store, RecorderConfig(max_items_per_episode=1_000_000))
    for _ in range(5):
        eid = rec.begin("shared")
        returned: list[int] = []
        started = threading.Barrier(5)

        def work(worker: int) -> None:
            started.wait()  # noqa: B023
            while True:
                try:
                    index = rec.step(eid, f"w{worker}")  # noqa: B023
                except ClosedError:
                    return
                assert index is not None
                returned.append(index)  # noqa: B023

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        started.wait()
        while len(returned) < 50:
            time.sleep(0.0005)
        final = rec.complete(eid)
        for thread in threads:
            thread.join()
        assert sorted(returned) == [s.index for s in final.steps] == list(range(len(returned)))
    rec.flush()
    assert rec.stats().steps == sum(len(e.steps) for e in store.iter_episodes())
    rec.close()
    store.close()


def test_stats_count_open_and_completed_episodes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "stats.db")
    with Recorder(store, RecorderConfig(max_items_per_episode=3)) as rec:
        done = rec.begin("done")
        rec.step(done, "a")
        rec.complete(done)
        still_open = rec.begin("open")
        for _ in range(4):
            rec.step(still_open, "a")
        rec.observe(still_open, "o")
        stats = rec.stats()
        assert (stats.steps, stats.observations, stats.refused) == (4, 0, 2)
        assert (stats.begun, stats.completed, stats.open_episodes) == (2, 1, 1)
        rec.complete(still_open)
        assert rec.stats().steps == 4 and rec.stats().open_episodes == 0
    store.close()


def test_threads_on_separate_episodes_never_mix(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "mix.db")
    rec = Recorder(store, RecorderConfig(max_open_episodes=10_000, batch_size=7))
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(100):
                eid = rec.begin(f"w{worker}-e{n}")
                for k in range(5):
                    rec.step(eid, f"w{worker}-e{n}-s{k}", state={"k": k})
                    rec.observe(eid, {"k": k})
                rec.complete(eid)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _run_in_threads(work, 8)
    rec.close()
    assert not errors
    assert store.count_episodes() == 800
    for episode in store.iter_episodes():
        assert [s.action for s in episode.steps] == [f"{episode.task}-s{k}" for k in range(5)]
        assert [s.index for s in episode.steps] == [0, 2, 4, 6, 8]
        assert [o.index for o in episode.observations] == [1, 3, 5, 7, 9]
    store.close()


def test_many_rows_and_repeated_ids_in_one_write(tmp_path: Path) -> None:
    """More rows than one INSERT takes go in one transaction; a repeated id keeps the
    last row, as writing them one by one would."""
    store = SqliteStore(tmp_path / "rows.db")
    # as in SQLite builds before 3.32: 999 parameters, so 90 rows, per statement
    store._conn().setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    episodes = [Episode.new(f"t{i}", status="success") for i in range(1300)]
    rows = [episode_row(e) for e in episodes]
    replaced = episodes[5].replace(task="replaced", status=OutcomeStatus.FAILURE)
    store.add_episode_rows([*rows, episode_row(replaced)])
    assert store.count_episodes() == 1300
    assert store.get_episode(episodes[5].id) == replaced
    small = [episode_row(Episode.new("a")), episode_row(Episode.new("b"))]
    store.add_episode_rows([small[0], small[1], small[0]])
    assert store.count_episodes() == 1302
    store.add_episode_rows([])
    store.close()


def test_a_step_that_found_the_episode_just_before_complete_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race's losing side, set up deterministically: the step looked the open
    episode up, then complete() took it before the step got the episode's lock."""
    store = SqliteStore(tmp_path / "late.db")
    with Recorder(store) as rec:
        eid = rec.begin("t")
        rec.step(eid, "kept")
        found_before = rec._open[eid]  # what the late step's lookup returned
        final = rec.complete(eid)
        # the lookup of the late step, made before complete() took the episode
        monkeypatch.setattr(rec, "_open", {eid: found_before})
        with pytest.raises(ClosedError, match="already completed"):
            rec.step(eid, "late")
        with pytest.raises(ClosedError, match="already completed"):
            rec.observe(eid, "late")
    assert [s.action for s in final.steps] == ["kept"] and not final.observations
    store.close()


class _SlowStore:
    """Keeps rows in memory, slowly; fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.rows: list[tuple[object, ...]] = []
        self.failing = False
        self.largest_batch = 0

    def add_episode_rows(self, rows: list[tuple[object, ...]]) -> None:
        if self.failing:
            raise OSError("disk gone")
        time.sleep(0.002)
        self.largest_batch = max(self.largest_batch, len(rows))
        self.rows.extend(rows)


def test_backpressure_bounds_the_queue_and_loses_nothing() -> None:
    store = _SlowStore()
    rec = Recorder(store, RecorderConfig(max_pending_episodes=5, batch_size=3))
    seen_pending = []
    for i in range(60):
        rec.complete(rec.begin(f"t{i}"))
        seen_pending.append(rec.stats().pending_writes)
    rec.flush(timeout_s=10)
    assert max(seen_pending) <= 6 and store.largest_batch <= 3
    assert sorted(row[5] for row in store.rows) == sorted(f"t{i}" for i in range(60))
    assert rec.stats().written == 60 and rec.stats().pending_writes == 0
    rec.close()


def test_flush_raises_when_the_store_keeps_failing_then_recovers() -> None:
    store = _SlowStore()
    rec = Recorder(store)
    store.failing = True
    rec.complete(rec.begin("waits"))
    with pytest.raises(StoreError, match="1 episodes unwritten"):
        rec.flush(timeout_s=0.5)
    store.failing = False
    rec.flush(timeout_s=10)
    assert [row[5] for row in store.rows] == ["waits"] and rec.stats().write_errors >= 1
    rec.close()


def test_rows_are_split_by_body_size_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import learnloop.store.sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "_MAX_BODY_CHARS_PER_INSERT", 2_000)
    statements: list[int] = []
    store = SqliteStore(tmp_path / "split.db")
    write = store._write
    monkeypatch.setattr(store, "_write", lambda s: (statements.append(len(s)), write(s)))
    episodes = [Episode.new("x" * 900) for _ in range(7)]  # ~1.2 KB bodies
    store.add_episode_rows([episode_row(e) for e in episodes])
    assert statements == [4]  # pairs of rows reach 2,000 characters: 4 statements
    assert {e.id for e in store.iter_episodes()} == {e.id for e in episodes}
    store.close()


def test_evictions_racing_completions_store_every_episode_once(tmp_path: Path) -> None:
    """Many threads, few open slots: every episode ends once, as completed by its
    thread or as evicted by another's begin, never both and never lost."""
    store = SqliteStore(tmp_path / "evict.db")
    rec = Recorder(store, RecorderConfig(max_open_episodes=3))
    refused: list[str] = []
    errors: list[BaseException] = []

    all_begun = threading.Barrier(6)

    def work(worker: int) -> None:
        try:
            for n in range(60):
                eid = rec.begin(f"w{worker}-e{n}")
                all_begun.wait()  # 6 open, 3 slots: at least 3 evicted per round
                try:
                    rec.step(eid, "a")
                    rec.complete(eid)
                except ClosedError:  # evicted by another thread's begin
                    refused.append(eid)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _run_in_threads(work, 6)
    rec.close()
    assert not errors
    stats = rec.stats()
    assert stats.begun == 360 == stats.completed + stats.evicted and stats.open_episodes == 0
    assert stats.evicted >= 3 * 60 and len(refused) == stats.evicted
    stored = list(store.iter_episodes())
    assert len(stored) == len({e.id for e in stored}) == 360
    evicted = {e.id for e in stored if e.status is OutcomeStatus.EVICTED}
    assert len(evicted) == stats.evicted and set(refused) <= evicted
    store.close()


def test_complete_of_an_episode_evicted_meanwhile_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic losing side of complete() racing an eviction: complete() found
    the episode open, then another thread's begin evicted it."""
    store = SqliteStore(tmp_path / "evicted.db")
    with Recorder(store, RecorderConfig(max_open_episodes=1)) as rec:
        eid = rec.begin("first")
        found_before = rec._open[eid]
        rec.begin("second")  # evicts "first"
        with monkeypatch.context() as patch:
            patch.setattr(rec, "_open", {eid: found_before})
            with pytest.raises(ClosedError, match=r"already completed \(evicted\)"):
                rec.complete(eid)
        stats = rec.stats()
        assert (stats.evicted, stats.completed) == (1, 0)
    assert store.get_episode(eid).status is OutcomeStatus.EVICTED
    store.close()
