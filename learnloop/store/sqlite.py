"""The embedded default store: one SQLite file in WAL mode.

Each episode is one row: indexed columns for the documented filters plus the whole
episode as a JSON body. Writes are batched (one transaction per ``add_episodes``
call) because commit latency, not row size, bounds SQLite's write rate. WAL with
``synchronous=NORMAL`` survives a killed process (``kill -9``) with every committed
transaction intact; pass ``synchronous="FULL"`` to survive power loss too.

Every thread gets its own connection (readers never block in WAL mode); writers
from one process take a lock, writers from several processes wait on SQLite's
``busy_timeout``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

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

__all__ = ["SqliteStore", "dump_json", "iter_keyset"]

_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def dump_json(value: Any) -> str:
    """Strict, compact JSON (no NaN/inf); raises InvalidInputError naming the problem."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"value cannot be stored as JSON: {exc}; convert it to str/int/float/bool/None, "
            "lists and dicts with string keys (NaN and inf are not allowed)"
        ) from None


def episode_row(episode: Episode, body: str | None = None) -> tuple[Any, ...]:
    """The column values of ``episode``'s row (shared with other SQL backends)."""
    return (
        episode.id,
        episode.agent_id,
        episode.kind,
        episode.status.value,
        episode.parent_id,
        episode.task,
        episode.started_at,
        episode.ended_at,
        episode.total_reward,
        len(episode.steps),
        body if body is not None else dump_json(episode.to_dict()),
    )


def check_field_name(name: str) -> str:
    if not _FIELD_NAME.match(name):
        raise InvalidInputError(
            f"filter field {name!r} is not a plain identifier; use letters, digits and _"
        )
    return name


def iter_keyset(
    query: EpisodeQuery,
    where: str,
    params: Sequence[Any],
    *,
    page_size: int,
    placeholder: str,
    body: str,
    fetch: Callable[[str, list[Any]], Sequence[Sequence[Any]]],
) -> Iterator[Episode]:
    """Matching episodes a page at a time, by keyset on ``(started_at, id)``.

    Shared by the SQL backends: ``where``/``params`` are the backend's filter,
    ``placeholder`` its parameter marker, ``body`` the expression selecting the JSON
    text, and ``fetch(sql, args)`` runs one page query. Offset and limit of
    ``query`` are applied while streaming, so no page re-reads skipped rows.
    """
    op = "<" if query.newest_first else ">"
    order = "DESC" if query.newest_first else "ASC"
    cursor: tuple[float, str] | None = None
    remaining = query.limit
    skipped = query.offset
    while remaining is None or remaining > 0:
        extra = ""
        page_params = list(params)
        if cursor is not None:
            keyset = f"(started_at, id) {op} ({placeholder}, {placeholder})"
            extra = (" AND " if where else " WHERE ") + keyset
            page_params += [cursor[0], cursor[1]]
        sql = (
            f"SELECT started_at, id, {body} FROM episodes{where}{extra} "
            f"ORDER BY started_at {order}, id {order} LIMIT {placeholder}"
        )
        rows = fetch(sql, [*page_params, page_size])
        if not rows:
            return
        cursor = (rows[-1][0], rows[-1][1])
        for row in rows:
            if skipped:
                skipped -= 1
                continue
            yield Episode.from_dict(orjson.loads(row[2]))
            if remaining is not None:
                remaining -= 1
                if remaining == 0:
                    return


class SqliteStore:
    """Episodes and documents in one SQLite file (see the module docstring).

    >>> import tempfile, os
    >>> store = SqliteStore(os.path.join(tempfile.mkdtemp(), "x.db"))
    >>> store.add_episodes([Episode.new("say hi", status="success")])
    >>> store.count_episodes()
    1
    >>> store.close()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 30.0,
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigError(f"synchronous must be one of {_SYNCHRONOUS}, got {synchronous!r}")
        self._path = os.fspath(path)
        if self._path != ":memory:":
            parent = os.path.dirname(os.path.abspath(self._path))
            if not os.path.isdir(parent):
                raise ConfigError(
                    f"cannot create store {self._path!r}: folder {parent!r} does not exist; "
                    "create it or choose another path"
                )
        self._synchronous = synchronous.upper()
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        self._migrate()

    # --- connections ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"sqlite:///{self._path}"

    @property
    def path(self) -> str:
        return self._path

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise ClosedError(f"store {self.url} is closed; open a new one")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self._path,
                    timeout=self._busy_timeout_s,
                    isolation_level=None,  # explicit BEGIN/COMMIT
                    check_same_thread=False,
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self._synchronous}")
                conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")
            except sqlite3.DatabaseError as exc:
                raise StoreError(
                    f"cannot open SQLite store {self._path!r}: {exc}; is it a learnloop "
                    "database file?"
                ) from None
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def _write(
        self, statements: Sequence[tuple[str, Sequence[Any] | Sequence[Sequence[Any]], bool]]
    ) -> None:
        """Run (sql, params, many) statements in one IMMEDIATE transaction."""
        conn = self._conn()
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                for sql, params, many in statements:
                    if many:
                        conn.executemany(sql, params)  # type: ignore[arg-type, unused-ignore]
                    else:
                        conn.execute(sql, params)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _migrate(self) -> None:
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
                current = row[0] or 0
                latest = MIGRATIONS[-1].version
                if current > latest:
                    raise StoreError(
                        f"store {self._path!r} has schema version {current}, newer than this "
                        f"learnloop knows ({latest}); upgrade learnloop"
                    )
                for migration in MIGRATIONS:
                    if migration.version > current:
                        for statement in migration.statements:
                            conn.execute(render(statement, "sqlite"))
                        conn.execute(
                            "INSERT INTO schema_version (version) VALUES (?)", (migration.version,)
                        )
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                conn.execute("ROLLBACK") if conn.in_transaction else None
                raise StoreError(
                    f"cannot open SQLite store {self._path!r}: {exc}; is it a learnloop "
                    "database file?"
                ) from None
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def schema_version(self) -> int:
        row = self._conn().execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        """Close every connection; later calls raise ClosedError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- episodes ---------------------------------------------------------------------

    def add_episodes(self, episodes: Sequence[Episode]) -> None:
        rows = [episode_row(e) for e in episodes]
        self.add_episode_rows(rows)

    def add_episode_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert prepared :func:`episode_row` tuples (the recorder's fast path).

        Up to ``_ROWS_PER_INSERT`` rows go in one multi-row INSERT, which SQLite
        runs as a transaction of its own (more rows: several, in one transaction).
        Why: the sqlite3 module releases the GIL while SQLite runs a statement and
        must win it back afterwards, which takes up to a switch interval (5 ms) per
        busy thread when recording threads keep the GIL busy; a statement per row
        paid that per row, and the recorder's writer fell behind (measured with 4
        busy threads: 4,000 rows of 11 KB took 1.7-2.4 s in statements of 128
        rows, 0.5-1.2 s in statements of 4,096). A later row with the id of an
        earlier one replaces it, as when written one by one.
        """
        if not rows:
            return
        conn = self._conn()
        # Old SQLite builds allow only 999 parameters per statement (newer: 32,766+).
        per_insert = min(
            _ROWS_PER_INSERT, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _NUM_COLUMNS
        )
        statements: list[tuple[str, Sequence[Any], bool]] = []
        group: list[tuple[Any, ...]] = []
        group_chars = 0
        for row in rows:
            group.append(row)
            group_chars += len(row[-1])
            # SQLite copies bound text: bound the bodies one statement holds, too
            if len(group) == per_insert or group_chars >= _MAX_BODY_CHARS_PER_INSERT:
                statements.append(_upsert_statement(group))
                group, group_chars = [], 0
        if group:
            statements.append(_upsert_statement(group))
        if len(statements) == 1:
            sql, params, _ = statements[0]
            with self._write_lock:
                conn.execute(sql, params)  # autocommit: one statement, one transaction
        else:
            self._write(statements)

    def get_episode(self, episode_id: str) -> Episode:
        row = (
            self._conn().execute("SELECT body FROM episodes WHERE id = ?", (episode_id,)).fetchone()
        )
        if row is None:
            raise NotFoundError(f"no episode with id {episode_id!r} in {self.url}")
        return Episode.from_dict(orjson.loads(row[0]))

    def _where(self, query: EpisodeQuery) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if query.agent_id is not None:
            clauses.append("agent_id = ?")
            params.append(query.agent_id)
        if query.kind is not None:
            clauses.append("kind = ?")
            params.append(query.kind)
        if query.statuses is not None:
            if not query.statuses:
                clauses.append("0")
            else:
                clauses.append(f"status IN ({','.join('?' * len(query.statuses))})")
                params.extend(s.value for s in query.statuses)
        if query.task_contains is not None:
            clauses.append("instr(task, ?) > 0")
            params.append(query.task_contains)
        if query.started_after is not None:
            clauses.append("started_at >= ?")
            params.append(query.started_after)
        if query.started_before is not None:
            clauses.append("started_at < ?")
            params.append(query.started_before)
        if query.parent_id is not None:
            clauses.append("parent_id = ?")
            params.append(query.parent_id)
        if query.roots_only:
            clauses.append("parent_id IS NULL")
        for name, value in query.metadata.items():
            check_field_name(name)
            if value is None:
                clauses.append(f"json_extract(body, '$.metadata.{name}') IS NULL")
            else:
                clauses.append(f"json_extract(body, '$.metadata.{name}') = ?")
                params.append(int(value) if isinstance(value, bool) else value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def query_episodes(self, query: EpisodeQuery = EpisodeQuery()) -> list[Episode]:
        where, params = self._where(query)
        order = "DESC" if query.newest_first else "ASC"
        sql = f"SELECT body FROM episodes{where} ORDER BY started_at {order}, id {order}"
        if query.limit is not None or query.offset:
            sql += " LIMIT ? OFFSET ?"
            params += [query.limit if query.limit is not None else -1, query.offset]
        rows = self._conn().execute(sql, params).fetchall()
        return [Episode.from_dict(orjson.loads(r[0])) for r in rows]

    def iter_episodes(
        self, query: EpisodeQuery = EpisodeQuery(), *, page_size: int = 500
    ) -> Iterator[Episode]:
        if page_size < 1:
            raise InvalidInputError(f"page_size must be >= 1, got {page_size}")
        where, params = self._where(query)
        return iter_keyset(
            query,
            where,
            params,
            page_size=page_size,
            placeholder="?",
            body="body",
            fetch=lambda sql, args: self._conn().execute(sql, args).fetchall(),
        )

    def count_episodes(self, query: EpisodeQuery = EpisodeQuery()) -> int:
        where, params = self._where(query)
        row = self._conn().execute(f"SELECT COUNT(*) FROM episodes{where}", params).fetchone()
        return int(row[0])

    def delete_episodes(self, episode_ids: Sequence[str]) -> int:
        """Delete episodes by id; returns how many existed."""
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = 0
                for episode_id in episode_ids:
                    deleted += conn.execute(
                        "DELETE FROM episodes WHERE id = ?", (episode_id,)
                    ).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return deleted

    def children(self, episode_id: EpisodeId) -> list[Episode]:
        """Direct sub-episodes of ``episode_id`` (shortcut for a parent query)."""
        return self.query_episodes(EpisodeQuery(parent_id=episode_id))

    # --- documents --------------------------------------------------------------------

    def get_document(self, collection: str, key: str) -> Document | None:
        row = (
            self._conn()
            .execute(
                "SELECT revision, data, updated_at FROM documents WHERE collection = ? AND key = ?",
                (collection, key),
            )
            .fetchone()
        )
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
        body = dump_json(dict(data))
        now = time.time()
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT revision FROM documents WHERE collection = ? AND key = ?",
                    (collection, key),
                ).fetchone()
                current = row[0] if row else 0
                if expected_revision is not None and expected_revision != current:
                    raise ConflictError(
                        f"document {collection}/{key} is at revision {current}, not "
                        f"{expected_revision}; re-read it and retry"
                    )
                revision = current + 1
                conn.execute(
                    "INSERT INTO documents (collection, key, revision, data, updated_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (collection, key) DO UPDATE SET "
                    "revision = excluded.revision, data = excluded.data, "
                    "updated_at = excluded.updated_at",
                    (collection, key, revision, body, now),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return Document(collection, key, revision, orjson.loads(body), now)

    def list_documents(
        self,
        collection: str,
        *,
        prefix: str | None = None,
        where: Mapping[str, DocumentFilterValue] | None = None,
        limit: int | None = None,
    ) -> list[Document]:
        clauses = ["collection = ?"]
        params: list[Any] = [collection]
        if prefix:
            clauses.append("substr(key, 1, ?) = ?")
            params += [len(prefix), prefix]
        for name, value in (where or {}).items():
            check_field_name(name)
            if value is None:
                clauses.append(f"json_extract(data, '$.{name}') IS NULL")
            else:
                clauses.append(f"json_extract(data, '$.{name}') = ?")
                params.append(int(value) if isinstance(value, bool) else value)
        sql = (
            "SELECT key, revision, data, updated_at FROM documents WHERE "
            + " AND ".join(clauses)
            + " ORDER BY key"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._conn().execute(sql, params).fetchall()
        return [Document(collection, r[0], r[1], orjson.loads(r[2]), r[3]) for r in rows]

    def delete_document(
        self, collection: str, key: str, *, expected_revision: int | None = None
    ) -> bool:
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT revision FROM documents WHERE collection = ? AND key = ?",
                    (collection, key),
                ).fetchone()
                current = row[0] if row else 0
                if expected_revision is not None and expected_revision != current:
                    raise ConflictError(
                        f"document {collection}/{key} is at revision {current}, not "
                        f"{expected_revision}; re-read it and retry"
                    )
                if row is not None:
                    conn.execute(
                        "DELETE FROM documents WHERE collection = ? AND key = ?", (collection, key)
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return row is not None


_UPSERT_EPISODE = (
    "INSERT INTO episodes (id, agent_id, kind, status, parent_id, task, started_at, ended_at, "
    "total_reward, num_steps, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET agent_id = excluded.agent_id, kind = excluded.kind, "
    "status = excluded.status, parent_id = excluded.parent_id, task = excluded.task, "
    "started_at = excluded.started_at, ended_at = excluded.ended_at, "
    "total_reward = excluded.total_reward, num_steps = excluded.num_steps, body = excluded.body"
)

_ROWS_PER_INSERT = 4096
_EPISODE_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_NUM_COLUMNS = _EPISODE_VALUES.count("?")


_MAX_BODY_CHARS_PER_INSERT = 64_000_000


def _upsert_statement(rows: Sequence[tuple[Any, ...]]) -> tuple[str, list[Any], bool]:
    """One multi-row upsert of ``rows``, as ``_write`` takes statements."""
    return _upsert_episodes(len(rows)), [value for row in rows for value in row], False


@functools.lru_cache(maxsize=64)
def _upsert_episodes(num_rows: int) -> str:
    """The upsert of ``num_rows`` episode rows in one statement."""
    head, _, tail = _UPSERT_EPISODE.partition(_EPISODE_VALUES)
    return head + ", ".join([_EPISODE_VALUES] * num_rows) + tail
