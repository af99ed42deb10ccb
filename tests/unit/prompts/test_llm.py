"""LLM client protocol, record/replay, prices, budgets and the scripted fake (no model)."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from learnloop.errors import ConfigError, InvalidInputError, LLMError
from learnloop.prompts import (
    Budget,
    BudgetExceededError,
    ChatRequest,
    ChatResponse,
    LLMClient,
    MeteredClient,
    ModelPrice,
    PriceTable,
    RecordReplayClient,
    ScriptedLLMClient,
    TokenUsage,
    UsageMeter,
    system_message,
    user_message,
)


def ask(text: str, **fields: object) -> ChatRequest:
    return ChatRequest(messages=[user_message(text)], **fields)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- requests


def test_request_key_is_sha256_of_canonical_json() -> None:
    request = ChatRequest(messages=[user_message("hi")], temperature=0, max_tokens=8, seed=3)
    canonical = (
        '{"grammar":null,"json_schema":null,"max_tokens":8,"messages":[{"content":"hi","role":"user"}],'
        '"model":null,"seed":3,"stop":[],"temperature":0.0,"top_p":1.0}'
    )
    assert request.key() == hashlib.sha256(canonical.encode()).hexdigest()


def test_request_key_changes_with_every_field() -> None:
    base = ask("hi")
    variants = [
        ask("hi!"),
        ask("hi", model="m"),
        ask("hi", temperature=0.5),
        ask("hi", top_p=0.9),
        ask("hi", max_tokens=7),
        ask("hi", seed=1),
        ask("hi", stop=("\n",)),
        ask("hi", grammar='root ::= "a"'),
        ask("hi", json_schema={"type": "object"}),
        ChatRequest(messages=[system_message("hi")]),
    ]
    keys = {v.key() for v in variants}
    assert base.key() not in keys and len(keys) == len(variants)
    assert ask("hi", temperature=0).key() == ask("hi", temperature=0.0).key()


def test_request_round_trips_and_is_frozen() -> None:
    request = ask("hi", stop=["x"], json_schema={"type": "object", "required": ["a"]}, seed=5)
    again = ChatRequest.from_dict(json.loads(json.dumps(request.to_dict())))
    assert again == request and again.key() == request.key()
    assert len({again, request}) == 1  # hashable, by key
    assert isinstance(request.messages, tuple) and request.stop == ("x",)
    with pytest.raises(TypeError):
        request.messages[0]["content"] = "changed"  # type: ignore[index]


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"messages": []}, "messages is empty"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0]"),
        ({"temperature": 3.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"grammar": 'root ::= "a"', "json_schema": {}}, "not both"),
        ({"json_schema": {"bad": object()}}, "JSON-serialisable"),
    ],
)
def test_bad_request_names_the_value(fields: dict[str, object], fragment: str) -> None:
    arguments = {"messages": [user_message("hi")], **fields}
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        ChatRequest(**arguments)  # type: ignore[arg-type]


def test_response_round_trips() -> None:
    response = ChatResponse(
        text="a",
        finish_reason="length",
        usage=TokenUsage(prompt_tokens=3, completion_tokens=1),
        model="m",
        latency_s=0.25,
        cost_usd=1e-6,
    )
    assert ChatResponse.from_dict(json.loads(json.dumps(response.to_dict()))) == response
    assert (TokenUsage(prompt_tokens=1, completion_tokens=2) + response.usage).total_tokens == 7


# ----------------------------------------------------------------------------- prices


def test_cost_worked_by_hand() -> None:
    table = PriceTable(
        {
            "gpt-4o": ModelPrice(input_per_million=2.5, output_per_million=10.0),
            "gpt-4o-mini": ModelPrice(input_per_million=0.15, output_per_million=0.6),
        }
    )
    usage = TokenUsage(prompt_tokens=1000, completion_tokens=500)
    # 1000 * 0.15 / 1e6 + 500 * 0.6 / 1e6 = 0.00015 + 0.0003
    assert table.cost("gpt-4o-mini-2024-07-18", usage) == pytest.approx(0.00045, abs=1e-15)
    # 1000 * 2.5 / 1e6 + 500 * 10 / 1e6 = 0.0025 + 0.005
    assert table.cost("gpt-4o-2024-08-06", usage) == pytest.approx(0.0075, abs=1e-15)
    assert table.cost("SmolLM2-135M-Instruct", usage) == 0.0


def test_strict_price_table_refuses_unknown_models() -> None:
    table = PriceTable.from_dict({"my-model": [1.0, 2.0]}, strict=True)
    assert table.cost(
        "my-model", TokenUsage(prompt_tokens=10, completion_tokens=5)
    ) == pytest.approx(2e-5)
    with pytest.raises(ConfigError, match="'other-model'"):
        table.cost("other-model", TokenUsage())
    with pytest.raises(ConfigError, match="input_per_million"):
        PriceTable.from_dict({"m": [1.0]})
    with pytest.raises(ConfigError):
        ModelPrice(input_per_million=-1.0)


# ----------------------------------------------------------------------------- scripted fake


def test_scripted_client_answers_by_rule() -> None:
    client = ScriptedLLMClient(
        [(r"weather", "web_search"), (r"\.csv\b", lambda request: f"csv:{len(request.messages)}")],
        default="shell_exec",
    )
    assert isinstance(client, LLMClient)
    assert client.complete(ask("weather in Oslo")).text == "web_search"
    assert (
        client.complete(
            ChatRequest(messages=[system_message("s"), user_message("sort a.csv")])
        ).text
        == "csv:2"
    )
    reply = client.complete(ask("list the files please"))
    assert reply.text == "shell_exec"
    assert reply.usage == TokenUsage(prompt_tokens=4, completion_tokens=1)
    assert len(client.requests) == 3


def test_scripted_client_without_match_raises() -> None:
    with pytest.raises(LLMError, match="'nothing matches'"):
        ScriptedLLMClient([(r"x{3}", "y")]).complete(ask("nothing matches"))


# ----------------------------------------------------------------------------- usage, budgets


PRICED = PriceTable({"scripted": ModelPrice(input_per_million=100.0, output_per_million=200.0)})


def test_meter_totals_by_hand() -> None:
    meter = UsageMeter()
    client = MeteredClient(ScriptedLLMClient(default="x y", price_table=PRICED), meter=meter)
    for _ in range(3):
        client.complete(ask("a b c d e"))  # 5 prompt words, 2 completion words
    totals = meter.totals
    assert totals.num_calls == 3
    assert totals.usage == TokenUsage(prompt_tokens=15, completion_tokens=6)
    # per call (5 * 100 + 2 * 200) / 1e6 = 0.0009
    assert totals.cost_usd == pytest.approx(0.0027, abs=1e-12)


def test_cost_budget_checked_after_and_before_calls() -> None:
    inner = ScriptedLLMClient(default="x y", price_table=PRICED)
    client = MeteredClient(inner, budget=Budget(max_cost_usd=0.001))
    client.complete(ask("a b c d e"))  # 0.0009 <= 0.001
    with pytest.raises(BudgetExceededError, match=r"cost_usd spent 0\.0018") as after:
        client.complete(ask("a b c d e"))  # 0.0018 > 0.001: raised after the call
    assert after.value.response is not None and after.value.response.text == "x y"
    with pytest.raises(BudgetExceededError, match="no call made"):
        client.complete(ask("a b c d e"))
    assert len(inner.requests) == 2
    assert not isinstance(after.value, LLMError)  # a failed-call handler must not swallow it


def test_call_and_token_budgets() -> None:
    inner = ScriptedLLMClient(default="ok")
    calls = MeteredClient(inner, budget=Budget(max_calls=2))
    calls.complete(ask("a"))
    calls.complete(ask("a"))
    with pytest.raises(BudgetExceededError, match="calls spent 2 of a limit of 2"):
        calls.complete(ask("a"))
    tokens = MeteredClient(inner, budget=Budget(max_tokens=4))
    tokens.complete(ask("a b"))  # 2 + 1 = 3 tokens
    with pytest.raises(BudgetExceededError, match="tokens spent 6"):
        tokens.complete(ask("a b"))
    with pytest.raises(ConfigError, match="max_calls"):
        Budget(max_calls=-1)


# ----------------------------------------------------------------------------- record / replay


def counting_client() -> ScriptedLLMClient:
    """Answers like a sampling model: the same request gets a different answer each time."""
    counter = iter(range(1000))
    return ScriptedLLMClient(default=lambda request: f"answer {next(counter)}")


def test_record_then_replay_without_a_model(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    recorder = RecordReplayClient(counting_client(), path, mode="record")
    requests = [ask("first"), ask("second", temperature=0.7), ask("first")]
    recorded = [recorder.complete(r) for r in requests]
    assert [r.text for r in recorded] == ["answer 0", "answer 1", "answer 2"]

    replayer = RecordReplayClient(None, path, mode="replay")
    assert replayer.num_recorded == 3
    assert [replayer.complete(r) for r in requests] == recorded  # repeated requests in order
    assert replayer.complete(ask("first")) == recorded[2]  # past the recorded ones: the last
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["key"] for line in lines] == [r.key() for r in requests]
    assert ChatRequest.from_dict(lines[1]["request"]) == requests[1]


def test_replay_of_an_unrecorded_request_names_it(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    RecordReplayClient(counting_client(), path, mode="record").complete(ask("known"))
    replayer = RecordReplayClient(None, path, mode="replay")
    with pytest.raises(LLMError, match=r"'an unknown question'.*not in the replay file"):
        replayer.complete(ask("an unknown question"))
    with pytest.raises(ConfigError, match="does not exist"):
        RecordReplayClient(None, tmp_path / "missing.jsonl", mode="replay")
    with pytest.raises(ConfigError, match="inner="):
        RecordReplayClient(None, path, mode="auto")


def test_auto_mode_calls_the_model_only_for_new_requests(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    RecordReplayClient(counting_client(), path, mode="record").complete(ask("old"))
    inner = counting_client()
    auto = RecordReplayClient(inner, path, mode="auto")
    assert auto.complete(ask("old")).text == "answer 0"
    assert auto.complete(ask("new")).text == "answer 0"  # from the fresh inner client
    assert len(inner.requests) == 1
    assert len(path.read_text().splitlines()) == 2


def test_record_mode_starts_a_fresh_file(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    RecordReplayClient(counting_client(), path, mode="record").complete(ask("a"))
    RecordReplayClient(counting_client(), path, mode="record").complete(ask("b"))
    assert len(path.read_text().splitlines()) == 1


def test_truncated_last_line_is_skipped_and_corrupt_line_refused(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    recorder = RecordReplayClient(counting_client(), path, mode="record")
    recorder.complete(ask("a"))
    recorder.complete(ask("b"))
    good = path.read_text()
    path.write_text(good + '{"key": "abc", "requ')  # a crash mid-write
    assert RecordReplayClient(None, path, mode="replay").num_recorded == 2
    first, second = good.splitlines()
    path.write_text(first + "\nnot json\n" + second + "\n")
    with pytest.raises(InvalidInputError, match="line 2"):
        RecordReplayClient(None, path, mode="replay")


def test_recording_from_many_threads(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    recorder = RecordReplayClient(
        ScriptedLLMClient(default=lambda r: r.messages[0]["content"].upper()), path, mode="record"
    )

    def work(thread: int) -> None:
        for index in range(25):
            recorder.complete(ask(f"t{thread} q{index}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    replayer = RecordReplayClient(None, path, mode="replay")
    assert replayer.num_recorded == 200
    assert replayer.complete(ask("t7 q24")).text == "T7 Q24"


# ----------------------------------------------------------------------------- packaging


@pytest.mark.parametrize("module", ["llm", "replay", "usage"])
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    failures, tried = doctest.testmod(importlib.import_module(f"learnloop.prompts.{module}"))
    assert tried >= 3 and failures == 0


def test_split_modules_keep_the_package_imports() -> None:
    import learnloop.prompts as prompts
    from learnloop.errors import BudgetExceededError as FromErrors
    from learnloop.prompts.replay import RecordReplayClient as FromReplay
    from learnloop.prompts.usage import MeteredClient as FromUsage

    assert prompts.RecordReplayClient is FromReplay
    assert prompts.MeteredClient is FromUsage
    assert prompts.BudgetExceededError is FromErrors


def test_importing_prompts_loads_no_optional_dependency() -> None:
    import subprocess
    import sys

    code = (
        "import sys, learnloop.prompts, learnloop.prompts.optimizer, learnloop.cli.train_apo; "
        "print(sorted({'openai', 'xllamacpp', 'torch'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_openai_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from learnloop.prompts import LLMEndpointConfig, OpenAICompatibleClient

    monkeypatch.setitem(sys.modules, "openai", None)  # what `import openai` sees when absent
    with pytest.raises(ImportError, match=r"learnloop\[llm\]"):
        OpenAICompatibleClient(LLMEndpointConfig(base_url="http://127.0.0.1:1/v1", model="m"))
