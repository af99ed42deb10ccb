from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learnloop.cli.main import main
from learnloop.episode import Episode
from learnloop.store import SqliteStore
from learnloop.store.testing import make_episode


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "episodes", "train"):
        assert command in out
    assert main(["--version"]) == 0
    assert "learnloop 0.1.0" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--no-such-flag"]) == 2
    assert "Try 'learnloop --help'" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["episodes", "list", "--limit", "-3"]) == 2
    assert "expected a whole number >= 0" in capsys.readouterr().err
    assert main(["episodes", "list", "--since", "yesterday-ish"]) == 2
    assert "cannot read time" in capsys.readouterr().err


def _store(tmp_path: Path, count: int = 5) -> str:
    store = SqliteStore(tmp_path / "cli.db")
    root = make_episode(0)
    store.add_episodes(
        [root, *[make_episode(i, parent_id=root.id if i == 1 else None) for i in range(1, count)]]
    )
    store.close()
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_episodes_list_show_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _store(tmp_path)
    assert main(["episodes", "list", "--store", url, "--json", "--limit", "2"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["total"] == 5 and [e["id"] for e in listed["episodes"]] == [
        "ep-00004",
        "ep-00003",
    ]
    assert main(["episodes", "list", "--store", url, "--agent", "beta", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 2
    assert main(["episodes", "list", "--store", url, "--status", "failure", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 2  # 0 and 3
    assert main(["episodes", "show", "ep-00000", "--store", url, "--tree", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == "ep-00000" and [c["id"] for c in shown["children"]] == ["ep-00001"]
    assert main(["episodes", "show", "ep-00000", "--store", url, "--tree"]) == 0
    assert "call tool_0" in capsys.readouterr().out
    assert main(["episodes", "stats", "--store", url, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["episodes"] == 5 and stats["steps"] == 15
    assert main(["episodes", "list", "--store", url]) == 0
    assert "5 of 5 episodes" in capsys.readouterr().out


def test_unknown_episode_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _store(tmp_path)
    assert main(["episodes", "show", "nope", "--store", url]) == 1
    assert "no episode with id 'nope'" in capsys.readouterr().err


def test_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    SqliteStore(tmp_path / "empty.db").close()
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["episodes", "list", "--store", url]) == 0
    assert "No episodes" in capsys.readouterr().out
    assert main(["episodes", "stats", "--store", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 0


def test_reading_a_store_that_does_not_exist_says_so_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'typo.db'}"
    for command in (["episodes", "list"], ["episodes", "stats"], ["episodes", "show", "x"]):
        assert main([*command, "--store", url]) == 1
        err = capsys.readouterr().err
        assert "does not exist" in err and "--store" in err
    assert not (tmp_path / "typo.db").exists()


def test_export_import_roundtrip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _store(tmp_path)
    out = tmp_path / "eps.jsonl"
    assert main(["episodes", "export", "--store", url, "--output", str(out)]) == 0
    assert "exported 5 episodes" in capsys.readouterr().err
    target = f"sqlite:///{tmp_path / 'target.db'}"
    assert main(["episodes", "import", str(out), "--store", target, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"imported": 5}
    lines = out.read_text().splitlines()
    lines.insert(2, '{"id": "x", "task": 7}')
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["episodes", "import", str(bad), "--store", empty]) == 1
    assert "line 3" in capsys.readouterr().err
    store = SqliteStore(tmp_path / "empty.db")
    assert store.count_episodes() == 0
    store.close()
    assert main(["episodes", "import", str(tmp_path / "missing.jsonl"), "--store", empty]) == 1


def test_store_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SqliteStore(tmp_path / "env.db")
    store.add_episodes([Episode.new("from env")])
    store.close()
    monkeypatch.setenv("LEARNLOOP_STORE", f"sqlite:///{tmp_path / 'env.db'}")
    assert main(["episodes", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 1


def test_installed_command_answers_help_fast() -> None:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "learnloop", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0 and "episodes" in result.stdout
    assert elapsed < 5.0


def test_console_script_is_installed() -> None:
    import shutil

    script = shutil.which("learnloop", path=str(Path(sys.executable).parent))
    assert script is not None, "the learnloop console script is not installed next to python"
    result = subprocess.run([script, "episodes", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "export" in result.stdout
    wrong = subprocess.run([script, "--bogus"], capture_output=True, text=True, check=False)
    assert wrong.returncode == 2 and "Try 'learnloop --help'" in wrong.stderr


def test_import_learnloop_pulls_no_torch() -> None:
    code = (
        "import sys, learnloop, learnloop.recorder, learnloop.store; print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
