"""``learnloop serve-policy`` as a user runs it: a real process, stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from learnloop.store import open_store


def _wait_for_url(process: subprocess.Popen[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    assert process.stderr is not None
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            raise AssertionError(f"serve-policy exited with {process.returncode}")
        found = re.search(r"at (http://127\.0\.0\.1:\d+)/v1", line)
        if found:
            return found.group(1)
    raise AssertionError("serve-policy did not print its address in time")


def test_sigterm_stores_the_open_episodes_calls(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'policy.db'}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "learnloop",
            "serve-policy",
            "--model",
            "tiny",
            "--port",
            "0",
            "--store",
            store_url,
            "--max-tokens",
            "4",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        base = _wait_for_url(process, timeout_s=120)
        request = urllib.request.Request(
            f"{base}/episodes/ep-open/v1/chat/completions",
            data=json.dumps(
                {"model": "tiny", "messages": [{"role": "user", "content": "find the weather"}]}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert answer["learnloop"]["episode_id"] == "ep-open"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert process.stderr is not None
        assert "stored 1 open episodes as aborted" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
    with open_store(store_url, create=False) as store:
        episode = store.get_episode("ep-open")
    assert episode.status.value == "aborted"
    assert episode.status_reason == "policy server stopped"
    assert len(episode.steps) == 1
