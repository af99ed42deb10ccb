from __future__ import annotations

import json
from pathlib import Path

import pytest

from learnloop.cli.main import main
from learnloop.registry import Registry
from learnloop.store import EpisodeQuery, SqliteStore


def test_demo_improves_the_agent_and_rolls_it_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "demo",
        "--stages",
        "record,bandit,ab",
        "--episodes",
        "60",
        "--decisions",
        "2500",
        "--output-dir",
        str(tmp_path),
        "--json",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)["stages"]

    record = report["record"]
    assert record["episodes"] == 60 and 0.0 < record["success_rate"] < 1.0

    bandit = report["bandit"]
    assert bandit["heldout_task_success_learned"] > bandit["heldout_task_success_untrained"] + 0.2
    assert bandit["heldout_task_success_learned"] > bandit["heldout_task_success_scripted"]
    assert Path(bandit["learned_policy"]).is_file()

    ab = report["ab"]
    assert ab["status"] == "completed" and ab["decisions"][-1] == "complete"
    assert ab["arms"]["candidate"]["success"] > ab["arms"]["baseline"]["success"]

    store = SqliteStore(tmp_path / "learnloop.db")
    scripted = store.query_episodes(EpisodeQuery(agent_id="scripted"))
    assert len(scripted) == 60
    step = scripted[0].steps[0]
    assert set(step.reward_components) >= {"success", "efficiency", "quality", "feedback"}
    assert step.reward == pytest.approx(sum(step.reward_components.values()))
    assert store.count_episodes(EpisodeQuery(agent_id="bandit")) >= 2500
    assert Registry(store).resolve("tool-policy", "production") == ab["production_version"] == 2
    store.close()


def test_demo_rejects_unknown_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--stages", "record,fly", "--output-dir", str(tmp_path)]) == 2
    assert "unknown demo stage" in capsys.readouterr().err


def test_demo_rl_stage_trains_and_registers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    assert (
        main(
            [
                "demo",
                "--stages",
                "rl",
                "--rl-iterations",
                "3",
                "--output-dir",
                str(tmp_path),
                "--json",
            ]
        )
        == 0
    )
    rl = json.loads(capsys.readouterr().out)["stages"]["rl"]
    assert rl["iterations"] == 3 and rl["env_steps"] > 0
    assert rl["heldout_success_trained"] is not None and rl["heldout_success_random"] is not None
    assert (tmp_path / "rl" / "policy.pt").is_file() and (tmp_path / "rl" / "curves.png").is_file()
    store = SqliteStore(tmp_path / "learnloop.db")
    assert store.count_episodes() > 0
    assert Registry(store).get("suite-policy", "candidate").kind == "checkpoint"
    store.close()
