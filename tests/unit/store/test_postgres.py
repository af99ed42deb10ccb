"""PostgreSQL-specific behaviour; the shared contract is in test_contract.py."""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from learnloop.episode import Episode
from learnloop.errors import (
    ClosedError,
    ConfigError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StoreError,
)
from learnloop.recorder import Recorder
from learnloop.store import EpisodeQuery, SqliteStore, open_store
from learnloop.store.schema import MIGRATIONS
from learnloop.store.testing import make_episode

pytestmark = pytest.mark.postgres

psycopg = pytest.importorskip("psycopg")

from learnloop.store.postgres import WRITE_METHODS, PostgresStore  # noqa: E402


@pytest.fixture
def store(postgres_url: str) -> Any:
    opened = PostgresStore(postgres_url)
    yield opened
    opened.close()


def raw(store: PostgresStore, sql: str) -> list[tuple[Any, ...]]:
    with store._connection() as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


# --- schema and connections ------------------------------------------------------------


def test_schema_version_recorded_and_reopen_keeps_data(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    assert store.schema_version() == MIGRATIONS[-1].version
    store.add_episodes([Episode.new("kept")])
    store.close()
    reopened = PostgresStore(postgres_url)
    assert reopened.count_episodes() == 1
    assert raw(reopened, "SELECT version FROM schema_version ORDER BY version") == [
        (m.version,) for m in MIGRATIONS
    ]
    reopened.close()


def test_body_columns_are_json_not_jsonb(store: PostgresStore) -> None:
    types = dict(
        raw(
            store,
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE column_name IN ('body', 'data') AND table_schema = current_schema()",
        )
    )
    assert types == {"episodes.body": "json", "documents.data": "json"}


def test_newer_schema_is_refused(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    with store._connection() as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (999)")
    store.close()
    with pytest.raises(StoreError, match="newer than this learnloop"):
        PostgresStore(postgres_url)


def test_concurrent_opens_of_a_new_database_migrate_once(postgres_url: str) -> None:
    num_openers = 6
    barrier = threading.Barrier(num_openers)
    errors: list[BaseException] = []

    def open_one() -> None:
        barrier.wait()
        try:
            PostgresStore(postgres_url, max_connections=1).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(num_openers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store = PostgresStore(postgres_url)
    assert raw(store, "SELECT COUNT(*) FROM schema_version") == [(len(MIGRATIONS),)]
    store.close()


def test_unreachable_server_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL") as caught:
        PostgresStore("postgresql://learner:s3cret@127.0.0.1:1/nothing", timeout_s=0.5)
    assert "s3cret" not in str(caught.value)
    assert "learner:***@127.0.0.1:1" in str(caught.value)


def test_closed_store_raises_and_close_is_idempotent(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    store.close()
    store.close()
    with pytest.raises(ClosedError, match="is closed"):
        store.count_episodes()
    with pytest.raises(ClosedError):
        store.get_document("jobs", "a")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_connections": 0}, "max_connections"),
        ({"min_connections": 9}, "min_connections"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"write_method": "bulk"}, "write_method"),
        ({"compression": "zstd"}, "compression"),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PostgresStore("postgresql://nobody@127.0.0.1:1/none", **kwargs)


def test_open_store_routes_both_url_schemes(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        store = open_store(url)
        assert isinstance(store, PostgresStore)
        assert store.url.startswith("postgresql://")
        store.close()


def test_lz4_compression_is_set_on_pooled_connections(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, max_connections=2)
    assert raw(store, "SHOW default_toast_compression") == [("lz4",)]
    store.close()
    plain = PostgresStore(postgres_url, compression=None)
    assert raw(plain, "SHOW default_toast_compression") == [("pglz",)]
    plain.close()


def test_iterating_holds_no_connection_between_pages(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, max_connections=1, timeout_s=2)
    store.add_episodes([make_episode(i) for i in range(6)])
    seen = []
    for episode in store.iter_episodes(page_size=2):
        seen.append(episode.id)
        assert store.count_episodes() == 6  # needs the only connection while iterating
    assert seen == [f"ep-{i:05d}" for i in range(6)]
    store.close()


# --- what text columns and JSON can hold -----------------------------------------------


def test_nul_characters_are_stored_as_replacement_characters(
    store: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    def episode(nul: str) -> Episode:
        return make_episode(
            1,
            id=f"id{nul}x",
            agent_id=f"agent{nul}x",
            task=f"task {nul} with nul",
            # a backslash then NUL; and the six plain characters \u0000, which stay
            metadata={"note": f"a{nul}b", "escaped": f"\\{nul}", "plain": "C:\\u0000"},
        )

    with caplog.at_level("WARNING", logger="learnloop.store.postgres"):
        store.add_episodes([episode("\x00")])
        store.add_episodes([episode("\x00").replace(kind="again")])
    assert [r.message for r in caplog.records] == [
        f"PostgreSQL cannot store NUL characters; storing them as U+FFFD in {store.url}"
    ]
    assert store.get_episode("id\x00x") == episode("\ufffd").replace(kind="again")
    assert store.count_episodes(EpisodeQuery(agent_id="agent\x00x")) == 1
    assert store.count_episodes(EpisodeQuery(task_contains="\x00 with")) == 1
    assert store.count_episodes(EpisodeQuery(metadata={"note": "a\x00b"})) == 1
    assert store.count_episodes(EpisodeQuery(metadata={"plain": "C:\\u0000"})) == 1
    document = store.put_document("jobs", "k", {"text": "x\x00y"})
    loaded = store.get_document("jobs", "k")
    assert loaded is not None and loaded.data == {"text": "x\ufffdy"} == document.data
    assert [d.key for d in store.list_documents("jobs", where={"text": "x\x00y"})] == ["k"]


def test_nul_in_document_names_is_refused(store: PostgresStore) -> None:
    with pytest.raises(InvalidInputError, match="NUL"):
        store.put_document("jobs", "a\x00b", {})
    with pytest.raises(InvalidInputError, match="NUL"):
        store.list_documents("jo\x00bs")


def test_floats_that_jsonb_would_change_survive(store: PostgresStore) -> None:
    values = [-0.0, 1e20, 1.7976931348623157e308, 5e-324, 2.0**53 + 2, 2**63 - 1]
    episode = make_episode(2, metadata={"values": values})
    store.add_episodes([episode])
    loaded = store.get_episode(episode.id).metadata["values"]
    assert [(type(v), repr(v)) for v in loaded] == [(type(v), repr(v)) for v in values]


# --- writes ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", WRITE_METHODS)
def test_write_methods_upsert_and_last_in_batch_wins(postgres_url: str, method: Any) -> None:
    store = PostgresStore(postgres_url, write_method=method)
    first = make_episode(1)
    store.add_episodes([first, make_episode(2)])
    changed = first.replace(task="changed once")
    twice = first.replace(task="changed twice")
    store.add_episodes([changed, make_episode(3), twice])
    assert store.count_episodes() == 3
    assert store.get_episode(first.id).task == "changed twice"
    assert store.count_episodes(EpisodeQuery(task_contains="changed")) == 1
    with pytest.raises(InvalidInputError):
        store.add_episodes([make_episode(4), make_episode(5, metadata={"bad": float("inf")})])
    assert store.count_episodes() == 3
    store.close()


def test_recorder_writes_through_the_row_path(store: PostgresStore) -> None:
    recorder = Recorder(store)
    with recorder.episode("look up the weather", agent_id="weather") as episode:
        episode.step("call", tool="weather_api", state={"city": "Oslo"}, reward=1.0)
    recorder.close()
    [stored] = store.query_episodes(EpisodeQuery(agent_id="weather"))
    assert stored.task == "look up the weather"
    assert stored.steps[0].tool == "weather_api" and stored.steps[0].state == {"city": "Oslo"}


def test_delete_episodes(store: PostgresStore) -> None:
    store.add_episodes([make_episode(i) for i in range(3)])
    assert store.delete_episodes(["ep-00000", "ep-00002", "missing"]) == 2
    assert store.delete_episodes([]) == 0
    with pytest.raises(NotFoundError):
        store.get_episode("ep-00000")
    assert [e.id for e in store.query_episodes()] == ["ep-00001"]


# --- same answers as SQLite ------------------------------------------------------------


def _filter_and_delete_answers(store: Any) -> list[Any]:
    store.add_episodes(
        [
            make_episode(0, metadata={"n": 1}),
            make_episode(1, metadata={"n": 1.0}),
            make_episode(2, metadata={"n": 2, "flag": True}),
            make_episode(3, metadata={"n": None, "flag": False}),
            make_episode(4, metadata={}),
        ]
    )
    answers: list[Any] = [
        [e.id for e in store.query_episodes(EpisodeQuery(metadata=m))]
        for m in ({"n": 1}, {"n": 1.0}, {"n": None}, {"flag": True}, {"flag": False}, {"n": "1"})
    ]
    answers.append([e.id for e in store.query_episodes(EpisodeQuery(limit=0))])
    answers.append([e.id for e in store.query_episodes(EpisodeQuery(offset=3))])
    store.put_document("d", "a", {"x": 1})
    for key, expected in (("missing", 0), ("a", 0), ("missing", 3), ("a", 2), ("a", 1)):
        try:
            answers.append(store.delete_document("d", key, expected_revision=expected))
        except ConflictError:
            answers.append("conflict")
    return answers


def test_filters_and_deletes_answer_like_sqlite(postgres_url: str, tmp_path: Path) -> None:
    sqlite = SqliteStore(tmp_path / "parity.db")
    postgres = PostgresStore(postgres_url)
    expected = _filter_and_delete_answers(sqlite)
    assert _filter_and_delete_answers(postgres) == expected
    assert expected[0] == ["ep-00000", "ep-00001"]  # 1 matches 1.0, as JSON numbers
    assert expected[2] == ["ep-00003", "ep-00004"]  # null or missing
    assert expected[-5:] == [False, "conflict", "conflict", "conflict", True]
    sqlite.close()
    postgres.close()


# --- many writer processes -------------------------------------------------------------


def _writer_process(url: str, seed: int, num_episodes: int, num_increments: int) -> None:
    store = PostgresStore(url, max_connections=2)
    recorder = Recorder(store)
    for i in range(num_episodes):
        recorder.complete(recorder.begin(f"writer {seed} episode {i}", agent_id=f"w{seed}"))
    recorder.flush()
    done = 0
    while done < num_increments:
        doc = store.get_document("counters", "total")
        assert doc is not None
        try:
            store.put_document(
                "counters",
                "total",
                {"value": doc.data["value"] + 1},
                expected_revision=doc.revision,
            )
        except ConflictError:
            continue
        done += 1
    recorder.close()
    store.close()


def test_several_writer_processes_lose_and_duplicate_nothing(postgres_url: str) -> None:
    num_processes, num_episodes, num_increments = 3, 50, 10
    store = PostgresStore(postgres_url)
    store.put_document("counters", "total", {"value": 0})
    ctx = mp.get_context("spawn")
    processes = [
        ctx.Process(target=_writer_process, args=(postgres_url, s, num_episodes, num_increments))
        for s in range(num_processes)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * num_processes
    assert store.count_episodes() == num_processes * num_episodes
    tasks = sorted(e.task for e in store.iter_episodes(page_size=100))
    assert tasks == sorted(
        f"writer {s} episode {i}" for s in range(num_processes) for i in range(num_episodes)
    )
    total = store.get_document("counters", "total")
    assert total is not None and total.data["value"] == num_processes * num_increments
    assert total.revision == 1 + num_processes * num_increments
    store.close()


def test_claiming_by_compare_and_set_has_exactly_one_winner(
    new_postgres_url: Callable[[], str],
) -> None:
    url = new_postgres_url()
    stores = [PostgresStore(url, max_connections=1) for _ in range(5)]
    queued = stores[0].put_document("jobs", "j1", {"status": "queued"})
    barrier = threading.Barrier(len(stores))
    winners: list[int] = []

    def claim(index: int) -> None:
        barrier.wait()
        try:
            stores[index].put_document(
                "jobs",
                "j1",
                {"status": "running", "worker": index},
                expected_revision=queued.revision,
            )
        except ConflictError:
            return
        winners.append(index)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    final = stores[0].get_document("jobs", "j1")
    assert final is not None and final.data == {"status": "running", "worker": winners[0]}
    for store in stores:
        store.close()


def test_missing_binaries_skip_locally_and_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import pg_service

    monkeypatch.delenv(pg_service.TEST_URL_ENV_VAR, raising=False)
    monkeypatch.setattr(pg_service, "find_postgres_bin", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y postgresql"):
        pg_service.postgres_url_for_tests()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run under CI"):
        pg_service.postgres_url_for_tests()
