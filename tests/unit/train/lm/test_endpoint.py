"""The OpenAI-compatible policy endpoint, through the official openai SDK."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from learnloop.errors import InvalidInputError  # noqa: E402
from learnloop.recorder import Recorder  # noqa: E402
from learnloop.store import SqliteStore  # noqa: E402
from learnloop.train.lm.endpoint import (  # noqa: E402
    EPISODE_HEADER,
    CapturedCall,
    ChatCompletionRequest,
    PolicyServer,
    PolicyService,
    episode_traces,
)
from learnloop.train.lm.grpo_lm import collate_traces  # noqa: E402
from learnloop.train.lm.model import LanguageModel  # noqa: E402

MESSAGES = [
    {"role": "system", "content": "Answer with a tool name."},
    {"role": "user", "content": "Read the file notes.txt"},
]


@pytest.fixture
def served(
    tiny_lm: LanguageModel, tmp_path: Path
) -> Iterator[tuple[PolicyServer, SqliteStore, Recorder]]:
    store = SqliteStore(tmp_path / "e.db")
    recorder = Recorder(store)
    with PolicyServer(PolicyService(tiny_lm, recorder=recorder, model_name="policy")) as server:
        yield server, store, recorder
    recorder.close()
    store.close()


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_plain_and_streaming_calls_are_captured_with_their_tokens(
    served: tuple[PolicyServer, SqliteStore, Recorder], tiny_lm: LanguageModel
) -> None:
    server, store, recorder = served
    client = openai.OpenAI(base_url=server.episode_url("ep-1"), api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["policy"]
    plain = client.chat.completions.create(
        model="policy", messages=MESSAGES, max_tokens=6, seed=3, logprobs=True
    )
    captured = plain.model_extra["learnloop"]
    assert plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage.completion_tokens == len(captured["completion_token_ids"]) <= 6
    assert captured["prompt_token_ids"] == tiny_lm.chat_ids(MESSAGES)
    assert [t.logprob for t in plain.choices[0].logprobs.content] == captured["completion_logprobs"]

    stream = client.chat.completions.create(
        model="policy",
        messages=MESSAGES,
        stream=True,
        seed=3,
        extra_body={"allowed_completions": ["file_read", "web_search"]},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text in ("file_read", "web_search")
    assert chunks[-1].choices[0].finish_reason == "stop"
    last = chunks[-1].model_extra["learnloop"]

    status, body = _post(
        server.base_url[: -len("/v1")] + "/episodes/ep-1/complete", {"reward": 1.0}
    )
    assert status == 200 and body == {"episode_id": "ep-1", "status": "success", "num_steps": 2}
    recorder.flush()
    episode = store.get_episode("ep-1")
    assert episode.task == "Read the file notes.txt" and episode.terminal_reward == 1.0
    # the trainer's tokens are exactly the ones the client was given
    traces = episode_traces(episode)
    for trace, seen in zip(traces, (captured, last), strict=True):
        assert list(trace.ids) == seen["prompt_token_ids"] + seen["completion_token_ids"]
        masked = [t for t, m in zip(trace.ids, trace.completion_mask, strict=True) if m]
        assert masked == seen["completion_token_ids"]
        assert [
            x for x, m in zip(trace.log_probs, trace.completion_mask, strict=True) if m
        ] == pytest.approx(seen["completion_logprobs"])
    batch = collate_traces(traces, [[1.0], [1.0]], pad_id=tiny_lm.pad_token_id)
    assert int(batch.completion_mask.sum()) == sum(
        len(s["completion_token_ids"]) for s in (captured, last)
    )


def test_episode_id_from_the_header_and_uncaptured_calls(
    served: tuple[PolicyServer, SqliteStore, Recorder],
) -> None:
    server, _, recorder = served
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    anonymous = client.chat.completions.create(model="policy", messages=MESSAGES, max_tokens=3)
    assert anonymous.model_extra["learnloop"]["episode_id"] is None
    tagged = client.chat.completions.create(
        model="policy", messages=MESSAGES, max_tokens=3, extra_headers={EPISODE_HEADER: "ep-h"}
    )
    assert tagged.model_extra["learnloop"]["episode_id"] == "ep-h"
    assert recorder.is_open("ep-h") and recorder.get("ep-h").steps[0].completion_token_ids


def test_bad_requests_get_openai_style_errors(
    served: tuple[PolicyServer, SqliteStore, Recorder],
) -> None:
    server, _, _ = served
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="policy", messages=[])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="policy", messages=MESSAGES, n=2)
    with pytest.raises(openai.BadRequestError, match=r"max_tokens 2 cannot hold .* at least 4"):
        client.chat.completions.create(  # "file_read" is 4 tokens of the tiny tokenizer
            model="policy",
            messages=MESSAGES,
            max_tokens=2,
            extra_body={"allowed_completions": ["file_read", "web_search"]},
        )
    status, body = _post(server.base_url[: -len("/v1")] + "/episodes/nope/complete", {"reward": 1})
    assert status == 400 and "not open" in body["error"]["message"]


def test_concurrent_calls_are_generated_as_one_batch_and_answered_to_their_callers(
    tiny_lm: LanguageModel, tmp_path: Path
) -> None:
    import threading

    store = SqliteStore(tmp_path / "e.db")
    recorder = Recorder(store)
    # a wide window so that the 8 callers surely meet (the default is 20 ms)
    service = PolicyService(tiny_lm, recorder=recorder, model_name="policy", batch_window_s=0.5)
    files = [f"notes-{i}.txt" for i in range(8)]
    answers: dict[int, object] = {}
    start = threading.Barrier(8)

    def attempt(i: int) -> None:
        client = openai.OpenAI(base_url=server.episode_url(f"ep-{i}"), api_key="-", max_retries=0)
        start.wait()
        answers[i] = client.chat.completions.create(
            model="policy",
            messages=[MESSAGES[0], {"role": "user", "content": f"Read the file {files[i]}"}],
            max_tokens=4,
            extra_body={"allowed_completions": ["file_read", "web_search"]},
        )

    with PolicyServer(service) as server:
        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        batched = dict(service.batch_sizes)
        service.batch_sizes.clear()
        client = openai.OpenAI(base_url=server.base_url, api_key="-", max_retries=0)
        seeded = [
            client.chat.completions.create(model="policy", messages=MESSAGES, max_tokens=4, seed=7)
            .choices[0]
            .message.content
            for _ in range(2)
        ]
    assert sorted(answers) == list(range(8))
    assert sum(size * count for size, count in batched.items()) == 8
    assert max(batched) >= 4  # one batch, or two if a caller came late
    assert seeded[0] == seeded[1] and service.batch_sizes == {1: 2}  # seeded calls go alone
    recorder.flush()
    for i, answer in answers.items():  # every caller got its own row, captured in its episode
        extension = answer.model_extra["learnloop"]  # type: ignore[attr-defined]
        assert answer.choices[0].message.content in ("file_read", "web_search")  # type: ignore[attr-defined]
        messages = [MESSAGES[0], {"role": "user", "content": f"Read the file {files[i]}"}]
        assert extension["prompt_token_ids"] == tiny_lm.chat_ids(messages)
        step = recorder.get(f"ep-{i}").steps[0]
        assert list(step.completion_token_ids) == extension["completion_token_ids"]
    recorder.close()
    store.close()


def test_batching_settings_are_checked(tiny_lm: LanguageModel) -> None:
    from learnloop.errors import ConfigError

    for bad in ({"max_batch": 0}, {"batch_window_s": -1.0}, {"batch_window_s": 5.0}):
        with pytest.raises(ConfigError, match=r"max_batch >= 1|batch_window_s <= 1"):
            PolicyService(tiny_lm, **bad)  # type: ignore[arg-type]
    service = PolicyService(tiny_lm)
    for value in (0, -2, True, 1.5):
        with pytest.raises(ConfigError, match="max_batch >= 1"):
            service.max_batch = value  # type: ignore[assignment]
    assert service.max_batch == 16


def _request(content: str, **fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": content}], "max_tokens": 3, **fields}
    )


def _call_all(service: PolicyService, requests: list[ChatCompletionRequest]) -> list[object]:
    """``service.complete`` for every request from its own thread, all started together."""
    import threading

    results: list[object] = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def call(i: int) -> None:
        start.wait()
        try:
            results[i] = service.complete(requests[i], None)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_a_failing_generation_fails_its_batch_only_and_a_bad_conversation_its_own_call(
    tiny_lm: LanguageModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import learnloop.train.lm.endpoint as endpoint_module

    service = PolicyService(tiny_lm, batch_window_s=0.3)
    real_generate, real_chat_ids = endpoint_module.generate, tiny_lm.chat_ids
    failures = iter([True])  # the first generation fails, later ones run

    def flaky_generate(*args: object, **kwargs: object) -> object:
        if next(failures, False):
            raise RuntimeError("device lost")
        return real_generate(*args, **kwargs)  # type: ignore[arg-type]

    def picky_chat_ids(messages: list[dict[str, str]]) -> list[int]:
        if "BAD" in messages[-1]["content"]:
            raise InvalidInputError("this conversation cannot be rendered")
        return real_chat_ids(messages)

    monkeypatch.setattr(endpoint_module, "generate", flaky_generate)
    monkeypatch.setattr(tiny_lm, "chat_ids", picky_chat_ids)
    first = _call_all(service, [_request(f"task {i}") for i in range(4)])
    errors = [r for r in first if isinstance(r, Exception)]
    assert len(errors) == 4 and all("device lost" in str(e) for e in errors)
    assert len({id(e) for e in errors}) == 4  # each caller raises its own copy
    second = _call_all(service, [_request("task a"), _request("BAD"), _request("task b")])
    assert isinstance(second[1], InvalidInputError)
    assert all(isinstance(r, CapturedCall) for r in (second[0], second[2]))
    assert service.batch_sizes == {2: 1} and not service._pending and not service._leading


def test_calls_with_different_settings_never_share_a_batch(
    tiny_lm: LanguageModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = PolicyService(tiny_lm, batch_window_s=0.3, max_batch=3)
    temperatures: list[set[float]] = []
    generate_batch = service._generate_batch

    def watched(batch: list) -> None:  # type: ignore[type-arg]
        temperatures.append({call.sampling.temperature for call in batch})
        generate_batch(batch)

    monkeypatch.setattr(service, "_generate_batch", watched)
    requests = [_request(f"task {i}", temperature=(0.5, 1.0)[i % 2]) for i in range(8)]
    results = _call_all(service, requests)
    assert all(isinstance(r, CapturedCall) for r in results)
    # 4 calls of each temperature, at most 3 a batch, none mixing the two
    assert all(len(t) == 1 for t in temperatures) and len(temperatures) >= 4
    assert sum(size * count for size, count in service.batch_sizes.items()) == 8
    assert max(service.batch_sizes) <= 3
