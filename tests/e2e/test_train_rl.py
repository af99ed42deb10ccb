"""End to end: PPO and GRPO on the suite record episodes, keep rewards finite, change weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from learnloop.cli.main import main  # noqa: E402
from learnloop.store import open_store  # noqa: E402
from learnloop.train.policies import MLPPolicy  # noqa: E402


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_train_on_suite_records_episodes_and_changes_weights(
    tmp_path: Path, algorithm: str
) -> None:
    flags = (
        ["--num-envs", "4", "--num-steps", "8"]
        if algorithm == "ppo"
        else ["--group-size", "4", "--tasks-per-iteration", "2"]
    )
    code = main(
        [
            "train",
            algorithm,
            "--iterations",
            "3",
            "--output-dir",
            str(tmp_path),
            "--seed",
            "1",
            "--json",
            *flags,
        ]
    )
    assert code == 0
    store = open_store(f"sqlite:///{tmp_path}/episodes.db")
    try:
        episodes = store.query_episodes()
        assert len(episodes) >= 8
        assert all(math.isfinite(e.total_reward) for e in episodes)
        assert any(step.tool for e in episodes for step in e.steps)
    finally:
        store.close()
    trained = MLPPolicy.load(tmp_path / "policy.pt")
    initial = MLPPolicy(
        trained.obs_dim,
        trained.num_actions,
        trained.config,
        value_head=trained.has_value_head,
        seed=1,
    )
    changed = [
        not torch.equal(a, b)
        for a, b in zip(trained.parameters(), initial.parameters(), strict=True)
    ]
    assert any(changed)
