"""Shared fixtures: a fresh SQLite store per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from learnloop.store import SqliteStore


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "test.db")
    yield store
    store.close()


@pytest.fixture(autouse=True)
def _no_ambient_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's $LEARNLOOP_STORE."""
    monkeypatch.delenv("LEARNLOOP_STORE", raising=False)


def in_ci() -> bool:
    return bool(os.environ.get("CI"))

