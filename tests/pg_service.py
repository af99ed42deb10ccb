"""A throw-away PostgreSQL server for tests and benchmarks.

:class:`PostgresServer` runs ``initdb`` into a temporary folder and starts
``postgres`` on ``127.0.0.1`` at a free port, with its unix socket in the same
folder and durability left on (``fsync=on``, ``synchronous_commit=on``). PostgreSQL
refuses to run as root, so when started by root the server runs as the
unprivileged ``postgres`` user (created by the Debian package) via ``runuser``.

:func:`postgres_url_for_tests` is what the pytest fixtures call: it honours
``$LEARNLOOP_TEST_POSTGRES_URL`` (an existing server), else starts a local one,
else skips the test — or fails it under CI (``$CI`` set), where the binaries must
be present.

    server = PostgresServer.start()
    url = server.create_database("scratch")   # postgresql://postgres@127.0.0.1:PORT/scratch
    ...
    server.stop()
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "TEST_URL_ENV_VAR",
    "PostgresServer",
    "drop_schemas",
    "find_postgres_bin",
    "new_schema",
    "postgres_url_for_tests",
    "with_search_path",
]

TEST_URL_ENV_VAR = "LEARNLOOP_TEST_POSTGRES_URL"
_RUN_AS = "postgres"


def find_postgres_bin() -> str | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (newest version), or None."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return os.path.dirname(on_path)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0,
    )
    return os.path.dirname(candidates[-1]) if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A running throw-away server; :meth:`stop` shuts it down and deletes its data."""

    folder: str
    bin_dir: str
    port: int
    run_as: str | None

    @classmethod
    def start(cls, *, bin_dir: str | None = None, timeout_s: float = 60.0) -> PostgresServer:
        """initdb into a new temp folder and start the server (about 2-6 s)."""
        bin_dir = bin_dir or find_postgres_bin()
        if bin_dir is None:
            raise FileNotFoundError(
                "PostgreSQL binaries not found (no initdb on PATH or in /usr/lib/postgresql/*/bin); "
                "install them with: apt-get install -y postgresql"
            )
        run_as = _RUN_AS if os.geteuid() == 0 else None
        if run_as is not None:
            try:
                pwd.getpwnam(run_as)
            except KeyError:
                raise FileNotFoundError(
                    f"PostgreSQL refuses to run as root and there is no {run_as!r} user to run "
                    f"it as; create one (useradd --system {run_as}) or run as another user"
                ) from None
        folder = tempfile.mkdtemp(prefix="learnloop-pg-")
        if run_as is not None:
            shutil.chown(folder, user=run_as, group=None)
        server = cls(folder=folder, bin_dir=bin_dir, port=_free_port(), run_as=run_as)
        try:
            server._initdb()
            server._pg_ctl_start(timeout_s)
        except BaseException:
            server.stop()
            raise
        return server

    @property
    def data_dir(self) -> str:
        return os.path.join(self.folder, "data")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout_s: float = 120.0) -> None:
        command = list(args)
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, cwd=self.folder, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}): {done.stderr or done.stdout}"
            )

    def _initdb(self) -> None:
        self._run(
            os.path.join(self.bin_dir, "initdb"),
            "-D",
            self.data_dir,
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
            "--no-sync",  # the cluster is thrown away; the running server still fsyncs
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.folder}'",
            "fsync": "on",
            "synchronous_commit": "on",
            "max_connections": "200",
            "shared_buffers": "128MB",
            "max_wal_size": "1GB",
            "logging_collector": "off",
        }
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a", encoding="utf-8") as conf:
            conf.write("\n# learnloop throw-away server\n")
            for name, value in settings.items():
                conf.write(f"{name} = {value}\n")

    def _pg_ctl_start(self, timeout_s: float) -> None:
        self._run(
            os.path.join(self.bin_dir, "pg_ctl"),
            "-D",
            self.data_dir,
            "-l",
            os.path.join(self.folder, "server.log"),
            "-w",
            "-t",
            str(int(timeout_s)),
            "start",
            timeout_s=timeout_s + 10,
        )

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once and delete its folder (data is thrown away). Idempotent."""
        if os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
            self._run(
                os.path.join(self.bin_dir, "pg_ctl"),
                "-D",
                self.data_dir,
                "-m",
                "immediate",  # no shutdown checkpoint: nothing here is kept
                "-w",
                "stop",
                timeout_s=60,
            )
        shutil.rmtree(self.folder, ignore_errors=True)


def with_search_path(url: str, schema: str) -> str:
    """``url`` with its connections' ``search_path`` set to ``schema``."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


def new_schema(url: str, prefix: str = "t") -> tuple[str, str]:
    """Create an empty schema in the database at ``url``; returns (schema, its URL)."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return schema, with_search_path(url, schema)


def drop_schemas(url: str, schemas: list[str]) -> None:
    """Drop ``schemas`` and everything in them."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def postgres_url_for_tests() -> tuple[str, PostgresServer | None]:
    """An admin URL of a server to test against, and the server if we started it.

    Raises ``pytest.skip`` when no server can be had locally, or ``pytest.fail``
    under CI (``$CI`` set) where PostgreSQL must be available.
    """
    import pytest

    url = os.environ.get(TEST_URL_ENV_VAR)
    if url:
        return url, None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        reason = "psycopg is not installed: pip install -e '.[postgres]'"
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests cannot run under CI: {reason}")
        pytest.skip(reason)
    if find_postgres_bin() is None:
        reason = (
            "PostgreSQL binaries not found: apt-get install -y postgresql, or set "
            f"{TEST_URL_ENV_VAR}=postgresql://user@host/db"
        )
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests cannot run under CI: {reason}")
        pytest.skip(reason)
    server = PostgresServer.start()
    return server.url(), server
