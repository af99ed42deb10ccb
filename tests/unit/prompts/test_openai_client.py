"""OpenAICompatibleClient against a small OpenAI-shaped HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("openai", reason="needs the llm extra (pip install 'learnloop[llm]')")

from learnloop.errors import ConfigError, LLMError, LLMTimeoutError, RateLimitError
from learnloop.prompts import (
    ChatRequest,
    LLMEndpointConfig,
    ModelPrice,
    OpenAICompatibleClient,
    PriceTable,
    open_llm_client,
    user_message,
)

pytestmark = pytest.mark.network


class Endpoint(ThreadingHTTPServer):
    """Answers /v1/chat/completions with ``status`` and ``body`` after ``delay_s``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.status = 200
        self.body: dict[str, Any] = {}
        self.delay_s = 0.0
        self.received: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True
    server: Endpoint

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.received.append(json.loads(self.rfile.read(length)))
        time.sleep(self.server.delay_s)
        payload = json.dumps(self.server.body).encode()
        try:
            self.send_response(self.server.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (timeout test)
            pass

    def log_message(self, *args: object) -> None:
        pass


def completion(text: str, *, model: str = "gpt-4o-mini-2024-07-18") -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 2000, "completion_tokens": 100, "total_tokens": 2100},
    }


@pytest.fixture(scope="module")
def shared_endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def endpoint(shared_endpoint: Endpoint) -> Endpoint:
    shared_endpoint.status, shared_endpoint.body, shared_endpoint.delay_s = 200, {}, 0.0
    shared_endpoint.received.clear()
    return shared_endpoint


def make_client(endpoint: Endpoint, **config: Any) -> OpenAICompatibleClient:
    prices = PriceTable({"gpt-4o-mini": ModelPrice(input_per_million=0.15, output_per_million=0.6)})
    settings = {"base_url": endpoint.url, "model": "gpt-4o-mini", "max_retries": 0, **config}
    return OpenAICompatibleClient(LLMEndpointConfig(**settings), price_table=prices)


def test_grammar_goes_in_the_body_and_usage_is_priced(endpoint: Endpoint) -> None:
    endpoint.body = completion("file_read")
    client = make_client(endpoint)
    request = ChatRequest(
        messages=[user_message("read a.txt")], grammar='root ::= "file_read"', seed=7, stop=("\n",)
    )
    response = client.complete(request)
    sent = endpoint.received[-1]
    assert sent["grammar"] == 'root ::= "file_read"' and "response_format" not in sent
    assert sent["model"] == "gpt-4o-mini" and sent["seed"] == 7 and sent["stop"] == ["\n"]
    assert sent["messages"] == [{"role": "user", "content": "read a.txt"}]
    assert sent["temperature"] == 0.0 and sent["max_tokens"] == 256
    assert response.text == "file_read" and response.model == "gpt-4o-mini-2024-07-18"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (2000, 100)
    # 2000 * 0.15 / 1e6 + 100 * 0.6 / 1e6 = 0.0003 + 0.00006
    assert response.cost_usd == pytest.approx(0.00036, abs=1e-15)
    client.close()


def test_json_schema_goes_as_response_format(endpoint: Endpoint) -> None:
    endpoint.body = completion('{"tool": "web_search"}')
    schema = {"type": "object", "properties": {"tool": {"type": "string"}}}
    make_client(endpoint).complete(
        ChatRequest(messages=[user_message("x")], json_schema=schema, model="other")
    )
    sent = endpoint.received[-1]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }
    assert sent["model"] == "other" and "grammar" not in sent


@pytest.mark.parametrize(
    "status, error, fragment",
    [
        (429, RateLimitError, "rate or quota"),
        (401, LLMError, "API key"),
        (404, LLMError, "does not know model 'gpt-4o-mini'"),
        (400, LLMError, "HTTP 400"),
        (500, LLMError, "HTTP 500"),
    ],
)
def test_http_errors_map_to_the_error_tree(
    endpoint: Endpoint, status: int, error: type, fragment: str
) -> None:
    endpoint.status, endpoint.body = status, {"error": {"message": "nope", "type": "x"}}
    with pytest.raises(error, match=fragment) as caught:
        make_client(endpoint).complete(ChatRequest(messages=[user_message("x")]))
    assert endpoint.url in str(caught.value)


def test_timeout_raises_llm_timeout_error(endpoint: Endpoint) -> None:
    endpoint.body, endpoint.delay_s = completion("late"), 1.0
    with pytest.raises(LLMTimeoutError, match=r"within 0.2 s"):
        make_client(endpoint, timeout_s=0.2).complete(ChatRequest(messages=[user_message("x")]))


def test_open_llm_client_uses_a_given_endpoint(endpoint: Endpoint) -> None:
    endpoint.body = completion("hello")
    config = LLMEndpointConfig(base_url=endpoint.url, model="served-model", max_retries=0)
    with open_llm_client(config) as client:
        assert client.complete(ChatRequest(messages=[user_message("x")])).text == "hello"
    assert endpoint.received[-1]["model"] == "served-model"


def test_connection_refused_names_the_url() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    client = OpenAICompatibleClient(LLMEndpointConfig(base_url=url, model="m", max_retries=0))
    with pytest.raises(LLMError, match=f"cannot connect to {url}"):
        client.complete(ChatRequest(messages=[user_message("x")]))


def test_api_key_needed_off_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("LEARNLOOP_LLM_API_KEY", raising=False)
    remote = LLMEndpointConfig(base_url="https://api.example.com/v1", model="m")
    with pytest.raises(ConfigError, match="LEARNLOOP_LLM_API_KEY"):
        OpenAICompatibleClient(remote)
    OpenAICompatibleClient(remote, api_key="sk-test").close()
    monkeypatch.setenv("LEARNLOOP_LLM_API_KEY", "sk-env")
    OpenAICompatibleClient(remote).close()
    OpenAICompatibleClient(LLMEndpointConfig(base_url="http://localhost:1/v1", model="m")).close()


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"base_url": "ftp://x", "model": "m"}, "http"),
        ({"base_url": "http://x/v1"}, "needs a model"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_retries": -1}, "max_retries"),
    ],
)
def test_bad_endpoint_config(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        LLMEndpointConfig(**fields)
    with pytest.raises(ConfigError, match="base_url is empty"):
        OpenAICompatibleClient(LLMEndpointConfig())
