from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from learnloop.episode import Episode
from learnloop.errors import ClosedError, ConfigError, InvalidInputError, StoreError
from learnloop.store import DEFAULT_STORE_URL, SqliteStore, open_store, resolve_store_url
from learnloop.store.schema import MIGRATIONS


def test_schema_version_recorded_and_reopen_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    assert store.schema_version() == MIGRATIONS[-1].version
    store.add_episodes([Episode.new("kept")])
    store.close()
    reopened = SqliteStore(path)
    assert reopened.count_episodes() == 1
    assert reopened.schema_version() == MIGRATIONS[-1].version
    reopened.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (999)")
    with pytest.raises(StoreError, match="newer than this learnloop"):
        SqliteStore(path)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="is it a learnloop database"):
        SqliteStore(path)


def test_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SqliteStore(tmp_path / "no" / "such" / "x.db")


def test_closed_store_raises(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    store.close()
    store.close()  # idempotent
    with pytest.raises(ClosedError):
        store.count_episodes()


def test_filter_field_names_cannot_inject(sqlite_store: SqliteStore) -> None:
    with pytest.raises(InvalidInputError, match="plain identifier"):
        sqlite_store.list_documents("x", where={"a') OR 1=1 --": 1})


def test_url_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_store_url(None) == DEFAULT_STORE_URL
    monkeypatch.setenv("LEARNLOOP_STORE", "sqlite:///from-env.db")
    assert resolve_store_url(None) == "sqlite:///from-env.db"
    assert resolve_store_url("sqlite:///explicit.db") == "sqlite:///explicit.db"
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    assert absolute.url == f"sqlite:///{tmp_path}/abs.db"
    absolute.close()
    plain = open_store(str(tmp_path / "plain.db"))
    plain.close()
    with pytest.raises(ConfigError, match="unknown store URL scheme"):
        open_store("mongodb://x")
    with pytest.raises(ConfigError, match="names no file"):
        open_store("sqlite://")


def test_two_stores_on_one_file_see_each_other(tmp_path: Path) -> None:
    a, b = SqliteStore(tmp_path / "shared.db"), SqliteStore(tmp_path / "shared.db")
    a.add_episodes([Episode.new("from a")])
    assert b.count_episodes() == 1
    a.close()
    b.close()
