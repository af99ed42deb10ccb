"""``learnloop jobs`` against a real uvicorn server on loopback (in a thread of this process)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

uvicorn = pytest.importorskip("uvicorn")

from learnloop.cli.main import main  # noqa: E402
from learnloop.jobs import PoolConfig  # noqa: E402
from learnloop.server import RpcClient, RpcFailure, ServerConfig, create_app  # noqa: E402
from learnloop.server.testing import free_port  # noqa: E402
from learnloop.store import SqliteStore  # noqa: E402

TOKEN = "cli-token"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    store = SqliteStore(tmp_path / "cli.db")
    config = ServerConfig(token=TOKEN, jobs_dir=str(tmp_path / "jobs"), launcher="thread",
                          pool=PoolConfig(poll_s=0.05, heartbeat_s=0.1, stale_after_s=1.0))
    port = free_port()
    instance = uvicorn.Server(uvicorn.Config(create_app(config, store=store), host="127.0.0.1",
                                             port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(10)
    store.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_jobs_cli_round_trip(server: str, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNLOOP_SERVER_URL", server)
    monkeypatch.setenv("LEARNLOOP_SERVER_TOKEN", TOKEN)
    config = json.dumps({"decisions": 300, "iterations": 3, "record": True})
    code, out, _ = run(capsys, "jobs", "start", "bandit", "--config", config, "--owner", "ana",
                       "--json")
    assert code == 0
    job_id = json.loads(out)["job_id"]
    deadline = time.monotonic() + 20
    while True:
        code, out, _ = run(capsys, "jobs", "status", job_id, "--json", "--metrics", "1")
        job = json.loads(out)
        if job["status"] == "completed":
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["iteration"] == 3 and len(job["metrics"]) == 1
    code, out, _ = run(capsys, "jobs", "status", job_id)
    assert code == 0 and f"{job_id} (bandit, owner ana): completed" in out
    code, out, _ = run(capsys, "jobs", "list")
    assert code == 0 and job_id in out and "completed" in out
    code, out, _ = run(capsys, "jobs", "evaluate", job_id, "--json")
    assert code == 0 and 0.0 <= json.loads(out)["score"] <= 1.0
    target = tmp_path / "episodes.jsonl"
    code, _, err = run(capsys, "jobs", "export", job_id, "--output", str(target),
                       "--page-size", "128")
    lines = target.read_text().splitlines()
    assert code == 0 and len(lines) == 300 and "wrote 300 episodes" in err
    assert all(json.loads(line)["metadata"]["job_id"] == job_id for line in lines)
    code, _, err = run(capsys, "jobs", "resume", job_id)
    assert code == 1 and "completed and cannot be resumed" in err
    code, _, err = run(capsys, "jobs", "start", "apo", "--config", '{"generatoins": 1}')
    assert code == 1 and "unknown field config.generatoins" in err
    code, _, err = run(capsys, "jobs", "list", "--token", "wrong")
    assert code == 1 and "bearer token" in err


def test_client_reports_unreachable_server_and_batches(server: str) -> None:
    with pytest.raises(RpcFailure, match="cannot reach"):
        RpcClient("http://127.0.0.1:9", token=TOKEN, timeout_s=2).call("training.list")
    client = RpcClient(server, token=TOKEN)
    listed, missing = client.batch([("training.list", {}), ("training.get_status",
                                                            {"job_id": "nope"})])
    assert listed["total"] == 0
    assert isinstance(missing, RpcFailure) and missing.code == -32002


def test_serve_refuses_to_start_without_a_token(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.delenv("LEARNLOOP_SERVER_TOKEN", raising=False)
    code, _, err = run(capsys, "serve", "--store", f"sqlite:///{tmp_path}/x.db",
                       "--jobs-dir", str(tmp_path / "jobs"), "--port", "0")
    assert code == 2 and "LEARNLOOP_SERVER_TOKEN" in err
