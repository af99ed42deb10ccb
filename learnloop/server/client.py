"""A small JSON-RPC client on the standard library (what ``learnloop jobs`` uses).

It needs no extra: urllib is enough for a command line that sends a handful of
calls, and keeps ``learnloop jobs`` usable where only the core is installed.

>>> client = RpcClient("http://127.0.0.1:1", token="t", timeout_s=0.5)
>>> client.url
'http://127.0.0.1:1/rpc'
"""

from __future__ import annotations

import itertools
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import IO, Any

from learnloop.errors import ConfigError, LearnloopError

__all__ = [
    "DEFAULT_SERVER_URL",
    "TOKEN_ENV_VAR",
    "URL_ENV_VAR",
    "RpcClient",
    "RpcFailure",
    "resolve_token",
    "resolve_url",
]

TOKEN_ENV_VAR = "LEARNLOOP_SERVER_TOKEN"
URL_ENV_VAR = "LEARNLOOP_SERVER_URL"
DEFAULT_SERVER_URL = "http://127.0.0.1:8765"


def resolve_url(url: str | None = None) -> str:
    """An explicit URL beats ``$LEARNLOOP_SERVER_URL``, which beats the default."""
    return url or os.environ.get(URL_ENV_VAR) or DEFAULT_SERVER_URL


def resolve_token(token: str | None = None) -> str | None:
    """An explicit token beats ``$LEARNLOOP_SERVER_TOKEN``."""
    return token or os.environ.get(TOKEN_ENV_VAR) or None


class RpcFailure(LearnloopError):
    """The server answered with a JSON-RPC error (or could not be reached)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (JSON-RPC error {code})")
        self.code = code
        self.message = message
        self.data = data


class RpcClient:
    """Calls methods of a learnloop server.

    Args:
        url: server base URL (``http://host:port``); default from the environment.
        token: bearer token; default ``$LEARNLOOP_SERVER_TOKEN``.
        timeout_s: seconds to wait for an answer.
    """

    def __init__(
        self, url: str | None = None, *, token: str | None = None, timeout_s: float = 60.0
    ) -> None:
        base = resolve_url(url).rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ConfigError(f"server URL {base!r} must start with http:// or https://")
        self.url = base + "/rpc"
        self._token = resolve_token(token)
        self._timeout_s = timeout_s
        self._ids = itertools.count(1)

    def _post(self, body: Any) -> Any:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            if not raw:
                raise RpcFailure(-32603, f"HTTP {exc.code} from {self.url}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise RpcFailure(
                -32603, f"cannot reach {self.url} ({exc}); is 'learnloop serve' running there?"
            ) from None
        return json.loads(raw) if raw else None

    def call(self, method: str, **params: Any) -> Any:
        """Call ``method`` with named params; returns its result or raises RpcFailure."""
        answer = self._post(
            {"jsonrpc": "2.0", "method": method, "params": params, "id": next(self._ids)}
        )
        return _unwrap(answer)

    def batch(self, calls: list[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        """Send ``(method, params)`` calls in one batch; results (or RpcFailure objects)
        in order."""
        first = next(self._ids)
        body = [
            {"jsonrpc": "2.0", "method": m, "params": dict(p), "id": first + i}
            for i, (m, p) in enumerate(calls)
        ]
        for _ in calls[1:]:
            next(self._ids)
        answers = self._post(body)
        if isinstance(answers, dict):  # the whole batch was refused
            _unwrap(answers)
        by_id = {a.get("id"): a for a in answers}
        out: list[Any] = []
        for i in range(len(calls)):
            try:
                out.append(_unwrap(by_id[first + i]))
            except RpcFailure as exc:
                out.append(exc)
        return out

    def iter_trajectories(
        self, *, job_id: str | None = None, filter: Mapping[str, Any] | None = None,
        page_size: int = 500,
    ) -> Iterator[str]:
        """JSONL pages of ``training.export_trajectories``, following the cursor."""
        cursor: int | None = 0
        while cursor is not None:
            params: dict[str, Any] = {"limit": page_size, "cursor": cursor}
            if job_id is not None:
                params["job_id"] = job_id
            if filter is not None:
                params["filter"] = dict(filter)
            page = self.call("training.export_trajectories", **params)
            if page["jsonl"]:
                yield page["jsonl"]
            cursor = page["next_cursor"]

    def export(self, out: IO[str], **kwargs: Any) -> int:
        """Write the exported episodes to ``out``; returns how many lines."""
        count = 0
        for chunk in self.iter_trajectories(**kwargs):
            out.write(chunk)
            count += chunk.count("\n")
        return count


def _unwrap(answer: Any) -> Any:
    if not isinstance(answer, dict):
        raise RpcFailure(-32603, f"the server answered with something that is not JSON-RPC: "
                         f"{answer!r:.100}")
    if "error" in answer:
        error = answer["error"]
        raise RpcFailure(int(error.get("code", -32603)), str(error.get("message")),
                         error.get("data"))
    return answer.get("result")
