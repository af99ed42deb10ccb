"""The store contract, run against every backend available here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from learnloop.store import SqliteStore
from learnloop.store.testing import CHECKS


def _backends() -> list[Any]:
    backends: list[Any] = [pytest.param("sqlite", id="sqlite")]
    backends.append(pytest.param("postgres", id="postgres", marks=pytest.mark.postgres))
    return backends


@pytest.fixture(params=_backends())
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    if request.param == "sqlite":
        counter = iter(range(1_000_000))
        yield lambda: SqliteStore(tmp_path / f"contract-{next(counter)}.db")
        return
    # a throw-away server per session, a fresh schema per store (tests/unit/store/conftest.py)
    new_postgres_url = request.getfixturevalue("new_postgres_url")
    from learnloop.store.postgres import PostgresStore

    yield lambda: PostgresStore(new_postgres_url())


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_contract(make_store: Callable[[], Any], check: Callable[[Any], None]) -> None:
    store = make_store()
    try:
        check(store)
    finally:
        store.close()
