"""The store contract: episodes, plus small versioned documents for everything else.

Two protocols, implemented together by every backend (SQLite, PostgreSQL):

* :class:`EpisodeStore` — add episodes in batches (upsert by id), get one, query with
  filters, iterate in pages for training, count.
* :class:`DocumentStore` — JSON documents addressed by ``(collection, key)`` with a
  revision number for compare-and-set. Jobs, registry versions and labels,
  experiments and bandit state are documents, so every backend gets them for free
  and concurrent writers are safe: a write that names a stale revision raises
  :class:`~learnloop.errors.ConflictError` instead of overwriting.

The contract is tested by one suite, :mod:`learnloop.store.testing`, run against
every backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from learnloop.episode import Episode, EpisodeId, JSONValue, OutcomeStatus
from learnloop.errors import InvalidInputError

__all__ = [
    "Document",
    "DocumentStore",
    "EpisodeQuery",
    "EpisodeStore",
    "Store",
]

#: Scalar values a document filter can match on.
DocumentFilterValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class EpisodeQuery:
    """Filters for :meth:`EpisodeStore.query`; every field left at None matches all."""

    agent_id: str | None = None
    """Only episodes of this agent."""
    kind: str | None = None
    """Only episodes of this kind."""
    statuses: tuple[OutcomeStatus, ...] | None = None
    """Only episodes whose status is one of these."""
    task_contains: str | None = None
    """Only episodes whose task text contains this substring (case-sensitive)."""
    started_after: float | None = None
    """Only episodes started at or after this Unix time."""
    started_before: float | None = None
    """Only episodes started strictly before this Unix time."""
    parent_id: EpisodeId | None = None
    """Only the direct children of this episode."""
    roots_only: bool = False
    """Only episodes without a parent."""
    metadata: Mapping[str, DocumentFilterValue] = field(default_factory=dict)
    """Only episodes whose top-level metadata has these exact values."""
    limit: int | None = None
    """At most this many episodes (None: all)."""
    offset: int = 0
    """Skip this many matching episodes first (ordered by start time, then id)."""
    newest_first: bool = False
    """Order by start time descending instead of ascending."""

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise InvalidInputError(f"limit must be >= 0 or None, got {self.limit}")
        if self.offset < 0:
            raise InvalidInputError(f"offset must be >= 0, got {self.offset}")
        if self.statuses is not None:
            object.__setattr__(self, "statuses", tuple(OutcomeStatus(s) for s in self.statuses))


@dataclass(frozen=True, slots=True)
class Document:
    """A JSON object stored under ``(collection, key)`` at a revision (1, 2, ...)."""

    collection: str
    key: str
    revision: int
    data: dict[str, Any]
    updated_at: float


@runtime_checkable
class EpisodeStore(Protocol):
    """Where episodes live. Writes are atomic per call: all of a batch, or none."""

    def add_episodes(self, episodes: Sequence[Episode]) -> None:
        """Insert or replace (by id) a batch of episodes in one transaction."""
        ...

    def get_episode(self, episode_id: str) -> Episode:
        """The episode with this id; raises NotFoundError."""
        ...

    def query_episodes(self, query: EpisodeQuery = EpisodeQuery()) -> list[Episode]:
        """Episodes matching ``query``, ordered by start time then id."""
        ...

    def iter_episodes(
        self, query: EpisodeQuery = EpisodeQuery(), *, page_size: int = 500
    ) -> Iterator[Episode]:
        """Like :meth:`query_episodes`, fetched ``page_size`` at a time (for training)."""
        ...

    def count_episodes(self, query: EpisodeQuery = EpisodeQuery()) -> int:
        """How many episodes match ``query`` (ignoring its limit and offset)."""
        ...


@runtime_checkable
class DocumentStore(Protocol):
    """Small JSON documents with compare-and-set, for jobs, registry, experiments."""

    def get_document(self, collection: str, key: str) -> Document | None:
        """The document, or None if absent."""
        ...

    def put_document(
        self,
        collection: str,
        key: str,
        data: Mapping[str, JSONValue],
        *,
        expected_revision: int | None = None,
    ) -> Document:
        """Write ``data``; returns the stored document with its new revision.

        ``expected_revision=None`` writes unconditionally; ``0`` requires that the
        document does not exist yet; ``n > 0`` requires the stored revision to be
        ``n``. A mismatch raises ConflictError and writes nothing.
        """
        ...

    def list_documents(
        self,
        collection: str,
        *,
        prefix: str | None = None,
        where: Mapping[str, DocumentFilterValue] | None = None,
        limit: int | None = None,
    ) -> list[Document]:
        """Documents of ``collection`` ordered by key, optionally filtered by key
        prefix and by exact values of top-level fields of ``data``."""
        ...

    def delete_document(
        self, collection: str, key: str, *, expected_revision: int | None = None
    ) -> bool:
        """Delete; True if something was deleted. Revision check as in put."""
        ...


class Store(EpisodeStore, DocumentStore, Protocol):
    """What a backend provides: both protocols, its URL, ``close``, and use in ``with``."""

    @property
    def url(self) -> str: ...

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc: object) -> None: ...
