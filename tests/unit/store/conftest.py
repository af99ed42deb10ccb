"""PostgreSQL fixtures: one throw-away server per session, one fresh schema per store.

The server comes from ``$LEARNLOOP_TEST_POSTGRES_URL`` if set, else is started
from the local binaries (see ``tests/pg_service.py``); without either the tests
skip, except under CI where they fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pg_service import drop_schemas, new_schema, postgres_url_for_tests


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A database on a running server that tests may create schemas in."""
    url, server = postgres_url_for_tests()
    if server is not None:
        url = server.create_database("learnloop_test")
    try:
        yield url
    finally:
        if server is not None:
            server.stop()


@pytest.fixture
def new_postgres_url(postgres_database_url: str) -> Iterator[Callable[[], str]]:
    """A factory of URLs, each pointing at a new empty schema (dropped afterwards)."""
    schemas: list[str] = []

    def create() -> str:
        schema, url = new_schema(postgres_database_url)
        schemas.append(schema)
        return url

    yield create
    if schemas:
        drop_schemas(postgres_database_url, schemas)


@pytest.fixture
def postgres_url(new_postgres_url: Callable[[], str]) -> str:
    """The URL of one new empty schema."""
    return new_postgres_url()
