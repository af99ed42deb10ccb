"""``learnloop train ppo|grpo`` in-process: flags from the configs, JSON summary, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from learnloop.cli.main import main


def _cartpole(tmp_path: Path, *extra: str) -> list[str]:
    """``train ppo`` on CartPole, small: 2 iterations of 2 environments x 16 steps."""
    return [
        "train",
        "ppo",
        "--env",
        "CartPole-v1",
        "--iterations",
        "2",
        "--num-envs",
        "2",
        "--num-steps",
        "16",
        "--eval-episodes",
        "2",
        "--output-dir",
        str(tmp_path),
        *extra,
    ]


def test_ppo_on_cartpole_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(_cartpole(tmp_path, "--hidden-sizes", "16", "16", "--json"))
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["algorithm"] == "ppo" and summary["env_steps"] == 64
    assert summary["heldout"]["avg_reward"] > 0
    settings = json.loads((tmp_path / "summary.json").read_text())["settings"]
    assert settings["ppo"]["num_envs"] == 2 and settings["policy"]["hidden_sizes"] == [16, 16]
    assert (tmp_path / "episodes.db").exists()


def test_mode_rl_alias_and_grpo_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "train",
                "--mode",
                "rl",
                "--env",
                "CartPole-v1",
                "--iterations",
                "1",
                "--num-envs",
                "1",
                "--num-steps",
                "8",
                "--eval-episodes",
                "1",
                "--no-record",
                "--output-dir",
                str(tmp_path / "ppo"),
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "grpo",
                "--iterations",
                "2",
                "--group-size",
                "2",
                "--tasks-per-iteration",
                "2",
                "--no-record",
                "--output-dir",
                str(tmp_path / "grpo"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "held-out evaluation" in out and "grpo on learnloop/ToolUse-v0" in out


def test_bad_values_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "ppo", "--gamma", "1.5", "--output-dir", str(tmp_path)]) == 2
    assert "gamma" in capsys.readouterr().err
    assert main(["train", "ppo", "--env", "NoSuchEnv-v9", "--output-dir", str(tmp_path)]) == 2
    assert "NoSuchEnv-v9" in capsys.readouterr().err
    # Gymnasium's own hint comes along: a typo, an old version
    assert main(["train", "ppo", "--env", "CartPol-v1", "--output-dir", str(tmp_path)]) == 2
    assert "Did you mean: `CartPole`" in capsys.readouterr().err
    assert main(["train", "ppo", "--env", "Taxi-v3", "--output-dir", str(tmp_path)]) == 2
    assert "Taxi-v4" in capsys.readouterr().err
    assert main(["train", "ppo", "--num-envs", "many"]) == 2


def test_help_lists_config_docstrings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "grpo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--group-size" in out and "Attempts G at the same task" in out
    assert "--kl-coef" in out and "--resume" in out


def test_time_limit_cuts_episodes_of_an_environment_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # CliffWalking has no limit of its own: an untrained greedy policy that walks into
    # a wall never ends its episode; the run cuts it at --time-limit steps.
    args = ["train", "ppo", "--env", "CliffWalking-v1", "--iterations", "2", "--num-envs", "2"]
    args += ["--num-steps", "40", "--eval-episodes", "2", "--time-limit", "25"]
    assert main([*args, "--output-dir", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["return_last100"] is not None  # training episodes ended (at 25 steps)
    assert summary["heldout"]["avg_reward"] >= -25 * 100  # at most 25 steps of at worst -100
    assert (
        json.loads((tmp_path / "summary.json").read_text())["settings"]["run"]["time_limit"] == 25
    )
    assert "no time limit" not in caplog.text  # the user chose one


def test_time_limit_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "ppo", "--env", "CartPole-v1", "--time-limit", "0"]
    assert main([*args, "--output-dir", str(tmp_path)]) == 2
    assert "time_limit must be an int >= 1 (steps) or unset, got 0" in capsys.readouterr().err


def test_env_kwargs_reach_gymnasium_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "ppo", "--env", "FrozenLake-v1", "--iterations", "1", "--num-envs", "2"]
    args += ["--num-steps", "8", "--eval-episodes", "2", "--output-dir", str(tmp_path)]
    assert main([*args, "--env-kwargs", '{"map_name": "8x8", "is_slippery": false}']) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["settings"]["run"]["env_kwargs"] == {"map_name": "8x8", "is_slippery": False}
    import torch

    checkpoint = sorted((tmp_path / "checkpoints").glob("*.pt"))[-1]
    state = torch.load(checkpoint, weights_only=False)
    assert state["policy"]["obs_dim"] == 64  # one-hot of the 8x8 map's cells, not 4x4's 16


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[1]", "expected a JSON object {...}, got '[1]'"),
        ("{map_name: 8x8}", "expected a JSON object such as"),
        ('{"max_episode_steps": 5}', "may not set ['max_episode_steps']: use --time-limit"),
        ('{"slippery": false}', "FrozenLake-v1 does not take the arguments {'slippery': False}"),
    ],
)
def test_bad_env_kwargs_name_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    args = ["train", "ppo", "--env", "FrozenLake-v1", "--env-kwargs", value]
    assert main([*args, "--output-dir", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the folder and its store exist


def test_an_environment_whose_package_is_missing_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import gymnasium

    gymnasium.register("learnloop-test/NeedsAPackage-v0", entry_point="no_such_package_xyz:Env")
    try:
        args = ["train", "grpo", "--env", "learnloop-test/NeedsAPackage-v0"]
        assert main([*args, "--output-dir", str(tmp_path / "run")]) == 2
    finally:
        del gymnasium.registry["learnloop-test/NeedsAPackage-v0"]
    error = capsys.readouterr().err
    assert "needs a package that is not installed here" in error
    assert "no_such_package_xyz" in error and "Traceback" not in error
    assert not (tmp_path / "run").exists()


def test_a_folder_with_checkpoints_needs_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_cartpole(tmp_path, "--checkpoint-every", "1")) == 0
    checkpoints = sorted((tmp_path / "checkpoints").iterdir())
    before = {path.name: path.stat().st_mtime_ns for path in checkpoints}
    capsys.readouterr()
    assert main(_cartpole(tmp_path, "--checkpoint-every", "1")) == 2
    error = capsys.readouterr().err
    assert "holds checkpoints of an earlier run (up to iteration 2)" in error
    assert "pass --resume to continue it" in error
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints").iterdir()}
    assert after == before  # nothing of the earlier run was overwritten


@pytest.mark.parametrize(
    ("extra", "difference"),
    [
        (["--env", "Acrobot-v1"], "env 'CartPole-v1' there, 'Acrobot-v1' here"),
        (["--hidden-sizes", "32"], "policy.config.hidden_sizes [64, 64] there, [32] here"),
    ],
)
def test_resume_refuses_a_checkpoint_of_another_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], difference: str
) -> None:
    assert main(_cartpole(tmp_path, "--checkpoint-every", "1")) == 0
    capsys.readouterr()
    assert main(_cartpole(tmp_path, "--iterations", "4", "--resume", *extra)) == 2
    error = capsys.readouterr().err
    assert "cannot resume from" in error and difference in error
    assert "Traceback" not in error
