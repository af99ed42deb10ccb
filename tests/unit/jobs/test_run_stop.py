"""``on_iteration`` returning True stops a training run after a checkpoint; resume continues."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from learnloop.train.config import PPOConfig, RunConfig
from learnloop.train.run import train


def _config(tmp: Path, **changes: object) -> RunConfig:
    return RunConfig(env="CartPole-v1", iterations=3, output_dir=str(tmp), eval_episodes=2,
                     checkpoint_every=10, eval_every=10, record=False, **changes)  # type: ignore[arg-type]


@pytest.mark.slow
def test_stop_writes_a_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    algo = PPOConfig(num_envs=2, num_steps=16, num_epochs=1)
    full = train("ppo", _config(tmp_path / "full"), algo)
    seen: list[int] = []

    def stop_at_two(done: int, metrics: object) -> bool:
        seen.append(done)
        return done == 2

    stopped = train("ppo", _config(tmp_path / "split"), algo, on_iteration=stop_at_two)
    assert stopped.stopped_at == 2 and seen == [1, 2] and stopped.iterations == 2
    # no checkpoint was due at 2 (every 10): the stop wrote one; no final outputs yet
    assert (tmp_path / "split" / "checkpoints" / "ckpt-000002.pt").exists()
    assert not (tmp_path / "split" / "policy.pt").exists()
    resumed = train("ppo", _config(tmp_path / "split", resume=True), algo)
    assert resumed.resumed_from == 2 and resumed.stopped_at is None
    assert resumed.env_steps == full.env_steps

    def learning(history: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in row.items() if k.startswith(("train/", "rollout/"))}
                for row in history]

    assert len(learning(full.history)) == 3 and "train/epochs" in learning(full.history)[0]
    assert learning(resumed.history) == learning(full.history)


def test_returning_true_on_the_last_iteration_finishes_normally(tmp_path: Path) -> None:
    result = train("ppo", _config(tmp_path), PPOConfig(num_envs=2, num_steps=16, num_epochs=1),
                   on_iteration=lambda done, metrics: True if done == 3 else None)
    assert result.stopped_at is None and (tmp_path / "policy.pt").exists()
