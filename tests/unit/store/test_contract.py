"""The store contract, run against every backend available here."""

from __future__ import annotations

import os
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
    url = os.environ.get("LEARNLOOP_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("PostgreSQL: set LEARNLOOP_TEST_POSTGRES_URL (CI starts a server)")
    from learnloop.store.postgres import PostgresStore  # pragma: no cover - needs a server

    def fresh() -> Any:  # pragma: no cover
        store = PostgresStore(url)
        store.drop_all_for_tests()
        return PostgresStore(url)

    yield fresh  # pragma: no cover


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_contract(make_store: Callable[[], Any], check: Callable[[Any], None]) -> None:
    store = make_store()
    try:
        check(store)
    finally:
        store.close()
