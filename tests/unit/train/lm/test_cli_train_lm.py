"""``learnloop train grpo --policy lm`` and ``learnloop serve-policy`` in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learnloop.cli.main import build_parser, main


@pytest.mark.slow
def test_train_grpo_policy_lm_tiny_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "train",
            "grpo",
            "--policy",
            "lm",
            "--model",
            "tiny",
            "--iterations",
            "2",
            "--group-size",
            "2",
            "--tasks-per-iteration",
            "2",
            "--sft-steps",
            "3",
            "--exploration-episodes",
            "40",
            "--eval-tasks",
            "4",
            "--eval-every",
            "2",
            "--output-dir",
            str(tmp_path),
            "--json",
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["algorithm"] == "grpo-lm" and summary["iterations"] == 2
    assert summary["initial"]["num_episodes"] == 4 and summary["warm_start"]["demonstrations"] > 0
    assert summary["heldout"]["num_episodes"] == 4 and summary["baseline"] is not None
    settings = json.loads((tmp_path / "summary.json").read_text())["settings"]
    # language-model defaults apply where no flag was given; given flags win
    assert settings["grpo"]["learning_rate"] == 3e-4 and settings["grpo"]["group_size"] == 2
    assert settings["lm"]["model"] == "tiny" and settings["lm_grpo"]["sft_steps"] == 3
    assert (tmp_path / "model" / "config.json").exists()
    assert (tmp_path / "checkpoints").is_dir() and (tmp_path / "episodes.db").exists()


def test_lm_flags_and_serve_policy_are_registered() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["train", "grpo", "--policy", "lm", "--model", "smollm2", "--no-lora", "--lora-rank", "4"]
    )
    assert args.policy == "lm" and getattr(args, "lm.model") == "smollm2"
    assert getattr(args, "lm.lora") is False and getattr(args, "lm.lora_rank") == 4
    assert not hasattr(args, "lmgrpo.prompt")  # 'auto' unless given
    chosen = parser.parse_args(["train", "grpo", "--policy", "lm", "--prompt", "examples"])
    assert getattr(chosen, "lmgrpo.prompt") == "examples"
    serve = parser.parse_args(["serve-policy", "--model", "tiny", "--port", "0"])
    assert serve.model == "tiny" and serve.port == 0


def test_policy_lm_rejects_other_environments(tmp_path: Path) -> None:
    code = main(
        [
            "train",
            "grpo",
            "--policy",
            "lm",
            "--env",
            "CartPole-v1",
            "--iterations",
            "1",
            "--output-dir",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 2


def test_policy_lm_refuses_a_folder_of_an_earlier_run_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-000010.json").write_text("{}")  # an earlier run's

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the folder was checked")

    monkeypatch.setattr("learnloop.train.lm.run.load_language_model", no_model)
    args = ["train", "grpo", "--policy", "lm", "--model", "tiny", "--output-dir", str(tmp_path)]
    assert main([*args, "--no-progress"]) == 2
    assert "holds checkpoints of an earlier run" in capsys.readouterr().err
