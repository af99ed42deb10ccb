"""Record and replay model calls: a run reproduced exactly, with no model.

>>> import os, tempfile
>>> from learnloop.prompts.llm import ScriptedLLMClient, user_message
>>> path = os.path.join(tempfile.mkdtemp(), "calls.jsonl")
>>> live = RecordReplayClient(ScriptedLLMClient(default="file_read"), path, mode="record")
>>> request = ChatRequest(messages=[user_message("open notes.txt")])
>>> live.complete(request).text
'file_read'
>>> RecordReplayClient(None, path, mode="replay").complete(request).text
'file_read'
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Literal

from learnloop.errors import ConfigError, InvalidInputError, LLMError
from learnloop.prompts.llm import ChatRequest, ChatResponse, LLMClient, canonical_json

__all__ = ["RecordReplayClient"]

logger = logging.getLogger(__name__)


class RecordReplayClient:
    """Saves every request/response pair to JSONL and plays them back exactly.

    Modes:

    * ``record``: call ``inner`` and write each pair to a fresh file at ``path``
      (an existing file is replaced);
    * ``replay``: answer from the file only, never calling a model; a request not
      in the file raises :class:`~learnloop.errors.LLMError`;
    * ``auto``: answer from the file when it has the answer, else call ``inner``
      and append the new pair.

    Each line is ``{"key", "request", "response"}`` where ``key`` is
    :meth:`ChatRequest.key`. The same request made *n* times is answered by the
    *n* recorded responses in order (sampled answers replay as sampled); beyond
    them, ``replay`` repeats the last. Lines are flushed as written, so a crash
    loses at most the call in flight. Thread-safe.
    """

    def __init__(
        self,
        inner: LLMClient | None,
        path: str | os.PathLike[str],
        *,
        mode: Literal["record", "replay", "auto"] = "auto",
    ) -> None:
        if mode not in ("record", "replay", "auto"):
            raise ConfigError(f"mode must be 'record', 'replay' or 'auto', got {mode!r}")
        if inner is None and mode != "replay":
            raise ConfigError(f"mode={mode!r} calls a model: pass inner=, or use mode='replay'")
        self.path = Path(path)
        self.mode = mode
        self._inner = inner
        self._lock = threading.Lock()
        self._recorded: dict[str, list[ChatResponse]] = {}
        self._served: dict[str, int] = {}
        if mode == "record":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("", encoding="utf-8")
        elif self.path.exists():
            self._load()
        elif mode == "replay":
            raise ConfigError(
                f"replay file {str(self.path)!r} does not exist; record a run first with "
                "mode='record' (or use mode='auto')"
            )

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").split("\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                response = ChatResponse.from_dict(entry["response"])
                key = str(entry["key"])
            except (ValueError, KeyError, TypeError) as exc:
                if number == len(lines):  # a write cut short by a crash
                    logger.warning("ignoring a truncated last line in %s", self.path)
                    continue
                raise InvalidInputError(
                    f"line {number} of {str(self.path)!r} is not a recorded call ({exc}); "
                    "re-record the file with mode='record'"
                ) from None
            self._recorded.setdefault(key, []).append(response)

    @property
    def num_recorded(self) -> int:
        """Number of responses in the file."""
        with self._lock:
            return sum(len(responses) for responses in self._recorded.values())

    def complete(self, request: ChatRequest) -> ChatResponse:
        """Answer from the recording or the inner client, per ``mode``."""
        key = request.key()
        with self._lock:
            occurrence = self._served.get(key, 0)
            self._served[key] = occurrence + 1
            recorded = self._recorded.get(key, [])
            if self.mode != "record" and occurrence < len(recorded):
                return recorded[occurrence]
            if self.mode == "replay":
                if recorded:
                    return recorded[-1]
                raise LLMError(
                    f"request {request.preview()} (key {key[:12]}) is not in the replay file "
                    f"{str(self.path)!r}; the run differs from the recorded one, or re-record "
                    "with mode='record' or 'auto'"
                )
        assert self._inner is not None  # checked in __init__ for these modes
        response = self._inner.complete(request)
        line = canonical_json(
            {"key": key, "request": request.to_dict(), "response": response.to_dict()}
        )
        with self._lock:
            self._recorded.setdefault(key, []).append(response)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        return response

    def __repr__(self) -> str:
        return f"RecordReplayClient({str(self.path)!r}, mode={self.mode!r})"
