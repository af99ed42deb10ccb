"""Atomic, verified training checkpoints: keep the latest plus the best by evaluation score.

Each checkpoint is two files in the folder: ``ckpt-000040.pt`` (``torch.save`` of
the training state) and ``ckpt-000040.json``, its manifest (iteration, score,
metrics, size and sha256 of the ``.pt``). Both are written to a temporary file,
fsynced and renamed into place, the manifest last, so a checkpoint without a
valid manifest never counts. Loading verifies size and hash and skips (with a
warning) anything corrupt or partial, falling back to the next newest.

>>> import tempfile
>>> manager = CheckpointManager(tempfile.mkdtemp(), keep_best=1)
>>> _ = manager.save({"w": 1}, iteration=10, score=0.5)
>>> _ = manager.save({"w": 2}, iteration=20, score=0.2)
>>> _ = manager.save({"w": 3}, iteration=30, score=None)
>>> [c.iteration for c in manager.list()]   # best (10) and latest (30)
[10, 30]
>>> manager.load_latest()[0]["w"]
3
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(f"{__name__} needs torch: pip install 'learnloop[train]' ({exc})") from exc

from learnloop.errors import ConfigError

__all__ = ["CheckpointInfo", "CheckpointManager"]

logger = logging.getLogger(__name__)

_FORMAT = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointInfo:
    """The manifest of one checkpoint."""

    iteration: int
    """Training iterations completed when it was written."""
    path: Path
    """The ``.pt`` file."""
    sha256: str
    """Hex digest of the ``.pt`` file."""
    size: int
    """Bytes of the ``.pt`` file."""
    score: float | None
    """Held-out evaluation score at this iteration, if evaluated."""
    metrics: Mapping[str, Any]
    """Metrics of the iteration (JSON)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, write: Any) -> None:
    """Write through ``write(handle)`` to a temp file, fsync, then rename onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class CheckpointManager:
    """Saves, lists, verifies and prunes the checkpoints of one run folder.

    Args:
        directory: where checkpoints live (created if missing).
        keep_best: how many checkpoints to keep by score, besides the latest.
    """

    def __init__(self, directory: str | os.PathLike[str], *, keep_best: int = 5) -> None:
        if keep_best < 0:
            raise ConfigError(f"keep_best must be >= 0, got {keep_best!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep_best = keep_best

    @staticmethod
    def found_in(directory: str | os.PathLike[str]) -> bool:
        """Whether ``directory`` holds checkpoint manifests (without creating it)."""
        return any(Path(directory).glob("ckpt-*.json"))

    def _paths(self, iteration: int) -> tuple[Path, Path]:
        stem = self.directory / f"ckpt-{iteration:06d}"
        return stem.with_suffix(".pt"), stem.with_suffix(".json")

    def save(
        self,
        state: Mapping[str, Any],
        *,
        iteration: int,
        score: float | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> CheckpointInfo:
        """Write ``state`` as the checkpoint of ``iteration``, then prune old ones."""
        data_path, manifest_path = self._paths(iteration)
        _write_atomic(data_path, lambda handle: torch.save(dict(state), handle))
        info = CheckpointInfo(
            iteration=iteration,
            path=data_path,
            sha256=_sha256(data_path),
            size=data_path.stat().st_size,
            score=score,
            metrics=dict(metrics or {}),
        )
        manifest = {
            "format": _FORMAT,
            "iteration": iteration,
            "file": data_path.name,
            "sha256": info.sha256,
            "size": info.size,
            "score": score,
            "metrics": info.metrics,
        }
        payload = json.dumps(manifest, sort_keys=True, allow_nan=True).encode()
        _write_atomic(manifest_path, lambda handle: handle.write(payload))
        self.prune()
        return info

    def _read_manifest(self, path: Path) -> CheckpointInfo | None:
        try:
            data = json.loads(path.read_text())
            return CheckpointInfo(
                iteration=int(data["iteration"]),
                path=self.directory / str(data["file"]),
                sha256=str(data["sha256"]),
                size=int(data["size"]),
                score=None if data.get("score") is None else float(data["score"]),
                metrics=data.get("metrics") or {},
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("skipping unreadable checkpoint manifest %s: %r", path, exc)
            return None

    def list(self) -> list[CheckpointInfo]:
        """Checkpoints with a readable manifest, oldest first (not yet hash-checked)."""
        infos = [self._read_manifest(p) for p in sorted(self.directory.glob("ckpt-*.json"))]
        return sorted((i for i in infos if i is not None), key=lambda i: i.iteration)

    def verify(self, info: CheckpointInfo) -> bool:
        """True if the ``.pt`` file exists with the manifest's size and sha256."""
        try:
            return info.path.stat().st_size == info.size and _sha256(info.path) == info.sha256
        except OSError:
            return False

    def load(self, info: CheckpointInfo) -> dict[str, Any] | None:
        """The state of a checkpoint, or None (with a warning) if it is corrupt."""
        if not self.verify(info):
            logger.warning(
                "checkpoint %s is corrupt or partial (size/sha256 mismatch); skipping", info.path
            )
            return None
        try:
            # Our own file, hash-checked above; it holds RNG states and pickled
            # environments, which weights_only loading refuses.
            state = torch.load(info.path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a torn or foreign file is skipped, not fatal
            logger.warning("checkpoint %s cannot be loaded (%r); skipping", info.path, exc)
            return None
        return state if isinstance(state, dict) else None

    def load_latest(self) -> tuple[dict[str, Any], CheckpointInfo] | None:
        """The newest checkpoint that verifies and loads, or None if there is none."""
        for info in reversed(self.list()):
            state = self.load(info)
            if state is not None:
                return state, info
        return None

    def best(self) -> CheckpointInfo | None:
        """The checkpoint with the highest score (ties: the later one), if any has a score."""
        scored = [i for i in self.list() if i.score is not None]
        return max(scored, key=lambda i: (i.score, i.iteration)) if scored else None

    def prune(self) -> None:
        """Delete all but the latest and the ``keep_best`` best-scored checkpoints."""
        infos = self.list()
        if not infos:
            return
        keep = {infos[-1].iteration}
        scored = sorted(
            (i for i in infos if i.score is not None),
            key=lambda i: (i.score, i.iteration),
            reverse=True,
        )
        keep.update(i.iteration for i in scored[: self.keep_best])
        for info in infos:
            if info.iteration not in keep:
                data_path, manifest_path = self._paths(info.iteration)
                manifest_path.unlink(missing_ok=True)  # manifest first: never a dangling claim
                data_path.unlink(missing_ok=True)
        for stray in self.directory.glob(".ckpt-*.tmp"):  # left by a crash mid-write
            stray.unlink(missing_ok=True)
