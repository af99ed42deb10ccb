"""kill -9 and --resume: a resumed run ends exactly where an uninterrupted one ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from learnloop.train.config import GRPOConfig, PPOConfig, RunConfig  # noqa: E402
from learnloop.train.policies import MLPPolicy  # noqa: E402
from learnloop.train.run import train  # noqa: E402


class Crash(Exception):
    """Stands in for the process dying after a checkpoint."""


def _crash_after(iteration: int) -> Any:
    def on_iteration(done: int, metrics: Any) -> None:
        if done == iteration:
            raise Crash

    return on_iteration


def _params(path: Path) -> list[torch.Tensor]:
    return list(MLPPolicy.load(path).state_dict().values())


@pytest.mark.parametrize(
    ("algorithm", "env", "config"),
    [
        ("ppo", "CartPole-v1", PPOConfig(num_envs=2, num_steps=64)),
        ("ppo", "learnloop/ToolUse-v0", PPOConfig(num_envs=4, num_steps=8)),
        (
            "grpo",
            "learnloop/ToolUse-v0",
            GRPOConfig(group_size=4, tasks_per_iteration=2, kl_coef=0.1),
        ),
    ],
)
def test_resume_after_crash_matches_uninterrupted_run(
    tmp_path: Path, algorithm: str, env: str, config: Any
) -> None:
    common = {
        "env": env,
        "iterations": 6,
        "checkpoint_every": 2,
        "eval_every": 3,
        "eval_episodes": 3,
        "record": False,
    }
    straight = train(algorithm, RunConfig(output_dir=str(tmp_path / "a"), **common), config)  # type: ignore[arg-type]
    crashed = RunConfig(output_dir=str(tmp_path / "b"), **common)  # type: ignore[arg-type]
    with pytest.raises(Crash):  # dies during iteration 5, after the checkpoint of iteration 4
        train(algorithm, crashed, config, on_iteration=_crash_after(5))  # type: ignore[arg-type]
    resumed = train(
        algorithm, RunConfig(output_dir=str(tmp_path / "b"), resume=True, **common), config
    )  # type: ignore[arg-type]
    assert resumed.resumed_from == 4
    for a, b in zip(
        _params(tmp_path / "a" / "policy.pt"), _params(tmp_path / "b" / "policy.pt"), strict=True
    ):
        assert torch.allclose(a, b)
    assert resumed.final == straight.final
    assert [e["policy"] for e in resumed.evaluations] == [e["policy"] for e in straight.evaluations]
    assert resumed.env_steps == straight.env_steps


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    run = RunConfig(
        env="CartPole-v1",
        iterations=1,
        output_dir=str(tmp_path),
        resume=True,
        eval_episodes=1,
        record=False,
    )
    result = train("ppo", run, PPOConfig(num_envs=1, num_steps=16))
    assert result.resumed_from is None and result.iterations == 1
