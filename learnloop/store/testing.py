"""The store contract, as checks any backend (ours or a user's) can run.

Each ``check_*`` function takes a fresh, empty store and raises AssertionError
when the backend breaks the contract of :mod:`learnloop.store.base`.
:func:`check_store` runs them all::

    >>> import tempfile, os
    >>> from learnloop.store import SqliteStore
    >>> folder = tempfile.mkdtemp()
    >>> check_store(lambda: SqliteStore(os.path.join(folder, f"{os.urandom(4).hex()}.db")))
    12

The test suite runs every check against every backend through one parametrized
fixture (``tests/unit/store/test_contract.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from learnloop.episode import Episode, EpisodeId, Observation, OutcomeStatus, Step
from learnloop.errors import ConflictError, NotFoundError
from learnloop.store.base import EpisodeQuery

__all__ = ["CHECKS", "check_store", "make_episode"]


def make_episode(index: int, **fields: Any) -> Episode:
    """A small, varied episode for contract checks (deterministic in ``index``)."""
    fields.setdefault("id", EpisodeId(f"ep-{index:05d}"))
    fields.setdefault("agent_id", "alpha" if index % 2 == 0 else "beta")
    fields.setdefault("kind", "task")
    fields.setdefault("status", OutcomeStatus.SUCCESS if index % 3 else OutcomeStatus.FAILURE)
    fields.setdefault("started_at", 1_700_000_000.0 + index)
    fields.setdefault("ended_at", 1_700_000_000.0 + index + 0.5)
    fields.setdefault("metadata", {"seed": index % 4, "split": "train" if index % 5 else "heldout"})
    steps = [
        Step(
            index=i,
            action=f"call tool_{i}",
            tool=f"tool_{i}",
            state={"query": f"find item {index}", "nested": {"values": [1, 2.5, "é"]}},
            result={"ok": True, "n": i},
            reward=0.5 * i,
            reward_components={"success": 0.5 * i},
            confidence=0.25 * i,
            success=True,
            duration_s=0.01,
            started_at=1_700_000_000.0 + index + i / 10,
        )
        for i in range(3)
    ]
    return Episode(
        task=fields.pop("task", f"task number {index} ünïcode ✓"),
        steps=tuple(steps),
        observations=(Observation(index=3, source="user_feedback", content={"rating": 1}),),
        terminal_reward=1.0,
        **fields,
    )


def check_roundtrip(store: Any) -> None:
    episode = make_episode(1, expected_outcome={"answer": 42.0}, versions={"prompt": "v2"})
    store.add_episodes([episode])
    assert store.get_episode(episode.id) == episode, "stored episode differs from the one added"


def check_upsert(store: Any) -> None:
    episode = make_episode(2)
    store.add_episodes([episode])
    changed = episode.replace(status=OutcomeStatus.ABORTED, status_reason="user stopped")
    store.add_episodes([changed])
    assert store.count_episodes() == 1
    assert store.get_episode(episode.id).status is OutcomeStatus.ABORTED


def check_missing(store: Any) -> None:
    try:
        store.get_episode("no-such-id")
    except NotFoundError:
        return
    raise AssertionError("get_episode of an unknown id must raise NotFoundError")


def check_filters(store: Any) -> None:
    store.add_episodes([make_episode(i) for i in range(20)])
    assert store.count_episodes() == 20
    assert store.count_episodes(EpisodeQuery(agent_id="alpha")) == 10
    failures = store.query_episodes(EpisodeQuery(statuses=(OutcomeStatus.FAILURE,)))
    assert [e.id for e in failures] == [f"ep-{i:05d}" for i in range(20) if i % 3 == 0]
    assert store.count_episodes(EpisodeQuery(task_contains="number 1")) == 11  # 1, 10..19
    window = EpisodeQuery(started_after=1_700_000_005.0, started_before=1_700_000_008.0)
    assert [e.id for e in store.query_episodes(window)] == ["ep-00005", "ep-00006", "ep-00007"]
    assert store.count_episodes(EpisodeQuery(metadata={"split": "heldout"})) == 4
    assert (
        store.count_episodes(EpisodeQuery(metadata={"seed": 1, "split": "train"})) == 4
    )  # 1, 9, 13, 17
    assert store.count_episodes(EpisodeQuery(statuses=())) == 0


def check_order_and_pages(store: Any) -> None:
    store.add_episodes([make_episode(i) for i in range(25)])
    newest = store.query_episodes(EpisodeQuery(limit=3, newest_first=True))
    assert [e.id for e in newest] == ["ep-00024", "ep-00023", "ep-00022"]
    page = store.query_episodes(EpisodeQuery(limit=5, offset=10))
    assert [e.id for e in page] == [f"ep-{i:05d}" for i in range(10, 15)]
    streamed = [e.id for e in store.iter_episodes(EpisodeQuery(), page_size=4)]
    assert streamed == [f"ep-{i:05d}" for i in range(25)]
    limited = [e.id for e in store.iter_episodes(EpisodeQuery(limit=7, offset=2), page_size=3)]
    assert limited == [f"ep-{i:05d}" for i in range(2, 9)]


def check_same_start_time_pages(store: Any) -> None:
    store.add_episodes([make_episode(i, started_at=1_700_000_000.0) for i in range(9)])
    streamed = [e.id for e in store.iter_episodes(EpisodeQuery(), page_size=2)]
    assert streamed == sorted(streamed) and len(streamed) == 9, (
        "keyset paging lost or repeated rows"
    )


def check_tree(store: Any) -> None:
    root = make_episode(0)
    children = [make_episode(i, parent_id=root.id, kind="subtask") for i in (1, 2)]
    grandchild = make_episode(3, parent_id=children[0].id, kind="retry")
    store.add_episodes([root, *children, grandchild])
    assert [e.id for e in store.query_episodes(EpisodeQuery(parent_id=root.id))] == [
        c.id for c in children
    ]
    assert [e.id for e in store.query_episodes(EpisodeQuery(roots_only=True))] == [root.id]
    assert store.count_episodes(EpisodeQuery(kind="retry")) == 1


def check_documents(store: Any) -> None:
    assert store.get_document("jobs", "a") is None
    first = store.put_document("jobs", "a", {"status": "queued", "n": 1}, expected_revision=0)
    assert first.revision == 1 and first.data == {"status": "queued", "n": 1}
    second = store.put_document("jobs", "a", {"status": "running", "n": 2}, expected_revision=1)
    assert second.revision == 2
    for stale in (0, 1, 5):
        try:
            store.put_document("jobs", "a", {"status": "lost"}, expected_revision=stale)
        except ConflictError:
            continue
        raise AssertionError(f"put with stale revision {stale} must raise ConflictError")
    current = store.get_document("jobs", "a")
    assert current is not None and current.data["status"] == "running" and current.revision == 2
    store.put_document("jobs", "b", {"status": "queued", "flag": True})
    store.put_document("jobs", "c", {"status": "queued", "flag": False})
    store.put_document("other", "a", {"status": "queued"})
    assert [d.key for d in store.list_documents("jobs")] == ["a", "b", "c"]
    assert [d.key for d in store.list_documents("jobs", where={"status": "queued"})] == ["b", "c"]
    assert [d.key for d in store.list_documents("jobs", where={"flag": True})] == ["b"]
    assert [d.key for d in store.list_documents("jobs", prefix="b")] == ["b"]
    assert len(store.list_documents("jobs", limit=2)) == 2
    assert store.delete_document("jobs", "b") is True
    assert store.delete_document("jobs", "b") is False
    try:
        store.delete_document("jobs", "a", expected_revision=1)
    except ConflictError:
        pass
    else:
        raise AssertionError("delete with a stale revision must raise ConflictError")


def check_document_cas_race(store: Any) -> None:
    """Many threads incrementing one counter with CAS: no update is lost."""
    store.put_document("counters", "x", {"value": 0})
    num_threads, per_thread = 4, 25

    def bump() -> None:
        done = 0
        while done < per_thread:
            doc = store.get_document("counters", "x")
            assert doc is not None
            try:
                store.put_document(
                    "counters",
                    "x",
                    {"value": doc.data["value"] + 1},
                    expected_revision=doc.revision,
                )
            except ConflictError:
                continue
            done += 1

    threads = [threading.Thread(target=bump) for _ in range(num_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = store.get_document("counters", "x")
    assert final is not None and final.data["value"] == num_threads * per_thread


def check_unicode_and_floats(store: Any) -> None:
    values = [0.1, 1e-300, 1.7976931348623157e308, -0.0, 123456789.123456789]
    episode = make_episode(
        4,
        task='naïve 日本語 🚀 "quotes" \\ back\nslash',
        metadata={"floats": values, "deep": {"a": [{"b": [None, True]}]}},
    )
    store.add_episodes([episode])
    loaded = store.get_episode(episode.id)
    assert loaded == episode
    assert [repr(v) for v in loaded.metadata["floats"]] == [repr(v) for v in values]


def check_batch_atomic(store: Any) -> None:
    """A batch with one unstorable episode stores nothing."""
    good = make_episode(5)
    bad = make_episode(6, metadata={"bad": float("nan")})
    try:
        store.add_episodes([good, bad])
    except Exception:
        pass
    else:
        raise AssertionError("an episode holding NaN must be refused")
    assert store.count_episodes() == 0, "a refused batch must not be partly written"


def check_empty(store: Any) -> None:
    assert store.count_episodes() == 0
    assert store.query_episodes() == []
    assert list(store.iter_episodes()) == []
    store.add_episodes([])
    assert store.list_documents("nothing") == []


CHECKS: tuple[Callable[[Any], None], ...] = (
    check_roundtrip,
    check_upsert,
    check_missing,
    check_filters,
    check_order_and_pages,
    check_same_start_time_pages,
    check_tree,
    check_documents,
    check_document_cas_race,
    check_unicode_and_floats,
    check_batch_atomic,
    check_empty,
)


def check_store(make_store: Callable[[], Any]) -> int:
    """Run every check on a fresh store from ``make_store``; returns how many ran."""
    for check in CHECKS:
        store = make_store()
        try:
            check(store)
        finally:
            store.close()
    return len(CHECKS)
