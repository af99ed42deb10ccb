"""Checkpoints: atomic write, verification, corruption skipped, pruning to best + latest."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from learnloop.train.checkpoints import CheckpointManager  # noqa: E402


def test_roundtrip_with_tensors(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    info = manager.save(
        {"w": torch.arange(3.0), "rng": torch.get_rng_state()},
        iteration=7,
        score=0.4,
        metrics={"reward": 1.5},
    )
    latest = manager.load_latest()
    assert latest is not None
    state, loaded = latest
    assert torch.equal(state["w"], torch.arange(3.0))
    assert loaded.iteration == 7 and loaded.score == 0.4 and loaded.metrics == {"reward": 1.5}
    assert loaded.sha256 == info.sha256 and manager.verify(loaded)
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_and_partial_checkpoints_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path, keep_best=5)
    manager.save({"i": 1}, iteration=1, score=0.1)
    manager.save({"i": 2}, iteration=2, score=0.2)
    manager.save({"i": 3}, iteration=3, score=0.3)
    # 3: flipped byte (same size) ; 2: truncated file
    data3 = (tmp_path / "ckpt-000003.pt").read_bytes()
    (tmp_path / "ckpt-000003.pt").write_bytes(data3[:-1] + bytes([data3[-1] ^ 0xFF]))
    data2 = (tmp_path / "ckpt-000002.pt").read_bytes()
    (tmp_path / "ckpt-000002.pt").write_bytes(data2[: len(data2) // 2])
    with caplog.at_level(logging.WARNING):
        latest = manager.load_latest()
    assert latest is not None and latest[0]["i"] == 1 and latest[1].iteration == 1
    assert "corrupt" in caplog.text


def test_unreadable_manifest_and_missing_file_are_skipped(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save({"i": 1}, iteration=1, score=0.5)
    manager.save({"i": 2}, iteration=2)
    (tmp_path / "ckpt-000002.pt").unlink()
    (tmp_path / "ckpt-000009.json").write_text("{not json")
    latest = manager.load_latest()
    assert latest is not None and latest[0]["i"] == 1


def test_no_checkpoint_gives_none(tmp_path: Path) -> None:
    assert CheckpointManager(tmp_path).load_latest() is None


def test_prune_keeps_best_by_score_and_latest(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_best=2)
    scores = {10: 0.5, 20: 0.9, 30: 0.1, 40: 0.7, 50: None}
    for iteration, score in scores.items():
        manager.save({"i": iteration}, iteration=iteration, score=score)
    assert [c.iteration for c in manager.list()] == [20, 40, 50]
    best = manager.best()
    assert best is not None and best.iteration == 20
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == [
        "ckpt-000020.pt",
        "ckpt-000040.pt",
        "ckpt-000050.pt",
    ]
    manifest = json.loads((tmp_path / "ckpt-000040.json").read_text())
    assert manifest["score"] == 0.7 and len(manifest["sha256"]) == 64
