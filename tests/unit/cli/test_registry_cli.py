"""``learnloop registry ...`` and ``learnloop experiment ...``, run in-process."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import pytest

from learnloop.experiments import Arm, Experiments
from learnloop.store import SqliteStore

cli = importlib.import_module("learnloop.cli.main")  # the package re-exports main() as "main"


@pytest.fixture(autouse=True)
def installed_subcommands(monkeypatch: pytest.MonkeyPatch) -> None:
    # Parse with the subcommand modules present in this checkout, so these tests
    # exercise the registry and experiment commands on their own.
    present = tuple(m for m in cli.SUBCOMMANDS if importlib.util.find_spec(m) is not None)
    monkeypatch.setattr(cli, "SUBCOMMANDS", present)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_register_list_show_label_diff(capsys, url: str, tmp_path: Path) -> None:
    v1, v2 = tmp_path / "v1.txt", tmp_path / "v2.txt"
    v1.write_text("Pick the best tool.\n")
    v2.write_text("Pick the best tool.\nCheck the result.\n")
    code, out, _ = run(capsys, "registry", "register", "planner", "--file", str(v1),
                       "--store", url, "--source", "manual")
    assert code == 0 and out.startswith("planner v1 sha256:")
    data = run_json(capsys, "registry", "register", "planner", "--file", str(v2), "--store", url,
                    "--candidate", "--source", "apo-1")
    assert data["version"] == 2 and data["source"] == "apo-1"

    listing = run_json(capsys, "registry", "list", "--store", url)
    assert listing == [{"name": "planner", "kind": "prompt", "num_versions": 2,
                        "labels": {"candidate": 2, "latest": 2}}]
    code, out, _ = run(capsys, "registry", "list", "--store", url)
    assert code == 0 and "planner" in out and "candidate=v2" in out

    shown = run_json(capsys, "registry", "show", "planner", "--label", "candidate", "--store", url)
    assert shown["content"] == v2.read_text() and shown["version"] == 2
    code, out, _ = run(capsys, "registry", "show", "planner", "--version", "v1", "--store", url)
    assert code == 0 and "Pick the best tool." in out and "planner v1" in out
    overview = run_json(capsys, "registry", "show", "planner", "--store", url)
    assert [v["version"] for v in overview["versions"]] == [1, 2]

    code, out, _ = run(capsys, "registry", "label", "planner", "1", "production", "--store", url)
    assert (code, out) == (0, "planner:production -> v1\n")
    code, _, err = run(capsys, "registry", "label", "planner", "2", "production", "--store", url)
    assert code == 2 and "protected" in err and "--force" in err
    code, _, _ = run(capsys, "registry", "label", "planner", "2", "production", "--force",
                     "--reason", "won", "--store", url)
    assert code == 0
    moves = run_json(capsys, "registry", "history", "planner", "--label", "production",
                     "--store", url)
    assert [(m["from_version"], m["to_version"], m["reason"]) for m in moves] == [
        (None, 1, None), (1, 2, "won")]

    code, out, _ = run(capsys, "registry", "diff", "planner", "1", "2", "--store", url)
    assert code == 0 and out.endswith("+Check the result.\n") and out.startswith("--- planner@v1")


def test_registry_errors_exit_nonzero_with_the_fix_on_stderr(
    capsys, url: str, tmp_path: Path
) -> None:
    SqliteStore(tmp_path / "cli.db").close()  # an existing, empty store
    code, out, err = run(capsys, "registry", "show", "missing", "--store", url)
    assert code == 1 and out == "" and "no resource named 'missing'" in err
    code, _, err = run(capsys, "registry", "register", "p", "--file", str(tmp_path / "no.txt"),
                       "--store", url)
    assert code == 2 and "cannot read --file" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run(capsys, "registry", "register", "p", "--file", str(bad), "--kind", "policy",
                       "--store", url)
    assert code == 2 and "is not JSON" in err
    code, _, err = run(capsys, "registry", "label", "p", "--store", url)
    assert code == 2  # usage error from argparse


def test_policy_and_checkpoint_registration(capsys, url: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"q": [0.1, 0.9]}))
    data = run_json(capsys, "registry", "register", "bandit", "--file", str(policy),
                    "--kind", "policy", "--store", url)
    assert data["kind"] == "policy"
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"\x00weights")
    data = run_json(capsys, "registry", "register", "mlp", "--file", str(ckpt), "--kind",
                    "checkpoint", "--store", url)
    assert data["artifact_sha256"] is not None
    shown = run_json(capsys, "registry", "show", "mlp", "--version", "1", "--store", url)
    assert shown["content"] == str(ckpt)


def test_experiment_start_status_rollout_stop(capsys, url: str, tmp_path: Path) -> None:
    prompt = tmp_path / "p.txt"
    for text in ("one", "two"):
        prompt.write_text(text)
        run(capsys, "registry", "register", "planner", "--file", str(prompt), "--store", url)
    run(capsys, "registry", "label", "planner", "1", "production", "--store", url)
    run(capsys, "registry", "label", "planner", "2", "candidate", "--store", url)

    report = run_json(capsys, "experiment", "start", "ab", "--resource", "planner",
                      "--split", "10%", "--guardrail", "latency_s:lower:0.5", "--store", url)
    assert (report["baseline"], report["candidate"], report["traffic"]) == (1, 2, 0.1)
    assert report["status"] == "running" and report["guardrails"][0]["metric"] == "latency_s"

    store = SqliteStore(url[len("sqlite:///"):])
    experiments = Experiments(store)
    experiments.record_outcomes("ab", Arm.BASELINE, successes=[True, False] * 50)
    experiments.record_outcomes("ab", Arm.CANDIDATE, successes=[True] * 40)
    store.close()

    status = run_json(capsys, "experiment", "status", "ab", "--store", url)
    assert status["arms"]["candidate"]["num_outcomes"] == 40
    assert status["primary"]["better"] is True
    code, out, _ = run(capsys, "experiment", "status", "ab", "--store", url)
    assert code == 0 and "always-valid tests" in out and "better" in out
    listed = run_json(capsys, "experiment", "status", "--store", url)
    assert [e["name"] for e in listed] == ["ab"]

    code, _, err = run(capsys, "experiment", "rollout", "ab", "--store", url)
    assert code == 2 and "not a rollout" in err
    stopped = run_json(capsys, "experiment", "stop", "ab", "--winner", "candidate", "--store", url)
    assert stopped["status"] == "completed"
    shown = run_json(capsys, "registry", "show", "planner", "--label", "production", "--store", url)
    assert shown["version"] == 2

    report = run_json(capsys, "experiment", "start", "ro", "--resource", "planner", "--rollout",
                      "--baseline", "1", "--candidate", "2", "--min-duration-s", "0",
                      "--min-samples-per-stage", "5", "--stages", "0.2", "0.6", "1",
                      "--no-higher-is-better", "--metric", "latency_s", "--store", url)
    assert report["traffic"] == 0.2 and report["stage"] == 0
    assert report["primary"]["metric"] == "latency_s"
    assert report["primary"]["higher_is_better"] is False
    decision = run_json(capsys, "experiment", "rollout", "ro", "--store", url)
    assert decision["action"] == "hold" and "outcomes" in decision["reason"]
    code, out, _ = run(capsys, "experiment", "rollout", "ro", "--store", url)
    assert code == 0 and out.startswith("hold: traffic 20%")
    code, _, err = run(capsys, "experiment", "start", "ro", "--resource", "planner", "--store", url)
    assert code == 1 and "already exists" in err
    code, _, err = run(capsys, "experiment", "start", "x", "--split", "abc", "--store", url)
    assert code == 2


def test_reads_of_a_store_that_does_not_exist_fail_and_create_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'typo.db'}"
    for command in (
        ["registry", "list"],
        ["registry", "show", "p"],
        ["registry", "history", "p"],
        ["registry", "label", "p", "1", "production"],
        ["experiment", "status", "e"],
        ["experiment", "start", "e"],
    ):
        code, _, err = run(capsys, *command, "--store", url)
        assert code == 1, command
        assert "does not exist" in err and "--store" in err
    assert not (tmp_path / "typo.db").exists()
