from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from learnloop.episode import OutcomeStatus
from learnloop.errors import ClosedError, ConfigError, InvalidInputError, NotFoundError
from learnloop.recorder import Recorder, RecorderConfig, current_episode
from learnloop.store import EpisodeQuery, SqliteStore


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def recorder(sqlite_store: SqliteStore):
    rec = Recorder(sqlite_store)
    yield rec
    rec.close()


def test_begin_step_observe_complete(recorder: Recorder, sqlite_store: SqliteStore) -> None:
    eid = recorder.begin("book a flight", agent_id="travel", metadata={"user": "u1"})
    assert (
        recorder.step(
            eid,
            "call search",
            tool="search",
            state={"q": "BER"},
            reward=0.5,
            confidence=0.8,
            success=True,
            duration_s=0.2,
        )
        == 0
    )
    assert recorder.observe(eid, {"price": 120}, source="world", confidence=0.9) == 1
    assert recorder.step(eid, "call book", tool="book", reward=1.0) == 2
    final = recorder.complete(eid, status="success", outcome={"booked": True}, reward=2.0)
    assert final.status is OutcomeStatus.SUCCESS and final.total_reward == pytest.approx(3.5)
    recorder.flush()
    stored = sqlite_store.get_episode(eid)
    assert stored == final
    assert [s.tool for s in stored.steps] == ["search", "book"]
    assert stored.observations[0].content == {"price": 120}
    assert stored.metadata == {"user": "u1"} and stored.agent_id == "travel"


def test_get_while_open_pending_and_stored(recorder: Recorder) -> None:
    eid = recorder.begin("t")
    recorder.step(eid, "a")
    assert recorder.get(eid).status is OutcomeStatus.IN_PROGRESS
    recorder.complete(eid)
    assert recorder.get(eid).status is OutcomeStatus.SUCCESS
    recorder.flush()
    assert recorder.get(eid).status is OutcomeStatus.SUCCESS


def test_misuse_raises_at_once(recorder: Recorder) -> None:
    with pytest.raises(NotFoundError, match="no open episode with id 'nope'"):
        recorder.step("nope", "a")
    eid = recorder.begin("t")
    with pytest.raises(InvalidInputError, match="finite"):
        recorder.step(eid, "a", reward=float("nan"))
    with pytest.raises(InvalidInputError, match="finite"):
        recorder.step(eid, "a", reward=float("inf"))
    with pytest.raises(InvalidInputError, match=r"confidence must lie in \[0, 1\], got 1.5"):
        recorder.step(eid, "a", confidence=1.5)
    with pytest.raises(InvalidInputError, match=r"state.when holds a datetime"):
        import datetime

        recorder.step(eid, "a", state={"when": datetime.datetime.now()})
    with pytest.raises(InvalidInputError, match=r"state\.ids holds a set"):
        recorder.step(eid, "a", state={"ids": {1, 2}})
    with pytest.raises(InvalidInputError, match=r"state.x is nan"):
        recorder.step(eid, "a", state={"x": float("nan")})
    with pytest.raises(InvalidInputError, match="JSON object keys must be strings"):
        recorder.step(eid, "a", state={1: "x"})
    with pytest.raises(InvalidInputError, match="unknown status"):
        recorder.complete(eid, status="finished")
    assert recorder.get(eid).steps == ()  # nothing half-recorded
    recorder.complete(eid, status="failure")
    with pytest.raises(ClosedError, match="already completed"):
        recorder.step(eid, "late")
    with pytest.raises(ClosedError):
        recorder.complete(eid)


def test_values_are_bounded(sqlite_store: SqliteStore) -> None:
    config = RecorderConfig(max_string_chars=10, max_collection_items=3, max_depth=2)
    with Recorder(sqlite_store, config) as rec:
        eid = rec.begin("t")
        huge = "x" * 10_000_000
        rec.step(
            eid, "a", state={"s": huge, "items": list(range(5)), "deep": {"a": {"b": {"c": 1}}}}
        )
        episode = rec.complete(eid)
        assert rec.stats().truncated_values == 3
    state = episode.steps[0].state
    assert state["s"] == "x" * 10 + "…[+9999990 chars]"
    assert state["items"] == [0, 1, 2, "…[+2 items]"]
    assert state["deep"] == {"a": "…[nested deeper than 2]"}  # containers at depth 2 cut


def test_numpy_scalars_are_accepted(recorder: Recorder) -> None:
    np = pytest.importorskip("numpy")
    eid = recorder.begin("t")
    recorder.step(eid, "a", state={"n": np.int64(3), "f": np.float32(0.5)}, reward=np.float64(1.0))
    step = recorder.complete(eid).steps[0]
    assert step.state == {"n": 3, "f": 0.5} and step.reward == 1.0


def test_step_cap_refuses_and_counts(sqlite_store: SqliteStore) -> None:
    with Recorder(sqlite_store, RecorderConfig(max_items_per_episode=3)) as rec:
        eid = rec.begin("t")
        assert [rec.step(eid, "a") for _ in range(2)] == [0, 1]
        assert rec.observe(eid, "o") == 2
        assert rec.step(eid, "a") is None and rec.observe(eid, "o") is None
        episode = rec.complete(eid)
        assert episode.num_refused == 2 and rec.stats().refused == 2


def test_oldest_open_episode_is_evicted(sqlite_store: SqliteStore) -> None:
    with Recorder(sqlite_store, RecorderConfig(max_open_episodes=2)) as rec:
        first = rec.begin("1")
        rec.begin("2")
        rec.begin("3")
        assert rec.stats().evicted == 1 and rec.stats().open_episodes == 2
        with pytest.raises(ClosedError, match="evicted"):
            rec.step(first, "late")
        rec.flush()
    assert sqlite_store.get_episode(first).status is OutcomeStatus.EVICTED


def test_ttl_times_out_episodes(sqlite_store: SqliteStore) -> None:
    clock = FakeClock()
    with Recorder(sqlite_store, RecorderConfig(ttl_s=60), clock=clock) as rec:
        old = rec.begin("old")
        clock.now += 50
        young = rec.begin("young")
        clock.now += 20
        assert rec.cleanup_expired() == [old]
        assert rec.is_open(young)
        clock.now += 100
        rec.begin("triggers automatic cleanup")
        assert not rec.is_open(young) and rec.stats().timed_out == 2
        rec.flush()
    stored = sqlite_store.get_episode(old)
    assert stored.status is OutcomeStatus.TIMEOUT and "ttl_s=60" in (stored.status_reason or "")


def test_context_manager_success_failure_and_nesting(
    recorder: Recorder, sqlite_store: SqliteStore
) -> None:
    with recorder.episode("outer") as outer:
        assert current_episode() is outer
        outer.step("plan")
        with recorder.episode("inner") as inner:
            inner.step("work")
        assert current_episode() is outer
    assert current_episode() is None
    with pytest.raises(ZeroDivisionError):
        with recorder.episode("breaks") as broken:
            1 / 0  # noqa: B018
    recorder.flush()
    assert sqlite_store.get_episode(outer.id).status is OutcomeStatus.SUCCESS
    child = sqlite_store.get_episode(inner.id)
    assert child.parent_id == outer.id and child.kind == "subtask"
    failed = sqlite_store.get_episode(broken.id)
    assert failed.status is OutcomeStatus.FAILURE
    assert failed.status_reason == "ZeroDivisionError: division by zero"
    assert failed.outcome == {"error": "ZeroDivisionError: division by zero"}


def test_explicit_complete_inside_block_wins(recorder: Recorder) -> None:
    with recorder.episode("t") as ep:
        ep.complete(status="aborted", reason="user said stop")
    assert ep.result is not None and ep.result.status is OutcomeStatus.ABORTED


def test_tool_decorator_sync_and_async(recorder: Recorder) -> None:
    @recorder.tool
    def add(a: int, b: int) -> int:
        return a + b

    @recorder.tool(name="fetch")
    async def fetch_page(url: str) -> dict[str, object]:
        await asyncio.sleep(0)
        return {"url": url, "status": 200}

    @recorder.tool
    def explode() -> None:
        raise ValueError("boom")

    assert add(1, 2) == 3  # outside an episode: runs, unrecorded
    with recorder.episode("use tools") as ep:
        assert add(2, b=3) == 5
        assert asyncio.run(fetch_page("http://x")) == {"url": "http://x", "status": 200}
        with pytest.raises(ValueError, match="boom"):
            explode()
    steps = recorder.get(ep.id).steps
    assert [s.tool for s in steps] == ["add", "fetch", "explode"]
    assert steps[0].state == {"args": [2], "kwargs": {"b": 3}} and steps[0].result == 5
    assert steps[1].success is True and steps[1].duration_s is not None
    assert steps[2].success is False and steps[2].error == "ValueError: boom"


def test_tool_decorator_keeps_unjsonable_arguments_as_repr(recorder: Recorder) -> None:
    @recorder.tool
    def takes_object(thing: object) -> object:
        return thing

    with recorder.episode("t") as ep:
        takes_object({1, 2})
    assert recorder.get(ep.id).steps[0].state["args"] == ["{1, 2}"]


def test_secrets_are_redacted_before_storage(recorder: Recorder, sqlite_store: SqliteStore) -> None:
    eid = recorder.begin("call the API with key sk-abcdefghijklmnopqrstuvwx")
    recorder.step(
        eid,
        "http",
        state={
            "headers": {
                "Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"
            },
            "url": "https://admin:hunter2@db.example.com/x",
            "api_key": "plain-value-123",
            "cmd": "export AWS_ACCESS_KEY_ID=AKIAABCDEFGHIJKLMNOP password=swordfish",
            "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
        },
    )
    final = recorder.complete(eid)
    recorder.flush()
    stored = sqlite_store.get_episode(eid)
    assert stored == final
    text = str(stored.to_dict())
    for secret in (
        "sk-abcdefghij",
        "eyJhbGci",
        "hunter2",
        "plain-value-123",
        "AKIAABCD",
        "swordfish",
        "MIIEow",
    ):
        assert secret not in text, secret
    assert stored.task == "call the API with key [REDACTED]"
    assert stored.steps[0].state["url"] == "https://admin:[REDACTED]@db.example.com/x"
    assert recorder.stats().redactions >= 6


def test_concurrent_threads_each_step_in_its_own_episode(sqlite_store: SqliteStore) -> None:
    num_threads, per_thread, steps_each = 32, 200, 3
    rec = Recorder(sqlite_store, RecorderConfig(max_open_episodes=10_000))
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(per_thread):
                with rec.episode(f"w{worker}-e{n}", agent_id=f"w{worker}") as ep:
                    for k in range(steps_each):
                        ep.step(f"w{worker}-e{n}-s{k}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(num_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rec.close()
    assert not errors
    assert sqlite_store.count_episodes() == num_threads * per_thread
    for episode in sqlite_store.iter_episodes():
        assert [s.action for s in episode.steps] == [
            f"{episode.task}-s{k}" for k in range(steps_each)
        ]


def test_asyncio_tasks_keep_their_own_current_episode(recorder: Recorder) -> None:
    @recorder.tool
    async def work(tag: str) -> str:
        await asyncio.sleep(0.001)
        return tag

    async def one(tag: str) -> str:
        async with recorder.episode(tag) as ep:
            for _ in range(5):
                await work(tag)
        return ep.id

    async def main() -> list[str]:
        return await asyncio.gather(*(one(f"task-{i}") for i in range(50)))

    ids = asyncio.run(main())
    for eid in ids:
        episode = recorder.get(eid)
        assert [s.result for s in episode.steps] == [episode.task] * 5


def test_closed_recorder_refuses(sqlite_store: SqliteStore) -> None:
    rec = Recorder(sqlite_store)
    rec.close()
    rec.close()
    with pytest.raises(ClosedError):
        rec.begin("t")


def test_abort_open_then_close_keeps_them(sqlite_store: SqliteStore) -> None:
    rec = Recorder(sqlite_store)
    rec.begin("left open")
    rec.abort_open("shutting down")
    rec.close()
    assert sqlite_store.query_episodes()[0].status is OutcomeStatus.ABORTED


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="max_open_episodes must be an integer >= 1, got 0"):
        RecorderConfig(max_open_episodes=0)
    with pytest.raises(ConfigError, match="ttl_s"):
        RecorderConfig(ttl_s=0)


def test_store_failure_is_retried_without_loss(tmp_path: Path) -> None:
    class Flaky:
        def __init__(self) -> None:
            self.inner = SqliteStore(tmp_path / "flaky.db")
            self.failures = 2

        def add_episode_rows(self, rows):  # type: ignore[no-untyped-def]
            if self.failures:
                self.failures -= 1
                raise OSError("disk hiccup")
            self.inner.add_episode_rows(rows)

        def get_episode(self, episode_id: str):  # type: ignore[no-untyped-def]
            return self.inner.get_episode(episode_id)

    flaky = Flaky()
    rec = Recorder(flaky)
    ids = []
    for i in range(5):
        eid = rec.begin(f"t{i}")
        rec.complete(eid)
        ids.append(eid)
    rec.flush(timeout_s=10)
    assert rec.stats().write_errors == 2
    assert flaky.inner.count_episodes() == 5
    rec.close()
    flaky.inner.close()


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from learnloop.recorder import Recorder
    from learnloop.store import SqliteStore
    store = SqliteStore(sys.argv[1])
    rec = Recorder(store)
    for i in range(300):
        eid = rec.begin(f"flushed-{i}")
        rec.step(eid, "a", state={"blob": "x" * 400})
        rec.complete(eid)
    rec.flush()
    print("flushed", flush=True)
    while True:  # keep recording until killed
        eid = rec.begin("unflushed")
        rec.step(eid, "a")
        rec.complete(eid)
        time.sleep(0.0005)
    """
)


def test_kill_9_after_flush_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "killed.db"
    with subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(db)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "flushed"
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    store = SqliteStore(db)
    assert store.count_episodes(EpisodeQuery(task_contains="flushed-")) == 300
    store.count_episodes()  # opens cleanly and reads everything
    import sqlite3

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


def test_a_row_the_store_refuses_is_dropped_not_retried_forever(tmp_path: Path) -> None:
    from learnloop.errors import InvalidInputError as Invalid

    class Picky:
        def __init__(self) -> None:
            self.inner = SqliteStore(tmp_path / "picky.db")

        def add_episode_rows(self, rows):  # type: ignore[no-untyped-def]
            if any("poison" in row[5] for row in rows):
                raise Invalid("cannot store poison")
            self.inner.add_episode_rows(rows)

        def get_episode(self, episode_id: str):  # type: ignore[no-untyped-def]
            return self.inner.get_episode(episode_id)

    picky = Picky()
    rec = Recorder(picky)
    for task in ("fine 1", "poison", "fine 2"):
        rec.complete(rec.begin(task))
    rec.flush(timeout_s=10)
    stats = rec.stats()
    assert stats.dropped == 1 and stats.written == 2
    assert sorted(e.task for e in picky.inner.query_episodes()) == ["fine 1", "fine 2"]
    rec.close()
    picky.inner.close()
