"""Run a real ``learnloop serve`` process on a free loopback port (benchmarks, e2e tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ServerProcess", "free_port"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``learnloop serve`` in its own process group (so ``kill -9`` takes its workers too).

    Args:
        store: store URL.
        token: bearer token.
        jobs_dir: the jobs' output folder.
        log: file that receives the server's output.
        args: more ``learnloop serve`` flags.
        port: TCP port (default: a free one).
    """

    def __init__(self, *, store: str, token: str, jobs_dir: str | Path, log: str | Path,
                 args: Sequence[str] = (), port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._command = [
            sys.executable, "-m", "learnloop", "--log-level", "INFO", "serve",
            "--port", str(self.port), "--store", store, "--token", token,
            "--jobs-dir", str(jobs_dir), *args,
        ]
        self._log = Path(log)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        """Start and wait until ``/healthz`` answers."""
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(self._command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see "
                                   f"{self._log}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the server did not answer in {timeout_s} s; see {self._log}")

    def kill(self) -> None:
        """``kill -9`` the server and every process in its group (its workers)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM (graceful: running jobs checkpoint and requeue), then wait."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
