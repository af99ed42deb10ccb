"""Language-model clients: one small protocol, requests, responses, prices and clients.

Everything that talks to a language model goes through :class:`LLMClient`, a
protocol with a single method, ``complete(ChatRequest) -> ChatResponse``. It is
synchronous on purpose; an agent that wants parallel calls runs them in threads
(every client here is thread-safe).

Implementations:

* :class:`OpenAICompatibleClient`: any OpenAI-compatible server (OpenAI, vLLM,
  Ollama, llama.cpp) through the official ``openai`` SDK (extra ``llm``);
* :class:`~learnloop.prompts.replay.RecordReplayClient`: saves every request and
  response to JSONL, keyed by a hash of the request, and plays them back so a run
  is reproduced exactly;
* :class:`~learnloop.prompts.usage.MeteredClient`: counts calls, tokens and cost in
  a :class:`~learnloop.prompts.usage.UsageMeter` and enforces a
  :class:`~learnloop.prompts.usage.Budget`;
* :class:`ScriptedLLMClient`: canned replies chosen by rule, for tests of code that
  calls a model.

The embedded default model (SmolLM2-135M-Instruct served on loopback) lives in
:mod:`learnloop.prompts.local_model`.

    >>> client = ScriptedLLMClient([(r"weather", "web_search")], default="shell_exec")
    >>> client.complete(ChatRequest(messages=[user_message("what's the weather in Oslo?")])).text
    'web_search'
    >>> mini = ModelPrice(input_per_million=0.15, output_per_million=0.6)
    >>> usage = TokenUsage(prompt_tokens=1000, completion_tokens=500)
    >>> round(PriceTable({"gpt-4o-mini": mini}).cost("gpt-4o-mini-2024-07-18", usage), 6)
    0.00045
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from learnloop.errors import (
    BudgetExceededError,
    ConfigError,
    LLMError,
    LLMTimeoutError,
    RateLimitError,
)

__all__ = [
    "API_KEY_ENV_VARS",
    "BudgetExceededError",
    "ChatRequest",
    "ChatResponse",
    "LLMClient",
    "LLMEndpointConfig",
    "ModelPrice",
    "OpenAICompatibleClient",
    "PriceTable",
    "ScriptedLLMClient",
    "TokenUsage",
    "assistant_message",
    "canonical_json",
    "system_message",
    "user_message",
]

logger = logging.getLogger(__name__)

#: Environment variables read for the API key, first set wins (an explicit ``api_key`` beats both).
API_KEY_ENV_VARS: tuple[str, ...] = ("LEARNLOOP_LLM_API_KEY", "OPENAI_API_KEY")

Role = Literal["system", "user", "assistant"]
_ROLES = frozenset({"system", "user", "assistant"})


def system_message(content: str) -> Mapping[str, str]:
    """A ``{"role": "system", "content": ...}`` message."""
    return {"role": "system", "content": content}


def user_message(content: str) -> Mapping[str, str]:
    """A ``{"role": "user", "content": ...}`` message."""
    return {"role": "user", "content": content}


def assistant_message(content: str) -> Mapping[str, str]:
    """A ``{"role": "assistant", "content": ...}`` message."""
    return {"role": "assistant", "content": content}


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal strings (hash keys)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """One chat completion request; equal requests have equal :meth:`key`."""

    messages: Sequence[Mapping[str, str]]
    """The conversation: mappings with ``role`` (system, user, assistant) and ``content``."""
    model: str | None = None
    """Model name; None means the client's own model."""
    temperature: float = 0.0
    """Sampling temperature; 0 is greedy (reproducible on one server)."""
    top_p: float = 1.0
    """Nucleus sampling mass, in (0, 1]."""
    max_tokens: int = 256
    """Most tokens to generate."""
    seed: int | None = None
    """Sampling seed passed to the server (honoured by llama.cpp, vLLM; best effort on OpenAI)."""
    stop: tuple[str, ...] = ()
    """Strings that end generation."""
    grammar: str | None = None
    """A GBNF grammar constraining the output (llama.cpp servers; sent as ``extra_body``)."""
    json_schema: Mapping[str, Any] | None = None
    """A JSON schema the output must follow (``response_format``); exclusive with ``grammar``."""

    def __post_init__(self) -> None:
        if not self.messages:
            raise ConfigError("messages is empty; pass at least one user message")
        messages: list[Mapping[str, str]] = []
        for index, message in enumerate(self.messages):
            role, content = message.get("role"), message.get("content")
            if role not in _ROLES or not isinstance(content, str) or len(message) != 2:
                raise ConfigError(
                    f"messages[{index}] = {dict(message)!r} is not a chat message; use "
                    f"{{'role': one of {sorted(_ROLES)}, 'content': str}} (see user_message())"
                )
            messages.append(MappingProxyType({"role": role, "content": content}))
        object.__setattr__(self, "messages", tuple(messages))
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))
        object.__setattr__(self, "stop", tuple(self.stop))
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(f"temperature must lie in [0, 2], got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must lie in (0, 1], got {self.top_p!r}")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens!r}")
        if self.grammar is not None and self.json_schema is not None:
            raise ConfigError("pass grammar or json_schema, not both; a server applies only one")
        if self.json_schema is not None:
            try:  # a frozen, JSON-safe copy, so the request key cannot drift
                schema = json.loads(json.dumps(self.json_schema))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"json_schema is not JSON-serialisable: {exc}") from None
            object.__setattr__(self, "json_schema", MappingProxyType(schema))

    def __hash__(self) -> int:
        return hash(self.key())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_dict` inverts it."""
        return {
            "messages": [dict(message) for message in self.messages],
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "stop": list(self.stop),
            "grammar": self.grammar,
            "json_schema": None if self.json_schema is None else dict(self.json_schema),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatRequest:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "stop": tuple(data.get("stop", ()))})

    def key(self) -> str:
        """SHA-256 (hex) of the request's canonical JSON: the record/replay key."""
        return hashlib.sha256(canonical_json(self.to_dict()).encode("utf-8")).hexdigest()

    def preview(self, width: int = 80) -> str:
        """The messages' text on one line, cut to ``width`` characters, quoted (for errors)."""
        text = " ".join(" | ".join(message["content"] for message in self.messages).split())
        return repr(text[:width] + ("..." if len(text) > width else ""))


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenUsage:
    """Tokens one call (or many, summed with ``+``) consumed."""

    prompt_tokens: int = 0
    """Tokens read (the prompt)."""
    completion_tokens: int = 0
    """Tokens generated."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatResponse:
    """What a model answered to one :class:`ChatRequest`."""

    text: str
    """The generated text."""
    finish_reason: str
    """Why generation stopped: ``stop``, ``length``, ... as the server says."""
    usage: TokenUsage
    """Tokens the call consumed."""
    model: str
    """The model that answered, as the server names it."""
    latency_s: float = 0.0
    """Wall time of the call, in seconds."""
    cost_usd: float = 0.0
    """Price of the call from the client's :class:`PriceTable`, in US dollars."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_dict` inverts it."""
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
            },
            "model": self.model,
            "latency_s": self.latency_s,
            "cost_usd": self.cost_usd,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatResponse:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "usage": TokenUsage(**data["usage"])})


@runtime_checkable
class LLMClient(Protocol):
    """Anything that answers chat requests. Implementations must be thread-safe."""

    def complete(self, request: ChatRequest) -> ChatResponse:
        """Answer one request.

        Raises:
            LLMError: the call failed (``RateLimitError``, ``LLMTimeoutError`` for
                those causes); the message names the endpoint and the fix.
        """
        ...


# --------------------------------------------------------------------------- prices


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPrice:
    """What one model costs, in US dollars per million tokens."""

    input_per_million: float = 0.0
    """Price of one million prompt tokens."""
    output_per_million: float = 0.0
    """Price of one million generated tokens."""

    def __post_init__(self) -> None:
        if self.input_per_million < 0 or self.output_per_million < 0:
            raise ConfigError(f"prices must be >= 0, got {self!r}")


class PriceTable:
    """Model name -> :class:`ModelPrice`; the longest matching prefix wins.

    Servers often answer with a dated name (``gpt-4o-mini-2024-07-18`` for
    ``gpt-4o-mini``), hence prefixes. A model that matches nothing costs
    ``default``; with ``default=None`` it raises, so a budget cannot be
    silently bypassed by a typo. Local models cost 0 (the default default).
    """

    def __init__(
        self,
        prices: Mapping[str, ModelPrice] | None = None,
        *,
        default: ModelPrice | None = ModelPrice(),
    ) -> None:
        self._prices = dict(prices or {})
        self._default = default

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]], *, strict: bool = False) -> PriceTable:
        """From ``{"model": [input_per_million, output_per_million], ...}`` (a JSON file's shape).

        With ``strict=True`` a model missing from the table raises instead of costing 0.
        """
        prices: dict[str, ModelPrice] = {}
        for model, pair in data.items():
            if len(pair) != 2:
                raise ConfigError(
                    f"price of {model!r} is {pair!r}; give [input_per_million, output_per_million]"
                )
            prices[model] = ModelPrice(input_per_million=pair[0], output_per_million=pair[1])
        return cls(prices, default=None if strict else ModelPrice())

    def price(self, model: str) -> ModelPrice:
        """The price of ``model`` (see the class docstring for matching)."""
        matches = [name for name in self._prices if model.startswith(name)]
        if matches:
            return self._prices[max(matches, key=len)]
        if self._default is None:
            raise ConfigError(
                f"no price for model {model!r} in the price table (known: "
                f"{sorted(self._prices)}); add it, or pass default=ModelPrice() to price it at 0"
            )
        return self._default

    def cost(self, model: str, usage: TokenUsage) -> float:
        """Dollars for ``usage`` tokens of ``model``: tokens / 1e6 * price, input plus output."""
        price = self.price(model)
        return (
            usage.prompt_tokens * price.input_per_million
            + usage.completion_tokens * price.output_per_million
        ) / 1e6

    def __repr__(self) -> str:
        return f"PriceTable({self._prices!r}, default={self._default!r})"


# --------------------------------------------------------------------------- OpenAI-compatible


def _is_loopback(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMEndpointConfig:
    """Where an OpenAI-compatible model is served (flags: ``--llm-base-url``, ``--llm-model``)."""

    base_url: str = ""
    """Server URL ending in /v1, e.g. https://api.openai.com/v1; empty for the embedded model."""
    model: str = ""
    """Model name the server knows, e.g. gpt-4o-mini; empty for the embedded model."""
    timeout_s: float = 60.0
    """Seconds to wait for one call before giving up."""
    max_retries: int = 2
    """Retries of a call on connection errors, 429 and 5xx (with backoff, by the SDK)."""

    def __post_init__(self) -> None:
        if self.base_url and urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ConfigError(
                f"base_url {self.base_url!r} is not an http(s) URL; e.g. http://127.0.0.1:8080/v1"
            )
        if self.base_url and not self.model:
            raise ConfigError(f"base_url {self.base_url!r} needs a model name, e.g. gpt-4o-mini")
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout_s must be > 0, got {self.timeout_s!r}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries!r}")


class OpenAICompatibleClient:
    """An :class:`LLMClient` for OpenAI-compatible servers, on the official ``openai`` SDK.

    The API key is ``api_key`` if given, else the first of :data:`API_KEY_ENV_VARS`
    set, else (for a loopback server, which needs none) a placeholder. A loopback
    server is reached without the proxy of ``$http_proxy``. ``grammar``
    goes to the server as ``extra_body={"grammar": ...}`` (llama.cpp), ``json_schema``
    as ``response_format``.
    """

    def __init__(
        self,
        config: LLMEndpointConfig,
        *,
        api_key: str | None = None,
        price_table: PriceTable | None = None,
    ) -> None:
        if not config.base_url:
            raise ConfigError(
                "LLMEndpointConfig.base_url is empty; give the server URL, or use "
                "learnloop.prompts.LocalModelServer for the embedded model"
            )
        try:
            import openai
        except ImportError as exc:
            raise ImportError(
                "OpenAICompatibleClient needs the openai SDK: pip install 'learnloop[llm]'"
            ) from exc
        key = api_key or next((os.environ[n] for n in API_KEY_ENV_VARS if os.environ.get(n)), None)
        if key is None:
            if not _is_loopback(config.base_url):
                raise ConfigError(
                    f"no API key for {config.base_url}; set {API_KEY_ENV_VARS[0]} (or "
                    f"{API_KEY_ENV_VARS[1]}) or pass api_key="
                )
            key = "not-needed"
        self.config = config
        self.price_table = price_table if price_table is not None else PriceTable()
        self._openai = openai
        self._sdk = openai.OpenAI(
            base_url=config.base_url,
            api_key=key,
            timeout=config.timeout_s,
            max_retries=config.max_retries,
            # a loopback server is reached directly, whatever $http_proxy says
            http_client=(
                openai.DefaultHttpxClient(trust_env=False)
                if _is_loopback(config.base_url)
                else None
            ),
        )

    def complete(self, request: ChatRequest) -> ChatResponse:
        """Send one chat completion; see :meth:`LLMClient.complete`."""
        extra: dict[str, Any] = {}
        if request.grammar is not None:
            extra["extra_body"] = {"grammar": request.grammar}
        if request.json_schema is not None:
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": dict(request.json_schema)},
            }
        if request.seed is not None:
            extra["seed"] = request.seed
        if request.stop:
            extra["stop"] = list(request.stop)
        model = request.model or self.config.model
        started = time.perf_counter()
        try:
            completion = self._sdk.chat.completions.create(
                model=model,
                messages=[dict(message) for message in request.messages],  # type: ignore[misc]
                temperature=request.temperature,
                top_p=request.top_p,
                max_tokens=request.max_tokens,
                **extra,
            )
        except self._openai.OpenAIError as exc:
            raise self._translate(exc, model) from exc
        latency = time.perf_counter() - started
        choice = completion.choices[0]
        usage = TokenUsage(
            prompt_tokens=completion.usage.prompt_tokens if completion.usage else 0,
            completion_tokens=completion.usage.completion_tokens if completion.usage else 0,
        )
        answered_by = completion.model or model
        response = ChatResponse(
            text=choice.message.content or "",
            finish_reason=str(choice.finish_reason or "stop"),
            usage=usage,
            model=answered_by,
            latency_s=latency,
            cost_usd=self.price_table.cost(answered_by, usage),
        )
        logger.debug(
            "llm call %s: %d+%d tokens, %.3f s",
            answered_by,
            usage.prompt_tokens,
            usage.completion_tokens,
            latency,
        )
        return response

    def _translate(self, exc: Exception, model: str) -> LLMError:
        """Map an SDK error to the learnloop tree, naming the endpoint and the fix."""
        openai, url = self._openai, self.config.base_url
        if isinstance(exc, openai.APITimeoutError):
            return LLMTimeoutError(
                f"{url} did not answer within {self.config.timeout_s} s (model {model!r}); "
                "raise LLMEndpointConfig.timeout_s or lower max_tokens"
            )
        if isinstance(exc, openai.APIConnectionError):
            return LLMError(
                f"cannot connect to {url}: {exc}; check that the server runs and the URL "
                "(--llm-base-url) is right"
            )
        if isinstance(exc, openai.RateLimitError):
            return RateLimitError(
                f"{url} refused the call for rate or quota reasons ({exc}); slow down, "
                "raise max_retries, or check the account's quota"
            )
        if isinstance(exc, openai.AuthenticationError):
            return LLMError(
                f"{url} rejected the API key ({exc}); set {API_KEY_ENV_VARS[0]} to a valid key"
            )
        if isinstance(exc, openai.NotFoundError):
            return LLMError(
                f"{url} does not know model {model!r} or the route ({exc}); check --llm-model "
                "and that the URL ends in /v1"
            )
        if isinstance(exc, openai.APIStatusError):
            return LLMError(
                f"{url} answered HTTP {exc.status_code} for model {model!r}: {exc}; fix the "
                "request (grammar, schema, max_tokens) or the server"
            )
        return LLMError(f"call to {url} failed: {exc!r}")

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._sdk.close()

    def __enter__(self) -> OpenAICompatibleClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpenAICompatibleClient({self.config.base_url!r}, model={self.config.model!r})"


# --------------------------------------------------------------------------- scripted fake

Reply = str | Callable[[ChatRequest], str]


class ScriptedLLMClient:
    """An in-package fake :class:`LLMClient` that answers by rule, for tests.

    Each rule is ``(pattern, reply)``: the first whose regular expression is found
    (``re.search``) in the last user message answers with ``reply``, a string or a
    function of the request. Without a match, ``default`` answers, or, if None,
    an :class:`~learnloop.errors.LLMError` is raised. Token counts are
    whitespace-separated words, priced by ``price_table`` (free by default);
    latency is 0. Requests are kept in
    :attr:`requests` for assertions. It ignores ``grammar`` and ``json_schema``.
    """

    def __init__(
        self,
        rules: Sequence[tuple[str, Reply]] = (),
        *,
        default: Reply | None = None,
        price_table: PriceTable | None = None,
    ) -> None:
        self._rules = [(re.compile(pattern), reply) for pattern, reply in rules]
        self._default = default
        self._prices = price_table if price_table is not None else PriceTable()
        self._lock = threading.Lock()
        self.requests: list[ChatRequest] = []

    def complete(self, request: ChatRequest) -> ChatResponse:
        """Answer by the first matching rule; see the class docstring."""
        with self._lock:
            self.requests.append(request)
        users = [m["content"] for m in request.messages if m["role"] == "user"]
        last = users[-1] if users else ""
        reply = next((r for pattern, r in self._rules if pattern.search(last)), self._default)
        if reply is None:
            raise LLMError(
                f"no scripted rule matches {request.preview()}; add a rule or a default reply"
            )
        text = reply(request) if callable(reply) else reply
        prompt = sum(len(message["content"].split()) for message in request.messages)
        usage = TokenUsage(prompt_tokens=prompt, completion_tokens=len(text.split()))
        model = request.model or "scripted"
        return ChatResponse(
            text=text,
            finish_reason="stop",
            usage=usage,
            model=model,
            cost_usd=self._prices.cost(model, usage),
        )

    def __repr__(self) -> str:
        return f"ScriptedLLMClient({len(self._rules)} rules)"
