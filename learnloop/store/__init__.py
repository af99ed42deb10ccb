"""Where episodes and documents live: SQLite by default, PostgreSQL at scale.

>>> import tempfile, os
>>> store = open_store("sqlite:///" + os.path.join(tempfile.mkdtemp(), "demo.db"))
>>> store.count_episodes()
0
>>> store.close()
"""

from __future__ import annotations

import os

from learnloop.errors import ConfigError, NotFoundError
from learnloop.store.base import Document, DocumentStore, EpisodeQuery, EpisodeStore, Store
from learnloop.store.sqlite import SqliteStore

__all__ = [
    "DEFAULT_STORE_URL",
    "STORE_ENV_VAR",
    "Document",
    "DocumentStore",
    "EpisodeQuery",
    "EpisodeStore",
    "SqliteStore",
    "Store",
    "open_store",
    "resolve_store_url",
]

DEFAULT_STORE_URL = "sqlite:///learnloop.db"
STORE_ENV_VAR = "LEARNLOOP_STORE"


def resolve_store_url(url: str | None = None) -> str:
    """An explicit URL beats ``$LEARNLOOP_STORE``, which beats ``./learnloop.db``."""
    return url or os.environ.get(STORE_ENV_VAR) or DEFAULT_STORE_URL


def open_store(url: str | None = None, *, create: bool = True, flag: str = "--store") -> Store:
    """Open the store at ``url`` (see :func:`resolve_store_url`).

    ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a plain file
    path open SQLite; ``postgresql://user@host/db`` opens PostgreSQL (extra
    ``postgres``). With ``create=False`` (commands that only read) a SQLite file
    that does not exist raises NotFoundError naming ``flag`` instead of creating an
    empty database, which would hide a mistyped path.
    """
    url = resolve_store_url(url)
    if url.startswith("sqlite://") or "://" not in url:
        path = url[len("sqlite://") :] if url.startswith("sqlite://") else url
        if url.startswith("sqlite://") and path.startswith("/"):
            path = path[1:]  # sqlite:///x.db -> x.db ; sqlite:////abs/x.db -> /abs/x.db
        if not path:
            raise ConfigError(f"store URL {url!r} names no file; use sqlite:///path/to/file.db")
        if not create and path != ":memory:" and not os.path.exists(path):
            raise NotFoundError(
                f"store {url!r} does not exist (no file {os.path.abspath(path)}); pass {flag} "
                f"with an existing store or set ${STORE_ENV_VAR}, or record episodes first"
            )
        return SqliteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from learnloop.store.postgres import (  # type: ignore[import-not-found, unused-ignore]
                PostgresStore,
            )
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ImportError(
                "the PostgreSQL store needs the 'postgres' extra: "
                f"pip install 'learnloop[postgres]' ({exc})"
            ) from exc
        return PostgresStore(url)  # type: ignore[no-any-return, unused-ignore]
    raise ConfigError(
        f"unknown store URL scheme in {url!r}; use sqlite:///path.db or postgresql://..."
    )
