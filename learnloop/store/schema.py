"""The tables every SQL backend shares, as ordered migrations.

Schema changes are new migrations appended here, never edits of old ones: a store
records the highest version applied in ``schema_version`` and applies the rest in
one transaction on open. Statements use ``{json}``, ``{float}`` and ``{bigint}``
for the few types whose names differ between SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "Migration", "render"]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "episodes and documents",
        (
            """CREATE TABLE episodes (
                id TEXT PRIMARY KEY,
                agent_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                status TEXT NOT NULL,
                parent_id TEXT,
                task TEXT NOT NULL,
                started_at {float} NOT NULL,
                ended_at {float},
                total_reward {float} NOT NULL,
                num_steps INTEGER NOT NULL,
                body {json} NOT NULL
            )""",
            "CREATE INDEX episodes_started ON episodes (started_at, id)",
            "CREATE INDEX episodes_agent ON episodes (agent_id, started_at)",
            "CREATE INDEX episodes_status ON episodes (status, started_at)",
            "CREATE INDEX episodes_kind ON episodes (kind, started_at)",
            "CREATE INDEX episodes_parent ON episodes (parent_id)",
            """CREATE TABLE documents (
                collection TEXT NOT NULL,
                key TEXT NOT NULL,
                revision INTEGER NOT NULL,
                data {json} NOT NULL,
                updated_at {float} NOT NULL,
                PRIMARY KEY (collection, key)
            )""",
        ),
    ),
)

_TYPES = {
    "sqlite": {"json": "TEXT", "float": "REAL", "bigint": "INTEGER"},
    # JSON, not JSONB: JSONB turns -0.0 into 0.0 and prints 1.7976931348623157e308 as a
    # 309-digit integer, so floats would not round-trip; JSON also wrote and read faster.
    "postgresql": {"json": "JSON", "float": "DOUBLE PRECISION", "bigint": "BIGINT"},
}


def render(statement: str, dialect: str) -> str:
    """The statement with its type placeholders filled in for ``dialect``."""
    return statement.format(**_TYPES[dialect])
