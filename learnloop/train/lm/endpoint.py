"""An OpenAI-compatible endpoint for the policy being trained, capturing every call.

Point any agent's OpenAI client at it, and each chat completion becomes a step of
the caller's episode, with the prompt and completion token ids and the
completion's log-probabilities: exactly what GRPO trains on. The agent needs no
code change besides its base URL, and reports its reward at the end.

Routes (Starlette; ``uvicorn`` serves them):

* ``GET /v1/models``, ``POST /v1/chat/completions`` (plain, and streaming with
  ``"stream": true`` as server-sent events);
* the same under ``/episodes/{episode_id}/v1/...``: a per-episode base URL, for
  clients that cannot set headers; otherwise the episode id comes from the
  ``X-Learnloop-Episode`` header. A call without an episode id is served and not
  captured;
* ``POST /episodes/{episode_id}/complete`` with ``{"reward": float, "status":
  "success"|"failure"}``: ends the episode (it goes to the store).

Extensions: a request may carry ``"allowed_completions": [...]`` (via the SDK's
``extra_body``) to constrain the answer to one of those texts; every response
carries ``"learnloop": {"episode_id", "step_index", "prompt_token_ids",
"completion_token_ids", "completion_logprobs"}`` (readable through the SDK's
``model_extra``). ``"logprobs": true`` returns them in the OpenAI format too.

Streaming sends the completion's text token by token once it has been sampled
(the tokens are not produced any faster: generation is one batched call).

Concurrent calls are batched: calls that arrive while a batch is generating (or
within ``batch_window_s`` of the first of a quiet spell) and share their sampling
settings and allowed completions are generated together, up to ``max_batch``
rows, so that the G attempts of a group cost little more than one. A call with a
``seed`` is generated alone, so that the same seed gives the same answer.

    >>> with PolicyServer(PolicyService(lm, recorder=recorder)) as server:  # doctest: +SKIP
    ...     client = openai.OpenAI(base_url=server.episode_url("ep-1"), api_key="-")
    ...     client.chat.completions.create(model="policy", messages=[...])
"""

from __future__ import annotations

import collections
import copy
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from learnloop.episode import Episode
from learnloop.errors import ClosedError, ConfigError, InvalidInputError
from learnloop.train.lm.config import SamplingConfig
from learnloop.train.lm.conversation import TokenTrace
from learnloop.train.lm.generation import ActionConstraint, Completion, generate
from learnloop.train.lm.model import LanguageModel

__all__ = [
    "EPISODE_HEADER",
    "ChatCompletionRequest",
    "PolicyServer",
    "PolicyService",
    "check_batching",
    "create_app",
    "episode_traces",
]

logger = logging.getLogger(__name__)

#: Request header naming the caller's episode.
EPISODE_HEADER = "X-Learnloop-Episode"


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content)
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat-completion request the policy honours (validated)."""

    model_config = ConfigDict(extra="ignore")
    model: str = ""
    messages: list[_Message] = Field(min_length=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    stop: str | list[str] | None = None
    stream: bool = False
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    logprobs: bool = False
    allowed_completions: list[str] | None = None

    def sampling(self, default_max_tokens: int) -> SamplingConfig:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingConfig(
            max_new_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(s for s in stop if s),
        )


def check_batching(max_batch: int, batch_window_s: float) -> None:
    """Raise ConfigError unless ``max_batch`` is an int >= 1 and the window lies in [0, 1] s."""
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ConfigError(
            f"PolicyService needs max_batch >= 1, an int (serve-policy --max-batch; 1 serves "
            f"calls one by one), got {max_batch!r}"
        )
    if not 0.0 <= batch_window_s <= 1.0:
        raise ConfigError(
            f"PolicyService needs 0 <= batch_window_s <= 1, in seconds (serve-policy "
            f"--batch-window-ms in [0, 1000]), got {batch_window_s!r}"
        )


@dataclass(slots=True, eq=False)
class _PendingCall:
    """A call waiting for its batch; the leader fills ``completion`` or ``error``."""

    messages: list[dict[str, str]]
    sampling: SamplingConfig
    allowed: tuple[str, ...] | None
    completion: Completion | None = None
    error: BaseException | None = None
    shared_error: bool = False
    """The error is the whole batch's (raise a copy in each caller), not this call's own."""

    @property
    def key(self) -> tuple[SamplingConfig, tuple[str, ...] | None]:
        return self.sampling, self.allowed

    @property
    def finished(self) -> bool:
        return self.completion is not None or self.error is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class CapturedCall:
    """One served call: the completion and where it was recorded."""

    completion: Completion
    episode_id: str | None
    step_index: int | None


class PolicyService:
    """Samples from the policy and records each call as a step of the caller's episode.

    Args:
        lm: the policy (its weights may be trained between calls; calls and
            updates are serialized by :attr:`lock`).
        recorder: a :class:`~learnloop.recorder.Recorder`; None serves without capturing.
        model_name: the name ``/v1/models`` lists and responses carry.
        default_max_tokens: token cap when a request sets none.
        agent_id: agent id of episodes the endpoint opens itself.
        max_batch: most calls generated together (1 serves them one by one).
        batch_window_s: how long the first call after a quiet spell waits for
            others to join its batch (calls that arrive during a generation join
            the next batch without it).
    """

    def __init__(
        self,
        lm: LanguageModel,
        *,
        recorder: Any = None,
        model_name: str | None = None,
        default_max_tokens: int = 64,
        agent_id: str = "policy-endpoint",
        max_batch: int = 16,
        batch_window_s: float = 0.02,
    ) -> None:
        check_batching(max_batch, batch_window_s)
        self.lm = lm
        self.recorder = recorder
        self.model_name = model_name or lm.name
        self.default_max_tokens = default_max_tokens
        self.agent_id = agent_id
        self.batch_window_s = batch_window_s
        self.max_batch = max_batch
        self.lock = threading.Lock()
        """Held while the model generates; hold it to update the weights between calls."""
        self.created = int(time.time())
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        """How many batches of each size were generated (calls with a seed count as 1)."""
        self._action_tokens: dict[tuple[str, ...], int] = {}  # allowed set -> longest, tokens
        self._pending: list[_PendingCall] = []
        self._queue = threading.Condition()  # guards _pending and _leading
        self._leading = False

    def complete(self, request: ChatCompletionRequest, episode_id: str | None) -> CapturedCall:
        """Sample one completion for ``request`` and capture it under ``episode_id``."""
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        sampling = request.sampling(self.default_max_tokens)
        allowed = tuple(request.allowed_completions) if request.allowed_completions else None
        if allowed:
            self._check_room(allowed, sampling.max_new_tokens)
        call = _PendingCall(messages, sampling, allowed)
        if request.seed is not None or self.max_batch == 1:
            with self.lock:
                self._generate_batch([call], seed=request.seed)
            completion = self._result(call)
        else:
            completion = self._batched(call)
        step_index = None
        if episode_id is not None and self.recorder is not None:
            step_index = self._capture(episode_id, messages, completion)
        return CapturedCall(completion=completion, episode_id=episode_id, step_index=step_index)

    def _check_room(self, allowed: tuple[str, ...], max_tokens: int) -> None:
        """Refuse a token cap too short for the longest allowed completion: the answer
        would be cut to a fragment that is none of them."""
        longest = self._action_tokens.get(allowed)
        if longest is None:
            with self.lock:  # the tokenizer is not used from two threads at once
                longest = ActionConstraint.from_texts(self.lm, allowed).longest - 1
            if len(self._action_tokens) < 1024:
                self._action_tokens[allowed] = longest
        if max_tokens < longest:
            raise InvalidInputError(
                f"max_tokens {max_tokens} cannot hold the longest allowed completion "
                f"({longest} tokens); set max_tokens to at least {longest}"
            )

    # --- batching -------------------------------------------------------------------

    @property
    def max_batch(self) -> int:
        """Most calls generated together (1 serves them one by one); settable."""
        return self._max_batch

    @max_batch.setter
    def max_batch(self, value: int) -> None:
        check_batching(value, self.batch_window_s)
        self._max_batch = value

    def _batched(self, call: _PendingCall) -> Completion:
        """Queue ``call``; one waiting thread at a time leads, generating batches until its
        own call is done, then hands over to a thread whose call is still waiting.

        Only a call that found no generation under way waits ``batch_window_s`` for
        others (it ends early once a full batch is queued); a call that waited behind
        a leader is served by the next batch at once.
        """
        waited = False
        with self._queue:
            self._pending.append(call)
            if len(self._pending) >= self._max_batch:
                self._queue.notify_all()  # a leader in its window: the batch is full
            try:
                while not call.finished and self._leading:
                    waited = True
                    self._queue.wait()
            except BaseException:  # interrupted while waiting: nobody will read the answer
                self._drop(call)
                raise
            if call.finished:
                return self._result(call)
            self._leading = True
        try:
            if not waited and self.batch_window_s > 0:
                with self._queue:
                    self._queue.wait_for(
                        lambda: len(self._pending) >= self._max_batch, self.batch_window_s
                    )
            while not call.finished:
                self._serve_next_batch(call)
        finally:
            with self._queue:
                self._drop(call)
                self._leading = False
                self._queue.notify_all()
        return self._result(call)

    def _drop(self, call: _PendingCall) -> None:
        """Remove ``call`` from the queue if it is still there (the queue's lock held)."""
        self._pending = [c for c in self._pending if c is not call]

    @staticmethod
    def _result(call: _PendingCall) -> Completion:
        error = call.error
        if error is None:
            assert call.completion is not None
            return call.completion
        if not call.shared_error:
            raise error
        # The batch's error reaches every caller: each raises its own copy (one
        # exception object raised in N threads would collect all their frames).
        if isinstance(error, Exception):
            try:
                fresh = copy.copy(error)
            except Exception:
                fresh = RuntimeError(f"generation failed: {error!r}")
        else:
            fresh = RuntimeError(f"generation was interrupted: {error!r}")
        raise fresh from error

    def _serve_next_batch(self, leader: _PendingCall) -> None:
        """Take the next batch once the model is free (calls arriving while the trainer
        holds :attr:`lock` join it) and generate it."""
        with self.lock:
            with self._queue:
                batch = self._take_batch()
            if not batch:  # cannot happen: the leader's own call is queued or answered
                leader.error = RuntimeError("the endpoint lost track of this call; retry it")
                return
            try:
                self._generate_batch(batch)
            except BaseException as exc:
                for call in batch:
                    if not call.finished:
                        call.error, call.shared_error = exc, True
                raise
            finally:
                with self._queue:
                    self._queue.notify_all()

    def _take_batch(self) -> list[_PendingCall]:
        """The oldest waiting call and those sharing its settings, oldest first, at most
        ``max_batch``; removed from the queue. Empty when nothing waits."""
        if not self._pending:
            return []
        key = self._pending[0].key
        batch = [c for c in self._pending if c.key == key][: self._max_batch]
        taken = set(map(id, batch))
        self._pending = [c for c in self._pending if id(c) not in taken]
        return batch

    def _generate_batch(self, batch: list[_PendingCall], *, seed: int | None = None) -> None:
        """Generate ``batch`` as one call of the model (:attr:`lock` held); each call gets
        its completion, or an error: its own (a conversation the tokenizer refuses) or
        the batch's. ``seed`` seeds sampling (a fresh random seed when None)."""
        sampling, allowed = batch[0].key
        generator = torch.Generator()
        generator.manual_seed(seed if seed is not None else uuid.uuid4().int % 2**63)
        prompts: list[list[int]] = []
        ready: list[_PendingCall] = []
        for call in batch:
            try:
                prompts.append(self.lm.chat_ids(call.messages))
                ready.append(call)
            except Exception as exc:
                call.error = exc
        if not ready:
            return
        try:
            constraint = ActionConstraint.from_texts(self.lm, allowed) if allowed else None
            completions = generate(
                self.lm, prompts, sampling, generator=generator, constraint=constraint
            )
        except Exception as exc:
            for call in ready:
                call.error, call.shared_error = exc, True
            return
        self.batch_sizes[len(ready)] += 1
        for call, completion in zip(ready, completions, strict=True):
            call.completion = completion

    def _capture(
        self, episode_id: str, messages: Sequence[Mapping[str, str]], completion: Completion
    ) -> int | None:
        if not self.recorder.is_open(episode_id):
            task = next((m["content"] for m in messages if m["role"] == "user"), "")
            self.recorder.begin(
                task,
                agent_id=self.agent_id,
                episode_id=episode_id,
                metadata={"source": "policy-endpoint", "model": self.model_name},
            )
        index: int | None = self.recorder.step(
            episode_id,
            completion.text,
            decision=completion.text,
            prompt_token_ids=completion.prompt_ids,
            completion_token_ids=completion.completion_ids,
            completion_logprobs=completion.log_probs,
            metadata={"finish_reason": completion.finish_reason, "model": self.model_name},
        )
        return index

    def complete_episode(self, episode_id: str, reward: float, status: str) -> Episode:
        """End the caller's episode with its reward (status 'success' or 'failure')."""
        if self.recorder is None:
            raise ConfigError("this endpoint records no episodes; start it with a recorder")
        if not self.recorder.is_open(episode_id):
            raise InvalidInputError(
                f"episode {episode_id!r} is not open here; make a chat call with it first"
            )
        episode: Episode = self.recorder.complete(episode_id, status=status, reward=reward)
        return episode

    # --- response bodies -----------------------------------------------------------------

    def _extension(self, call: CapturedCall) -> dict[str, Any]:
        c = call.completion
        return {
            "episode_id": call.episode_id,
            "step_index": call.step_index,
            "prompt_token_ids": list(c.prompt_ids),
            "completion_token_ids": list(c.completion_ids),
            "completion_logprobs": list(c.log_probs),
        }

    def _logprobs(self, completion: Completion) -> dict[str, Any]:
        tokens = self.lm.tokenizer.convert_ids_to_tokens(list(completion.completion_ids))
        return {
            "content": [
                {"token": str(t), "logprob": lp, "bytes": list(str(t).encode()), "top_logprobs": []}
                for t, lp in zip(tokens, completion.log_probs, strict=True)
            ]
        }

    def response_body(self, call: CapturedCall, request: ChatCompletionRequest) -> dict[str, Any]:
        """The non-streaming ``chat.completion`` object."""
        c = call.completion
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": c.text},
                    "finish_reason": c.finish_reason,
                    "logprobs": self._logprobs(c) if request.logprobs else None,
                }
            ],
            "usage": {
                "prompt_tokens": len(c.prompt_ids),
                "completion_tokens": len(c.completion_ids),
                "total_tokens": len(c.prompt_ids) + len(c.completion_ids),
            },
            "learnloop": self._extension(call),
        }

    def stream_chunks(self, call: CapturedCall) -> list[dict[str, Any]]:
        """The ``chat.completion.chunk`` objects of a streamed answer, in order."""
        c = call.completion
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model_name,
        }
        chunks = [
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            }
        ]
        sent = ""
        for end in range(1, len(c.completion_ids) + 1):
            text = self.lm.decode(c.completion_ids[:end]).lstrip()
            piece = text[len(sent) :] if text.startswith(sent) else ""
            if len(sent) + len(piece) > len(c.text):
                piece = c.text[len(sent) :]
            if piece:
                sent += piece
                chunks.append(
                    {
                        **base,
                        "choices": [
                            {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                        ],
                    }
                )
        if sent != c.text:  # decoding was not incremental (stop string cut, merges)
            chunks.append(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": c.text[len(sent) :]},
                            "finish_reason": None,
                        }
                    ],
                }
            )
        chunks.append(
            {
                **base,
                "choices": [{"index": 0, "delta": {}, "finish_reason": c.finish_reason}],
                "learnloop": self._extension(call),
            }
        )
        return chunks


def create_app(service: PolicyService) -> Any:
    """The Starlette application serving ``service`` (routes in the module docstring)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def error(status: int, message: str, kind: str = "invalid_request_error") -> Response:
        return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)

    async def models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": service.model_name,
                        "object": "model",
                        "created": service.created,
                        "owned_by": "learnloop",
                    }
                ],
            }
        )

    async def chat(request: Request) -> Response:
        episode_id = request.path_params.get("episode_id") or request.headers.get(EPISODE_HEADER)
        try:
            body = ChatCompletionRequest.model_validate(await request.json())
        except json.JSONDecodeError:
            return error(400, "the request body is not JSON")
        except ValidationError as exc:
            return error(400, f"invalid chat completion request: {exc.errors(include_url=False)}")
        try:
            call = await run_in_threadpool(service.complete, body, episode_id)
        except (ConfigError, InvalidInputError, ClosedError) as exc:
            return error(400, str(exc))
        if not body.stream:
            return JSONResponse(service.response_body(call, body))
        chunks = service.stream_chunks(call)

        async def events() -> AsyncIterator[str]:
            for chunk in chunks:
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def complete(request: Request) -> Response:
        episode_id = str(request.path_params["episode_id"])
        try:
            data = await request.json()
            reward = float(data.get("reward", 0.0))
            status = str(data.get("status", "success" if reward > 0 else "failure"))
        except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
            return error(400, 'body must be {"reward": <number>, "status": "success"|"failure"}')
        try:
            episode = await run_in_threadpool(service.complete_episode, episode_id, reward, status)
        except (ConfigError, InvalidInputError) as exc:
            return error(400, str(exc))
        return JSONResponse(
            {
                "episode_id": episode.id,
                "status": episode.status.value,
                "num_steps": len(episode.steps),
            }
        )

    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/episodes/{episode_id}/v1/models", models, methods=["GET"]),
        Route("/episodes/{episode_id}/v1/chat/completions", chat, methods=["POST"]),
        Route("/episodes/{episode_id}/complete", complete, methods=["POST"]),
    ]
    return Starlette(routes=routes)


class PolicyServer:
    """Runs :func:`create_app` under uvicorn in a background thread (a context manager).

    Args:
        service: what to serve.
        host: interface to bind (loopback by default).
        port: TCP port; 0 picks a free one (see :attr:`port` once started).
    """

    def __init__(self, service: PolicyService, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.service = service
        self.host = host
        self._port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 30.0) -> PolicyServer:
        """Start serving; returns once the socket listens."""
        if self._thread is not None:
            raise ClosedError("PolicyServer already started; build a new one to serve again")
        try:
            import uvicorn
        except ImportError as exc:
            raise ImportError(
                f"serving needs uvicorn: pip install 'learnloop[lm]' ({exc})"
            ) from exc
        config = uvicorn.Config(
            create_app(self.service),
            host=self.host,
            port=self._port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="policy-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(
                    f"the policy server did not start on {self.host}:{self._port}; "
                    "is the port free? pass port=0 for any free port"
                )
            time.sleep(0.01)
        self._port = int(self._server.servers[0].sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port."""
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return f"http://{self.host}:{self._port}/v1"

    def episode_url(self, episode_id: str) -> str:
        """The per-episode OpenAI base URL: calls through it are captured under ``episode_id``."""
        return f"http://{self.host}:{self._port}/episodes/{episode_id}/v1"


def episode_traces(episode: Episode) -> list[TokenTrace]:
    """One trace per captured call of ``episode``: prompt tokens, then the model's tokens.

    These are the token ids the endpoint returned in ``learnloop.prompt_token_ids``
    and ``completion_token_ids``; steps without tokens (e.g. tool steps recorded
    by the agent) are skipped.
    """
    traces = []
    for step in episode.steps:
        if not step.completion_token_ids:
            continue
        if len(step.completion_logprobs) != len(step.completion_token_ids):
            raise InvalidInputError(
                f"step {step.index} of episode {episode.id} has "
                f"{len(step.completion_token_ids)} completion tokens but "
                f"{len(step.completion_logprobs)} log-probs; record both"
            )
        prompt, completion = step.prompt_token_ids, step.completion_token_ids
        traces.append(
            TokenTrace(
                ids=tuple(prompt) + tuple(completion),
                step_of_token=(-1,) * len(prompt) + (0,) * len(completion),
                log_probs=(0.0,) * len(prompt) + tuple(step.completion_logprobs),
            )
        )
    return traces
