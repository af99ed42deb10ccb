"""The store for many writers on many machines: PostgreSQL (extra ``postgres``).

Same protocols, same tables and the same contract suite as :mod:`learnloop.store.sqlite`;
the migrations of :mod:`learnloop.store.schema` are applied in one transaction under
``pg_advisory_xact_lock``, so processes opening a new database at once do not race.

Choices, and why:

* **Bodies are ``JSON``, not ``JSONB``.** JSONB stores numbers as ``numeric``, which
  has no negative zero (``-0.0`` comes back as ``0.0``) and prints
  ``1.7976931348623157e308`` as a 309-digit integer; it also refuses ``"\\u0000"``
  inside strings. ``JSON`` keeps the text exactly as written, so episodes round-trip
  without loss, and is cheaper to write (validated, not converted). Queries still
  reach inside it: filters compare ``(body->'metadata'->'key')::jsonb`` with the
  JSON-encoded value, so ``1`` matches ``1.0`` and ``true`` matches only ``true``.
* **PostgreSQL text cannot hold NUL** (``"\\x00"``), and one ``"\\u0000"`` anywhere in
  a ``JSON`` value makes every ``->`` on that value fail. So every NUL in an episode
  (columns and body) or a document's data is stored as U+FFFD (``"\\ufffd"``) and a
  warning is logged once per store; filters and lookups map NUL the same way.
  Document collections and keys containing NUL are refused.
* **Batched writes** are pipelined ``INSERT ... ON CONFLICT (id) DO UPDATE``
  statements (psycopg's ``executemany``), one transaction per batch: as fast as
  ``COPY`` straight into the table and upserts by id natively; ``COPY`` through a
  staging table (needed for upserts) was about half as fast
  (``write_method="copy"`` keeps it for comparison; see
  ``benchmarks/bench_postgres.py``).
* **Large bodies are compressed with lz4** (``SET default_toast_compression``
  on each pooled connection) instead of the server's default pglz: measured about
  4x the write rate for ~11 KB episodes, for tables ~45% larger. Servers built
  without lz4 keep pglz.
* **Claiming work** (jobs) uses compare-and-set on documents: ``put_document`` with
  ``expected_revision=n`` is ``UPDATE ... WHERE revision = n``, which row locks make
  race-free across processes and machines; exactly one of several claimers wins and
  the others get :class:`~learnloop.errors.ConflictError`.
* **Connections** come from a ``psycopg_pool.ConnectionPool`` (``max_connections``,
  default 8) shared by every thread using the store.

Ordering of ids with equal start times follows the database's collation (SQLite
compares bytes; a ``C``-collated database orders exactly the same way).
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import orjson

from learnloop.episode import Episode, EpisodeId, JSONValue
from learnloop.errors import (
    ClosedError,
    ConfigError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StoreError,
)
from learnloop.store.base import Document, DocumentFilterValue, EpisodeQuery
from learnloop.store.schema import MIGRATIONS, render
from learnloop.store.sqlite import check_field_name, dump_json, episode_row, iter_keyset

try:
    import psycopg
    import psycopg_pool
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(
        "the PostgreSQL store needs the 'postgres' extra: "
        f"pip install 'learnloop[postgres]' ({exc})"
    ) from exc

if TYPE_CHECKING:
    from psycopg import Connection

__all__ = ["WRITE_METHODS", "PostgresStore", "WriteMethod"]

logger = logging.getLogger(__name__)

WriteMethod = Literal["executemany", "copy"]
WRITE_METHODS: tuple[WriteMethod, ...] = ("executemany", "copy")
Compression = Literal["lz4", "pglz"]

#: Key of the advisory lock that serializes migrations (crc32 of "learnloop.schema").
_MIGRATION_LOCK = zlib.crc32(b"learnloop.schema")
_JSONB = re.compile(r"\bJSONB\b")
_NUL_ESCAPE = re.compile(r"(\\+)u0000")
_COLUMNS = (
    "id, agent_id, kind, status, parent_id, task, started_at, ended_at, total_reward, "
    "num_steps, body"
)
_TEXT_COLUMNS = (0, 1, 2, 3, 4, 5)  # positions in an episode_row that are TEXT columns


def _render(statement: str) -> str:
    """A shared migration statement for PostgreSQL, with JSON (not JSONB) bodies.

    See the module docstring for why bodies are ``JSON``.
    """
    return _JSONB.sub("JSON", render(statement, "postgresql"))


def _column_text(value: str | None) -> str | None:
    """``value`` as a TEXT column can hold it (NUL replaced by U+FFFD)."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def _json_text(text: str) -> str:
    """JSON ``text`` with every ``\\u0000`` escape replaced by U+FFFD.

    An odd run of backslashes before ``u0000`` is an escape; an even run is escaped
    backslashes followed by the plain letters ``u0000``, which stay.
    """
    if "\\u0000" not in text:
        return text
    return _NUL_ESCAPE.sub(
        lambda m: m[1][:-1] + "\ufffd" if len(m[1]) % 2 else m[0],
        text,
    )


def _has_nul(row: tuple[Any, ...]) -> bool:
    return "\\u0000" in row[10] or any(
        row[i] is not None and "\x00" in row[i] for i in _TEXT_COLUMNS
    )


def _column_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """An :func:`episode_row` PostgreSQL accepts: NUL replaced by U+FFFD throughout."""
    return (*(_column_text(row[i]) for i in _TEXT_COLUMNS), *row[6:10], _json_text(row[10]))


def _check_name(kind: str, value: str) -> str:
    if "\x00" in value:
        raise InvalidInputError(
            f"document {kind} {value!r} contains a NUL character, which PostgreSQL text "
            "cannot hold; remove it"
        )
    return value


def _safe_url(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStore:
    """Episodes and documents in a PostgreSQL database (see the module docstring).

    Args:
        url: a libpq URL, e.g. ``postgresql://user:password@host:5432/learnloop``.
        max_connections: connections the pool opens at most.
        min_connections: connections kept open while idle.
        timeout_s: how long to wait for a connection (at open and per operation).
        write_method: how batches are written: ``executemany`` (pipelined upserts,
            the fastest measured) or ``copy`` (through a staging table).
        compression: how the server compresses large bodies: ``lz4`` (fast) or
            ``pglz`` (smaller); None leaves the server's default.

    Raises:
        StoreError: the server cannot be reached or the schema is newer than this
            learnloop knows.
    """

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 8,
        min_connections: int = 1,
        timeout_s: float = 30.0,
        write_method: WriteMethod = "executemany",
        compression: Compression | None = "lz4",
    ) -> None:
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigError(f"max_connections must be an integer >= 1, got {max_connections!r}")
        if not isinstance(min_connections, int) or not 0 <= min_connections <= max_connections:
            raise ConfigError(
                f"min_connections must be an integer in [0, max_connections={max_connections}], "
                f"got {min_connections!r}"
            )
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        if write_method not in WRITE_METHODS:
            raise ConfigError(f"write_method must be one of {WRITE_METHODS}, got {write_method!r}")
        if compression not in (None, "lz4", "pglz"):
            raise ConfigError(f"compression must be 'lz4', 'pglz' or None, got {compression!r}")
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        self._url = url
        self._write_method: WriteMethod = write_method
        self._closed = False
        self._warned_nul = False
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=min_connections,
            max_size=max_connections,
            timeout=timeout_s,
            open=False,
            name="learnloop-store",
            configure=_compression_setter(compression) if compression else None,
        )
        try:
            self._pool.open(wait=True, timeout=timeout_s)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise StoreError(
                f"cannot connect to PostgreSQL store {_safe_url(url)} within {timeout_s:g} s "
                f"({exc}); check that the server runs and the URL's host, port, user and "
                "database are right"
            ) from None
        try:
            self._migrate()
            if compression is not None:
                self._check_compression(compression)
        except BaseException:
            self.close()
            raise

    # --- connections ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._url

    @property
    def write_method(self) -> WriteMethod:
        return self._write_method

    @contextmanager
    def _connection(self) -> Iterator[Connection[Any]]:
        """A pooled connection inside one transaction (committed on success)."""
        if self._closed:
            raise ClosedError(f"store {_safe_url(self._url)} is closed; open a new one")
        try:
            with self._pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg_pool.PoolClosed:
            raise ClosedError(f"store {_safe_url(self._url)} is closed; open a new one") from None
        except psycopg_pool.PoolTimeout as exc:
            raise StoreError(
                f"no PostgreSQL connection free in {_safe_url(self._url)} ({exc}); raise "
                "max_connections or close idle iterators"
            ) from None
        except psycopg.OperationalError as exc:
            raise StoreError(
                f"PostgreSQL store {_safe_url(self._url)} failed: {exc}; check the server"
            ) from exc

    def _migrate(self) -> None:
        latest = MIGRATIONS[-1].version
        with self._connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = (row[0] if row else None) or 0
            if current > latest:
                raise StoreError(
                    f"store {_safe_url(self._url)} has schema version {current}, newer than "
                    f"this learnloop knows ({latest}); upgrade learnloop"
                )
            for migration in MIGRATIONS:
                if migration.version > current:
                    logger.info(
                        "applying migration %d (%s) to %s",
                        migration.version,
                        migration.description,
                        _safe_url(self._url),
                    )
                    for statement in migration.statements:
                        conn.execute(_render(statement))
                    conn.execute(
                        "INSERT INTO schema_version (version) VALUES (%s)", (migration.version,)
                    )

    def _check_compression(self, compression: Compression) -> None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT current_setting('default_toast_compression', true)"
            ).fetchone()
        if row is None or row[0] != compression:
            logger.warning(
                "PostgreSQL at %s cannot compress with %s (setting is %r); large episodes "
                "are written more slowly: use a server built with lz4 (14 or newer)",
                _safe_url(self._url),
                compression,
                row[0] if row else None,
            )

    def schema_version(self) -> int:
        with self._connection() as conn:
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int((row[0] if row else None) or 0)

    def close(self) -> None:
        """Close the pool; later calls raise ClosedError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- episodes ---------------------------------------------------------------------

    def add_episodes(self, episodes: Sequence[Episode]) -> None:
        rows = [episode_row(e) for e in episodes]
        self.add_episode_rows(rows)

    def add_episode_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Upsert prepared :func:`~learnloop.store.sqlite.episode_row` tuples in one
        transaction (the recorder's fast path). Within a batch the last row of an id wins.
        """
        if not rows:
            return
        by_id = {row[0]: row for row in rows}
        if any(_has_nul(row) for row in rows):
            self._warn_nul()
            by_id = {key: _column_row(row) for key, row in by_id.items()}
        unique = list(by_id.values())
        with self._connection() as conn:
            if self._write_method == "executemany":
                with conn.cursor() as cur:
                    cur.executemany(_UPSERT_EPISODE, unique)
            else:
                self._copy_rows(conn, unique)

    def _warn_nul(self) -> None:
        if not self._warned_nul:
            self._warned_nul = True
            logger.warning(
                "PostgreSQL cannot store NUL characters; storing them as U+FFFD in %s",
                _safe_url(self._url),
            )

    @staticmethod
    def _copy_rows(conn: Connection[Any], rows: Sequence[tuple[Any, ...]]) -> None:
        conn.execute(_CREATE_STAGING)
        with conn.cursor() as cur:
            with cur.copy(f"COPY learnloop_staged_episodes ({_COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(_UPSERT_STAGED)

    def get_episode(self, episode_id: str) -> Episode:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT body::text FROM episodes WHERE id = %s", (_column_text(episode_id),)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no episode with id {episode_id!r} in {_safe_url(self._url)}")
        return Episode.from_dict(orjson.loads(row[0]))

    def _where(self, query: EpisodeQuery) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if query.agent_id is not None:
            clauses.append("agent_id = %s")
            params.append(_column_text(query.agent_id))
        if query.kind is not None:
            clauses.append("kind = %s")
            params.append(_column_text(query.kind))
        if query.statuses is not None:
            if not query.statuses:
                clauses.append("FALSE")
            else:
                clauses.append("status = ANY(%s)")
                params.append([s.value for s in query.statuses])
        if query.task_contains is not None:
            clauses.append("strpos(task, %s) > 0")
            params.append(_column_text(query.task_contains))
        if query.started_after is not None:
            clauses.append("started_at >= %s")
            params.append(query.started_after)
        if query.started_before is not None:
            clauses.append("started_at < %s")
            params.append(query.started_before)
        if query.parent_id is not None:
            clauses.append("parent_id = %s")
            params.append(_column_text(query.parent_id))
        if query.roots_only:
            clauses.append("parent_id IS NULL")
        for name, value in query.metadata.items():
            clause, values = _json_field_clause("body->'metadata'", name, value)
            clauses.append(clause)
            params.extend(values)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def query_episodes(self, query: EpisodeQuery = EpisodeQuery()) -> list[Episode]:
        where, params = self._where(query)
        order = "DESC" if query.newest_first else "ASC"
        sql = f"SELECT body::text FROM episodes{where} ORDER BY started_at {order}, id {order}"
        if query.limit is not None:
            sql += " LIMIT %s"
            params.append(query.limit)
        if query.offset:
            sql += " OFFSET %s"
            params.append(query.offset)
        with self._connection() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [Episode.from_dict(orjson.loads(r[0])) for r in rows]

    def iter_episodes(
        self, query: EpisodeQuery = EpisodeQuery(), *, page_size: int = 500
    ) -> Iterator[Episode]:
        """Pages by keyset on (started_at, id); no connection is held between pages."""
        if page_size < 1:
            raise InvalidInputError(f"page_size must be >= 1, got {page_size}")
        where, params = self._where(query)

        def fetch(sql: str, args: list[Any]) -> Sequence[Sequence[Any]]:
            with self._connection() as conn:  # released between pages
                return conn.execute(sql, args).fetchall()

        return iter_keyset(
            query,
            where,
            params,
            page_size=page_size,
            placeholder="%s",
            body="body::text",
            fetch=fetch,
        )

    def count_episodes(self, query: EpisodeQuery = EpisodeQuery()) -> int:
        where, params = self._where(query)
        with self._connection() as conn:
            row = conn.execute(f"SELECT COUNT(*) FROM episodes{where}", params).fetchone()
        return int(row[0]) if row else 0

    def delete_episodes(self, episode_ids: Sequence[str]) -> int:
        """Delete episodes by id; returns how many existed."""
        if not episode_ids:
            return 0
        with self._connection() as conn:
            cur = conn.execute(
                "DELETE FROM episodes WHERE id = ANY(%s)",
                ([_column_text(i) for i in episode_ids],),
            )
            return cur.rowcount

    def children(self, episode_id: EpisodeId) -> list[Episode]:
        """Direct sub-episodes of ``episode_id`` (shortcut for a parent query)."""
        return self.query_episodes(EpisodeQuery(parent_id=episode_id))

    # --- documents --------------------------------------------------------------------

    def get_document(self, collection: str, key: str) -> Document | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT revision, data::text, updated_at FROM documents "
                "WHERE collection = %s AND key = %s",
                (_check_name("collection", collection), _check_name("key", key)),
            ).fetchone()
        if row is None:
            return None
        return Document(collection, key, row[0], orjson.loads(row[1]), row[2])

    def put_document(
        self,
        collection: str,
        key: str,
        data: Mapping[str, JSONValue],
        *,
        expected_revision: int | None = None,
    ) -> Document:
        """Write ``data``; see :meth:`DocumentStore.put_document`. Race-free across
        processes: ``0`` is ``INSERT ... ON CONFLICT DO NOTHING`` and ``n > 0`` is
        ``UPDATE ... WHERE revision = n``, so exactly one concurrent writer wins.
        """
        ids = (_check_name("collection", collection), _check_name("key", key))
        if expected_revision is not None and (
            not isinstance(expected_revision, int) or expected_revision < 0
        ):
            raise InvalidInputError(
                f"expected_revision must be None or an integer >= 0, got {expected_revision!r}"
            )
        body = dump_json(dict(data))
        if "\\u0000" in body:
            self._warn_nul()
            body = _json_text(body)
        now = time.time()
        with self._connection() as conn:
            if expected_revision is None:
                row = conn.execute(
                    "INSERT INTO documents (collection, key, revision, data, updated_at) "
                    "VALUES (%s, %s, 1, %s, %s) ON CONFLICT (collection, key) DO UPDATE SET "
                    "revision = documents.revision + 1, data = excluded.data, "
                    "updated_at = excluded.updated_at RETURNING revision",
                    (*ids, body, now),
                ).fetchone()
            elif expected_revision == 0:
                row = conn.execute(
                    "INSERT INTO documents (collection, key, revision, data, updated_at) "
                    "VALUES (%s, %s, 1, %s, %s) ON CONFLICT (collection, key) DO NOTHING "
                    "RETURNING revision",
                    (*ids, body, now),
                ).fetchone()
            else:
                row = conn.execute(
                    "UPDATE documents SET revision = revision + 1, data = %s, updated_at = %s "
                    "WHERE collection = %s AND key = %s AND revision = %s RETURNING revision",
                    (body, now, *ids, expected_revision),
                ).fetchone()
            if row is None:
                raise self._conflict(conn, collection, key, expected_revision)
        return Document(collection, key, int(row[0]), orjson.loads(body), now)

    @staticmethod
    def _conflict(
        conn: Connection[Any], collection: str, key: str, expected: int | None
    ) -> ConflictError:
        row = conn.execute(
            "SELECT revision FROM documents WHERE collection = %s AND key = %s",
            (collection, key),
        ).fetchone()
        current = row[0] if row else 0
        return ConflictError(
            f"document {collection}/{key} is at revision {current}, not {expected}; "
            "re-read it and retry"
        )

    def list_documents(
        self,
        collection: str,
        *,
        prefix: str | None = None,
        where: Mapping[str, DocumentFilterValue] | None = None,
        limit: int | None = None,
    ) -> list[Document]:
        clauses = ["collection = %s"]
        params: list[Any] = [_check_name("collection", collection)]
        if prefix:
            clauses.append("starts_with(key, %s)")
            params.append(_check_name("key prefix", prefix))
        for name, value in (where or {}).items():
            clause, values = _json_field_clause("data", name, value)
            clauses.append(clause)
            params.extend(values)
        sql = (
            "SELECT key, revision, data::text, updated_at FROM documents WHERE "
            + " AND ".join(clauses)
            + " ORDER BY key"
        )
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        with self._connection() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [Document(collection, r[0], r[1], orjson.loads(r[2]), r[3]) for r in rows]

    def delete_document(
        self, collection: str, key: str, *, expected_revision: int | None = None
    ) -> bool:
        ids = (_check_name("collection", collection), _check_name("key", key))
        with self._connection() as conn:
            if expected_revision is None:
                cur = conn.execute("DELETE FROM documents WHERE collection = %s AND key = %s", ids)
                return cur.rowcount > 0
            if expected_revision > 0:
                cur = conn.execute(
                    "DELETE FROM documents WHERE collection = %s AND key = %s AND revision = %s",
                    (*ids, expected_revision),
                )
                if cur.rowcount > 0:
                    return True
            exists = conn.execute(
                "SELECT 1 FROM documents WHERE collection = %s AND key = %s", ids
            ).fetchone()
            if exists is not None or expected_revision > 0:
                raise self._conflict(conn, collection, key, expected_revision)
            return False


def _compression_setter(compression: Compression) -> Callable[[Connection[Any]], None]:
    """A pool ``configure`` callback choosing how new connections compress large values."""

    def configure(conn: Connection[Any]) -> None:
        try:
            conn.execute(f"SET default_toast_compression = '{compression}'")
            conn.commit()
        except psycopg.Error as exc:  # a server built without lz4, or before 14
            conn.rollback()
            logger.debug("keeping the server's TOAST compression: %s", exc)

    return configure


def _json_field_clause(column: str, name: str, value: DocumentFilterValue) -> tuple[str, list[Any]]:
    """``column->name`` equals ``value`` as JSON (a missing field counts as null)."""
    check_field_name(name)
    if value is None:
        return f"COALESCE(({column}->%s)::jsonb, 'null'::jsonb) = 'null'::jsonb", [name]
    return f"({column}->%s)::jsonb = %s::jsonb", [name, _json_text(dump_json(value))]


_UPDATE_EPISODE = (
    "ON CONFLICT (id) DO UPDATE SET agent_id = excluded.agent_id, kind = excluded.kind, "
    "status = excluded.status, parent_id = excluded.parent_id, task = excluded.task, "
    "started_at = excluded.started_at, ended_at = excluded.ended_at, "
    "total_reward = excluded.total_reward, num_steps = excluded.num_steps, body = excluded.body"
)

_UPSERT_EPISODE = (
    f"INSERT INTO episodes ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    + _UPDATE_EPISODE
)

# A per-connection staging table for COPY: emptied at every commit. The body is TEXT
# here so COPY does not validate the JSON twice (the INSERT's cast does it once).
_CREATE_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS learnloop_staged_episodes ("
    "id TEXT, agent_id TEXT, kind TEXT, status TEXT, parent_id TEXT, task TEXT, "
    "started_at DOUBLE PRECISION, ended_at DOUBLE PRECISION, total_reward DOUBLE PRECISION, "
    "num_steps INTEGER, body TEXT) ON COMMIT DELETE ROWS"
)

_UPSERT_STAGED = (
    f"INSERT INTO episodes ({_COLUMNS}) SELECT id, agent_id, kind, status, parent_id, task, "
    "started_at, ended_at, total_reward, num_steps, body::json FROM learnloop_staged_episodes "
    + _UPDATE_EPISODE
)
