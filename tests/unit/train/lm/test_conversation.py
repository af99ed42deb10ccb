"""Multi-turn traces on the suite: one growing token sequence, a mask over the model's tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learnloop.envs.suite import SuiteConfig, ToolUseSuite
from learnloop.errors import ConfigError
from learnloop.train.lm.config import SamplingConfig
from learnloop.train.lm.conversation import (
    SuiteChat,
    TokenTrace,
    TraceBuilder,
    evaluate_chat,
    group_tasks,
    parse_tool,
)
from learnloop.train.lm.model import LanguageModel


def _multi_step(suite: ToolUseSuite) -> list:
    return [t for t in suite.train_tasks if len(t.subtasks) >= 3][:4]


def test_each_call_sees_the_exact_prefix_of_the_trace(tiny_lm: LanguageModel) -> None:
    # every tool always succeeds, so every attempt walks its whole chain of calls
    certain = ToolUseSuite(
        SuiteConfig(
            seed=0,
            num_tasks=100,
            best_success=(1.0, 1.0),
            second_success=(1.0, 1.0),
            other_success=(1.0, 1.0),
        )
    )
    chat = SuiteChat(certain, tiny_lm)
    results = chat.run(
        _multi_step(certain),
        SamplingConfig(),
        generator=torch.Generator().manual_seed(0),
        rng=np.random.default_rng(0),
    )
    assert results and all(r.success for r in results)
    for result in results:
        trace = result.trace
        assert trace.num_steps == len(result.task.subtasks) == len(result.completions)
        for step, completion in enumerate(result.completions):
            start = len(completion.prompt_ids)
            end = start + len(completion.completion_ids)
            assert trace.ids[:start] == completion.prompt_ids  # the prompt is the trace prefix
            assert trace.ids[start:end] == completion.completion_ids
            assert trace.step_of_token[start:end] == (step,) * len(completion.completion_ids)
            assert trace.log_probs[start:end] == completion.log_probs
        # prompt and tool tokens are outside the mask; model tokens inside
        masked = [t for t, m in zip(trace.ids, trace.completion_mask, strict=True) if m]
        assert masked == [t for c in result.completions for t in c.completion_ids]
        text = tiny_lm.tokenizer.decode(list(trace.ids))
        assert text.count("<|im_start|>tool") == len(result.task.subtasks) - 1


def test_trace_equals_the_template_rendering(tiny_lm: LanguageModel, suite: ToolUseSuite) -> None:
    chat = SuiteChat(suite, tiny_lm)
    task = _multi_step(suite)[0]
    tools = [s.best_tool for s in task.subtasks]
    trace = chat.demonstration(task, tools)
    messages = chat.messages(task)
    for i, tool in enumerate(tools):
        messages.append({"role": "assistant", "content": tool})
        if i < len(tools) - 1:
            messages.append({"role": "tool", "content": f"{tool}: ok"})
    rendered = tiny_lm.chat_text(messages, add_generation_prompt=False)
    assert tiny_lm.tokenizer.decode(list(trace.ids)) + "\n" == rendered


def test_builder_needs_a_completion_before_a_tool_result(tiny_lm: LanguageModel) -> None:
    builder = TraceBuilder(tiny_lm, [{"role": "user", "content": "x"}])
    with pytest.raises(ConfigError, match="completion first"):
        builder.add_tool_result("ok")
    with pytest.raises(ConfigError, match="differ in length"):
        TokenTrace(ids=(1, 2), step_of_token=(-1,), log_probs=(0.0, 0.0))


def test_parse_tool() -> None:
    tools = ("file_read", "web_search")
    assert parse_tool(" file_read\n", tools) == "file_read"
    assert parse_tool("I would use `web_search`.", tools) == "web_search"
    assert parse_tool("file_read or web_search", tools) == "file_read"  # the first word
    assert parse_tool("web_search(query='x')\nthen file_read", tools) == "web_search"
    assert parse_tool("use file_read or web_search", tools) is None  # two names, neither first
    assert parse_tool("read it", tools) is None


def test_group_tasks_and_evaluation_counts(tiny_lm: LanguageModel, suite: ToolUseSuite) -> None:
    tasks = suite.heldout_tasks[:6]
    assert [t.id for t in group_tasks(tasks[:2], 3)] == [tasks[0].id] * 3 + [tasks[1].id] * 3
    chat = SuiteChat(suite, tiny_lm)
    metrics = evaluate_chat(chat, tasks, constrained=True, rank_tools=True)
    assert metrics["num_episodes"] == 6 and metrics["valid_rate"] == 1.0
    assert 0.0 <= metrics["success_rate"] <= 1.0 and 0.0 <= metrics["ranked_accuracy"] <= 1.0
    again = evaluate_chat(chat, tasks, constrained=True, rank_tools=True)
    assert again == metrics  # greedy, and tool outcomes drawn from the same seed
