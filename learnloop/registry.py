"""The registry: immutable versions of prompts, policies and checkpoints, with labels.

Every improvement learnloop finds is registered as a new :class:`Version` of a named
resource (a prompt for an agent role, a bandit policy, a model checkpoint). Versions
never change once written; they carry the sha256 of their canonical content, who
made them (author) and what made them (source: a job id, an optimizer run). Movable
labels point at versions: ``production`` (what agents run), ``candidate`` (what is
being tried), any user label, and ``latest``, which the registry moves on every
registration. Protected labels (``production`` by default) can be created freely but
moved only with ``force=True``; every move is kept with who, when, from, to and why.

Everything is stored through the :class:`~learnloop.store.DocumentStore` protocol,
so it works unchanged on every backend:

* ``registry_versions/{name}/{version:06d}`` — one document per version (immutable);
* ``registry_resources/{name}`` — an index: kind, latest version number and the
  content hash -> version map used to de-duplicate registrations;
* ``registry_labels/{name}/{label}`` — the version a label points at and its moves.

Version numbers are claimed by writing the version document with
``expected_revision=0`` (compare-and-set), so two concurrent registrations never get
the same number; a registration left half-done by a crash is folded into the index by
the next one.

>>> import os, tempfile
>>> from learnloop.store import open_store
>>> registry = Registry(open_store(os.path.join(tempfile.mkdtemp(), "r.db")))
>>> v1 = registry.register("planner", "You plan tool calls.", author="ana", source="manual")
>>> v2 = registry.register_candidate("planner", "You plan tool calls. Be brief.", source="apo-7")
>>> (v1.version, v2.version, registry.get("planner", "candidate").version)
(1, 2, 2)
>>> registry.set_label("planner", "production", 1).version
1
>>> print(registry.diff("planner", 1, 2).splitlines()[-1])
+You plan tool calls. Be brief.
"""

from __future__ import annotations

import difflib
import getpass
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from learnloop.episode import JSONValue
from learnloop.errors import ConfigError, ConflictError, InvalidInputError, NotFoundError
from learnloop.store.base import DocumentStore

__all__ = [
    "CANDIDATE",
    "LATEST",
    "PRODUCTION",
    "Label",
    "LabelMove",
    "Registry",
    "RegistryConfig",
    "ResourceSummary",
    "Version",
    "content_sha256",
    "file_sha256",
    "parse_version_ref",
]

logger = logging.getLogger(__name__)

VERSIONS = "registry_versions"
RESOURCES = "registry_resources"
LABELS = "registry_labels"

LATEST = "latest"
PRODUCTION = "production"
CANDIDATE = "candidate"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_VERSION_REF = re.compile(r"^v?(\d+)$")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryConfig:
    """How the registry guards labels and retries concurrent writes."""

    protected_labels: frozenset[str] = frozenset({PRODUCTION})
    """Labels that can be created freely but moved only with ``force=True``."""
    max_label_moves: int = 200
    """Moves kept per label (oldest dropped first), so label documents stay small."""
    max_attempts: int = 1000
    """Compare-and-set retries before a write gives up with ConflictError."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "protected_labels", frozenset(self.protected_labels))
        if LATEST in self.protected_labels:
            raise ConfigError(
                f"protected_labels {sorted(self.protected_labels)} contains {LATEST!r}, which "
                "the registry moves on every registration; remove it"
            )
        if self.max_label_moves < 1:
            raise ConfigError(f"max_label_moves must be >= 1, got {self.max_label_moves}")
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Version:
    """One immutable version of a named resource."""

    name: str
    """The resource, e.g. ``"planner"`` (a prompt role) or ``"tool-policy"``."""
    version: int
    """1, 2, ... in registration order."""
    kind: str
    """``"prompt"``, ``"policy"``, ``"checkpoint"`` or any other kind."""
    content: JSONValue
    """The prompt text, a JSON payload (policy state), or a checkpoint's path or URI."""
    content_hash: str
    """sha256 (hex) of the canonical content, plus the artifact digest when there is one."""
    artifact_sha256: str | None = None
    """For checkpoints on local disk: sha256 of the file (or of the folder's files)."""
    author: str = "unknown"
    """Who registered it."""
    source: str | None = None
    """What made it: a job id, an optimizer run, ``"manual"``."""
    created_at: float = 0.0
    """Unix time of registration."""
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)
    """Anything else: scores, hyperparameters, parent version."""

    @property
    def ref(self) -> str:
        """The version as episodes record it in ``Episode.versions``: ``"v3"``."""
        return f"v{self.version}"

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "content": self.content,
            "content_hash": self.content_hash,
            "artifact_sha256": self.artifact_sha256,
            "author": self.author,
            "source": self.source,
            "created_at": self.created_at,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, JSONValue]) -> Version:
        return cls(
            name=data["name"],
            version=int(data["version"]),
            kind=data["kind"],
            content=data.get("content"),
            content_hash=data["content_hash"],
            artifact_sha256=data.get("artifact_sha256"),
            author=data.get("author", "unknown"),
            source=data.get("source"),
            created_at=float(data.get("created_at", 0.0)),
            metadata=data.get("metadata") or {},
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelMove:
    """One move of a label: from which version to which, by whom, when and why."""

    label: str
    """The label moved."""
    from_version: int | None
    """Where it pointed before (None when it was created)."""
    to_version: int
    """Where it points now."""
    actor: str
    """Who moved it."""
    at: float
    """Unix time of the move."""
    reason: str | None = None
    """Why, when given."""
    forced: bool = False
    """Whether ``force=True`` overrode a protected label."""

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "label": self.label,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "actor": self.actor,
            "at": self.at,
            "reason": self.reason,
            "forced": self.forced,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, JSONValue]) -> LabelMove:
        return cls(
            label=data["label"],
            from_version=data.get("from_version"),
            to_version=int(data["to_version"]),
            actor=data.get("actor", "unknown"),
            at=float(data["at"]),
            reason=data.get("reason"),
            forced=bool(data.get("forced", False)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Label:
    """A label of a resource and where it points."""

    name: str
    """The resource."""
    label: str
    """The label, e.g. ``"production"``."""
    version: int
    """The version it points at."""
    moves: tuple[LabelMove, ...] = ()
    """Its moves, oldest first (at most ``RegistryConfig.max_label_moves``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceSummary:
    """One line of :meth:`Registry.resources`."""

    name: str
    """The resource."""
    kind: str
    """Its kind."""
    num_versions: int
    """How many versions it has (the latest version number)."""
    labels: Mapping[str, int]
    """Label -> version."""


def content_sha256(content: JSONValue, artifact_sha256: str | None = None) -> str:
    """sha256 (hex) of ``content`` in canonical form.

    Text is hashed as its UTF-8 bytes; anything else as JSON with sorted keys, no
    whitespace and no ASCII escaping. An artifact digest, when given, is appended
    after a newline, so the same path with different bytes gets a different hash.

    >>> content_sha256("abc")[:16]
    'ba7816bf8f01cfea'
    """
    if isinstance(content, str):
        body = content.encode("utf-8")
    else:
        try:
            body = json.dumps(
                content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"content of type {type(content).__name__} is not JSON ({exc}); pass text, "
                "a JSON-safe dict/list, or a checkpoint path"
            ) from None
    if artifact_sha256 is not None:
        body += b"\n" + artifact_sha256.encode("ascii")
    return hashlib.sha256(body).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file's bytes, or of a folder's files.

    A folder is hashed as the sorted list of ``relative/path\\0<file sha256>\\n`` lines,
    so a checkpoint saved as a folder (weights, config, tokenizer) gets one digest.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        lines = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                rel = os.path.relpath(full, path).replace(os.sep, "/")
                lines.append(f"{rel}\0{file_sha256(full)}\n")
        return hashlib.sha256("".join(sorted(lines)).encode("utf-8")).hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_version_ref(ref: str | int) -> int | None:
    """The version number ``ref`` names (``3``, ``"3"``, ``"v3"``), or None for a label."""
    if isinstance(ref, bool):
        raise InvalidInputError(f"version reference must be an int or a str, got {ref!r}")
    if isinstance(ref, int):
        return ref
    match = _VERSION_REF.match(ref.strip())
    return int(match.group(1)) if match else None


def _default_author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


class Registry:
    """Versions and labels of named resources, on any :class:`DocumentStore`.

    Args:
        store: where versions and labels live.
        config: label protection and retry limits.
        clock: returns the current Unix time (inject a fake one in tests).
    """

    def __init__(
        self,
        store: DocumentStore,
        config: RegistryConfig = RegistryConfig(),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock

    @property
    def store(self) -> DocumentStore:
        return self._store

    @property
    def config(self) -> RegistryConfig:
        return self._config

    # --- registration -----------------------------------------------------------------

    def register(
        self,
        name: str,
        content: JSONValue,
        *,
        kind: str = "prompt",
        author: str | None = None,
        source: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        dedupe: bool = True,
    ) -> Version:
        """Register ``content`` as the next version of ``name`` and move ``latest``.

        With ``dedupe`` (the default), content identical to an existing version (same
        content hash) returns that version instead of creating a new one. For
        ``kind="checkpoint"`` the content is a path or URI; a local file or folder is
        hashed into :attr:`Version.artifact_sha256`.

        Raises:
            ConfigError: bad name, or a kind other than the resource's.
            InvalidInputError: content that is not text or JSON.
            ConflictError: compare-and-set kept failing (``max_attempts``).
        """
        _check_name(name)
        if not isinstance(kind, str) or not kind:
            raise ConfigError(f"kind must be a non-empty string, got {kind!r}")
        artifact = None
        if kind == "checkpoint":
            if not isinstance(content, str) or not content:
                raise InvalidInputError(
                    f"a checkpoint's content is its path or URI (a string), got {content!r}"
                )
            if os.path.exists(content):
                artifact = file_sha256(content)
        digest = content_sha256(content, artifact)
        version_data = {
            "name": name,
            "kind": kind,
            "content": content,
            "content_hash": digest,
            "artifact_sha256": artifact,
            "author": author or _default_author(),
            "source": source,
            "metadata": dict(metadata or {}),
        }
        for _ in range(self._config.max_attempts):
            index = self._store.get_document(RESOURCES, name)
            state = _index_state(index.data if index else None, name, kind)
            if dedupe and digest in state["hashes"]:
                return self.get_version(name, state["hashes"][digest])
            number = state["latest"] + 1
            key = _version_key(name, number)
            existing = self._store.get_document(VERSIONS, key)
            if existing is not None:
                # A registration in flight (or one that crashed) claimed this number:
                # fold it into the index, then look again.
                self._fold(index, state, existing.data)
                continue
            record = {**version_data, "version": number, "created_at": self._clock()}
            try:
                self._store.put_document(VERSIONS, key, record, expected_revision=0)
            except ConflictError:
                continue
            version = Version.from_dict(record)
            self._index_version(version)
            self._move(name, LATEST, number, actor=version.author, reason="registered",
                       force=True, only_forward=True)
            logger.info("registered %s v%d (%s, source=%s)", name, number, kind, source)
            return version
        raise ConflictError(
            f"could not register a version of {name!r} after {self._config.max_attempts} "
            "attempts (too many concurrent writers); retry later"
        )

    def register_candidate(
        self,
        name: str,
        content: JSONValue,
        *,
        source: str | None,
        kind: str = "prompt",
        author: str | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
        label: str = CANDIDATE,
        reason: str | None = None,
    ) -> Version:
        """Register ``content`` and point the ``candidate`` label at it, in one call.

        This is how the prompt optimizer hands over its best prompt and a training job
        its best checkpoint (``kind="checkpoint"``, content = the checkpoint path).
        """
        version = self.register(
            name, content, kind=kind, author=author, source=source, metadata=metadata
        )
        self.set_label(
            name, label, version.version, actor=version.author,
            reason=reason or f"candidate from {source or 'unknown source'}",
        )
        return version

    def _fold(self, index: Any, state: dict[str, Any], version: Mapping[str, Any]) -> None:
        state["latest"] = max(state["latest"], int(version["version"]))
        state["hashes"].setdefault(version["content_hash"], int(version["version"]))
        try:
            self._store.put_document(
                RESOURCES, state["name"], state,
                expected_revision=index.revision if index else 0,
            )
        except ConflictError:
            # Another writer updated the index first; the caller re-reads it and retries.
            logger.debug("registry index of %r changed concurrently; re-reading", state["name"])

    def _index_version(self, version: Version) -> None:
        for _ in range(self._config.max_attempts):
            index = self._store.get_document(RESOURCES, version.name)
            state = _index_state(index.data if index else None, version.name, version.kind)
            if state["latest"] >= version.version and state["hashes"].get(version.content_hash):
                return
            state["latest"] = max(state["latest"], version.version)
            state["hashes"].setdefault(version.content_hash, version.version)
            try:
                self._store.put_document(
                    RESOURCES, version.name, state,
                    expected_revision=index.revision if index else 0,
                )
                return
            except ConflictError:
                continue
        raise ConflictError(f"could not index {version.name} v{version.version}; retry")

    # --- reading ----------------------------------------------------------------------

    def get(self, name: str, ref: str | int = LATEST) -> Version:
        """The version ``ref`` names: a number (``3``, ``"3"``, ``"v3"``) or a label.

        Raises:
            NotFoundError: no such resource, version or label.
        """
        number = parse_version_ref(ref)
        if number is not None:
            return self.get_version(name, number)
        return self.get_version(name, self.resolve(name, str(ref)))

    def get_version(self, name: str, version: int) -> Version:
        """Version number ``version`` of ``name``; raises NotFoundError."""
        doc = self._store.get_document(VERSIONS, _version_key(name, version))
        if doc is None:
            latest = self._latest_number(name)
            hint = (
                f"{name!r} has versions 1..{latest}" if latest
                else f"no resource named {name!r}; register it first"
            )
            raise NotFoundError(f"no version {version} of {name!r}: {hint}")
        return Version.from_dict(doc.data)

    def resolve(self, name: str, label: str) -> int:
        """The version number ``label`` points at; raises NotFoundError."""
        doc = self._store.get_document(LABELS, f"{name}/{label}")
        if doc is None:
            known = sorted(self.labels(name))
            raise NotFoundError(
                f"{name!r} has no label {label!r}; its labels are {known or 'none'} "
                f"(set one with set_label or 'learnloop registry label')"
            )
        return int(doc.data["version"])

    def labels(self, name: str) -> dict[str, int]:
        """Label -> version number for ``name``."""
        docs = self._store.list_documents(LABELS, prefix=f"{name}/")
        return {d.data["label"]: int(d.data["version"]) for d in docs if d.data["name"] == name}

    def label(self, name: str, label: str) -> Label:
        """The label with its recorded moves; raises NotFoundError."""
        doc = self._store.get_document(LABELS, f"{name}/{label}")
        if doc is None:
            self.resolve(name, label)  # raises with the known labels
        assert doc is not None
        return Label(
            name=name,
            label=label,
            version=int(doc.data["version"]),
            moves=tuple(LabelMove.from_dict(m) for m in doc.data.get("moves", ())),
        )

    def versions(self, name: str) -> list[Version]:
        """Every version of ``name``, oldest first (empty if there is none)."""
        docs = self._store.list_documents(VERSIONS, prefix=f"{name}/")
        return [Version.from_dict(d.data) for d in docs if d.data["name"] == name]

    def history(self, name: str, label: str | None = None) -> list[LabelMove]:
        """Label moves of ``name`` (or of one label), oldest first."""
        if label is not None:
            return list(self.label(name, label).moves)
        docs = self._store.list_documents(LABELS, prefix=f"{name}/")
        moves = [
            LabelMove.from_dict(m) for d in docs if d.data["name"] == name
            for m in d.data.get("moves", ())
        ]
        return sorted(moves, key=lambda m: (m.at, m.label))

    def resources(self, *, kind: str | None = None) -> list[ResourceSummary]:
        """One summary per resource (optionally of one kind), ordered by name."""
        docs = self._store.list_documents(RESOURCES, where={"kind": kind} if kind else None)
        return [
            ResourceSummary(
                name=d.data["name"],
                kind=d.data["kind"],
                num_versions=int(d.data["latest"]),
                labels=self.labels(d.data["name"]),
            )
            for d in docs
        ]

    def diff(self, name: str, a: str | int, b: str | int, *, context: int = 3) -> str:
        """A unified diff from version ``a`` to version ``b`` (numbers or labels).

        Text is diffed line by line; JSON content as indented JSON with sorted keys.
        The result is empty when the contents are equal.
        """
        old, new = self.get(name, a), self.get(name, b)
        return "".join(
            difflib.unified_diff(
                _text_lines(old.content),
                _text_lines(new.content),
                fromfile=f"{name}@v{old.version}",
                tofile=f"{name}@v{new.version}",
                n=context,
            )
        )

    def _latest_number(self, name: str) -> int:
        doc = self._store.get_document(RESOURCES, name)
        return int(doc.data["latest"]) if doc else 0

    # --- labels -----------------------------------------------------------------------

    def set_label(
        self,
        name: str,
        label: str,
        version: int | str,
        *,
        force: bool = False,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Label:
        """Point ``label`` at ``version`` (a number, or another label to copy).

        Creating a protected label is allowed; moving one needs ``force=True``.
        ``latest`` cannot be set by hand.

        Raises:
            ConfigError: a bad label, ``latest``, or a protected label without force.
            NotFoundError: no such version.
        """
        _check_label(label)
        if label == LATEST:
            raise ConfigError(
                f"label {LATEST!r} moves automatically on every registration; choose another "
                "label (e.g. 'candidate')"
            )
        number = self.get(name, version).version  # raises NotFoundError
        return self._move(name, label, number, actor=actor or _default_author(),
                          reason=reason, force=force)

    def remove_label(
        self, name: str, label: str, *, force: bool = False, actor: str | None = None
    ) -> bool:
        """Delete ``label`` (protected ones need ``force``); True if it existed."""
        _check_label(label)
        if label == LATEST:
            raise ConfigError(f"label {LATEST!r} cannot be removed; it follows registrations")
        if label in self._config.protected_labels and not force:
            raise ConfigError(
                f"label {label!r} of {name!r} is protected; pass force=True (CLI: --force) "
                "to remove it"
            )
        removed = self._store.delete_document(LABELS, f"{name}/{label}")
        if removed:
            logger.info("%s removed label %s of %s", actor or _default_author(), label, name)
        return removed

    def _move(
        self,
        name: str,
        label: str,
        version: int,
        *,
        actor: str,
        reason: str | None,
        force: bool,
        only_forward: bool = False,
    ) -> Label:
        key = f"{name}/{label}"
        for _ in range(self._config.max_attempts):
            doc = self._store.get_document(LABELS, key)
            current = int(doc.data["version"]) if doc else None
            moves = [LabelMove.from_dict(m) for m in (doc.data.get("moves", ()) if doc else ())]
            if current == version or (only_forward and current is not None and current > version):
                return Label(name=name, label=label, version=current, moves=tuple(moves))
            protected = label in self._config.protected_labels and current is not None
            if protected and not force:
                raise ConfigError(
                    f"label {label!r} of {name!r} is protected (it points at v{current}); "
                    f"moving it to v{version} needs force=True (CLI: --force) and a reason"
                )
            move = LabelMove(
                label=label, from_version=current, to_version=version, actor=actor,
                at=self._clock(), reason=reason, forced=protected,
            )
            moves = [*moves, move][-self._config.max_label_moves :]
            data = {
                "name": name,
                "label": label,
                "version": version,
                "moves": [m.to_dict() for m in moves],
            }
            try:
                self._store.put_document(
                    LABELS, key, data, expected_revision=doc.revision if doc else 0
                )
            except ConflictError:
                continue
            if label != LATEST:
                logger.info("%s moved %s:%s v%s -> v%d (%s)", actor, name, label, current,
                            version, reason)
            return Label(name=name, label=label, version=version, moves=tuple(moves))
        raise ConflictError(
            f"could not move label {label!r} of {name!r} after {self._config.max_attempts} "
            "attempts; retry"
        )


def _version_key(name: str, version: int) -> str:
    return f"{name}/{version:06d}"


def _index_state(data: Mapping[str, Any] | None, name: str, kind: str) -> dict[str, Any]:
    if data is None:
        return {"name": name, "kind": kind, "latest": 0, "hashes": {}}
    if data["kind"] != kind:
        raise ConfigError(
            f"{name!r} holds {data['kind']!r} versions, not {kind!r}; register under "
            f"another name or pass kind={data['kind']!r}"
        )
    return {"name": name, "kind": kind, "latest": int(data["latest"]),
            "hashes": dict(data.get("hashes", {}))}


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"resource name {name!r} is not valid; use 1-128 letters, digits, '_', '.', ':' "
            "or '-', starting with a letter or digit (e.g. 'planner.system')"
        )


def _check_label(label: str) -> None:
    if not isinstance(label, str) or not _LABEL.match(label):
        raise ConfigError(
            f"label {label!r} is not valid; use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter (e.g. 'production', 'canary-2')"
        )


def _text_lines(content: JSONValue) -> Sequence[str]:
    if isinstance(content, str):
        text = content
    else:
        text = json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines
