from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from learnloop.bandits import ToolSelector
from learnloop.cli.main import main
from learnloop.store import open_store


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(list(argv)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A policy trained on 150 suite decisions, each choice logged in a SQLite store."""
    root = tmp_path_factory.mktemp("bandit-cli")
    url = f"sqlite:///{root / 'logs.db'}"
    code = main(
        [
            "train",
            "bandit",
            "--decisions",
            "150",
            "--seed",
            "3",
            "--store",
            url,
            "--output-dir",
            str(root),
            "--json",
        ]
    )
    assert code == 0
    return root, url


def test_train_bandit_writes_a_policy_and_logs_every_choice(
    logged: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root, url = logged
    capsys.readouterr()
    with open(root / "learned_policy.json", encoding="utf-8") as fh:
        selector = ToolSelector.from_dict(json.load(fh))
    assert selector.policy.name == "linear_thompson" and selector.num_updates == 150
    store = open_store(url)
    try:
        episodes = list(store.iter_episodes())
    finally:
        store.close()
    assert len(episodes) == 150
    state = episodes[0].steps[0].state
    assert 0.0 < state["propensity"] <= 1.0 and episodes[0].steps[0].tool in state["candidates"]


def test_train_mode_alias_and_spec_learner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_json(
        capsys,
        "train",
        "--mode",
        "bandit",
        "--policy",
        "epsilon_greedy_keyword",
        "--decisions",
        "60",
        "--output-dir",
        str(tmp_path),
        "--json",
    )
    assert result["policy"] == "epsilon_greedy_keyword" and result["updates"] == 60
    assert 0.0 < result["heldout_success_before"] < 1.0
    assert (tmp_path / "learned_policy.json").is_file()


def test_train_from_logged_choices_replays_them(
    logged: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = logged
    result = run_json(
        capsys, "train", "bandit", "--from-store", url, "--output-dir", str(tmp_path), "--json"
    )
    assert result["learned_from"] == "150 logged choices" and result["updates"] == 150


def test_evaluate_a_learned_policy_and_a_named_one(
    logged: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root, url = logged
    result = run_json(
        capsys,
        "bandit",
        "evaluate",
        "--policy",
        str(root / "learned_policy.json"),
        "--store",
        url,
        "--json",
    )
    assert result["num_logs"] == 150
    for name in ("ips", "snips", "dr"):
        estimate = result[name]
        assert (
            math.isfinite(estimate["value"])
            and estimate["low"] <= estimate["value"] <= estimate["high"]
        )
    # a uniform policy's SNIPS estimate of 0/1 rewards lies in [0, 1]
    assert (
        0.0
        <= run_json(capsys, "bandit", "evaluate", "--policy", "ucb1", "--store", url, "--json")[
            "snips"
        ]["value"]
        <= 1.0
    )
    assert main(["bandit", "evaluate", "--policy", "ucb1", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "150 logged choices" in out and "DR" in out


def test_bad_flags_exit_2(logged: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    _, url = logged
    for argv in (
        ["train", "bandit", "--policy", "nope"],
        ["train", "bandit", "--decisions", "0"],
        ["train", "bandit", "--decisions", "many"],
        ["train", "--mode", "bandits"],
        ["bandit"],
        ["bandit", "evaluate", "--store", url],
        ["bandit", "evaluate", "--policy", "nope", "--store", url],
        ["bandit", "evaluate", "--policy", "ucb1", "--store", url, "--since", "yesterday"],
    ):
        assert main(argv) == 2, argv
        assert "error" in capsys.readouterr().err


def test_missing_or_empty_store_is_a_clear_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    assert main(["bandit", "evaluate", "--policy", "ucb1", "--store", str(missing)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()  # evaluating must not create a store
    assert (
        main(["train", "bandit", "--from-store", str(missing), "--output-dir", str(tmp_path)]) == 1
    )
    assert "--from-store" in capsys.readouterr().err
    empty = tmp_path / "empty.db"
    open_store(str(empty)).close()
    assert main(["bandit", "evaluate", "--policy", "ucb1", "--store", str(empty)]) == 1
    assert "no logged tool choices in" in capsys.readouterr().err
    assert main(["train", "bandit", "--from-store", str(empty), "--output-dir", str(tmp_path)]) == 1
    assert "no logged tool choices" in capsys.readouterr().err
    assert not (tmp_path / "learned_policy.json").exists()


def test_evaluate_since_after_every_log_finds_nothing(
    logged: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = logged
    assert (
        main(["bandit", "evaluate", "--policy", "ucb1", "--store", url, "--since", "2999-01-01"])
        == 1
    )
    assert "since 2999-01-01" in capsys.readouterr().err
