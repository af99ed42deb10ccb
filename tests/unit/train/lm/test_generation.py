"""Sampling and the log-probabilities training recomputes: they must agree under left padding."""

from __future__ import annotations

import math

import pytest
import torch

from learnloop.errors import ConfigError
from learnloop.train.lm.config import SamplingConfig
from learnloop.train.lm.generation import (
    ActionConstraint,
    _top_p_filter,
    generate,
    left_pad,
    position_ids_from_mask,
    token_log_probs,
)
from learnloop.train.lm.model import LanguageModel

MESSAGES = [
    [{"role": "user", "content": "Read the file notes.txt and tell me what it says."}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Grep the logs."}],
]


def _completion_targets(lm: LanguageModel, completions: list) -> tuple:
    sequences = [list(c.prompt_ids) + list(c.completion_ids) for c in completions]
    ids, mask = left_pad(sequences, lm.pad_token_id)
    target = torch.zeros_like(mask, dtype=torch.bool)
    for row, c in enumerate(completions):
        target[row, ids.shape[1] - len(c.completion_ids) :] = True
    return ids, mask, target


def _gap(lm: LanguageModel, completions: list, log_probs: torch.Tensor) -> float:
    gaps = []
    width = log_probs.shape[1]
    for row, c in enumerate(completions):
        n = len(c.completion_ids)
        trained = log_probs[row, width - n :].tolist()
        gaps += [abs(a - b) for a, b in zip(trained, c.log_probs, strict=True)]
    return sum(gaps) / len(gaps)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_training_log_probs_match_sampling_under_left_padding(
    tiny_lm: LanguageModel, temperature: float
) -> None:
    prompts = [tiny_lm.chat_ids(m) for m in MESSAGES]
    assert len({len(p) for p in prompts}) == 3  # different lengths: real left padding
    completions = generate(
        tiny_lm,
        prompts,
        SamplingConfig(max_new_tokens=12, temperature=temperature),
        generator=torch.Generator().manual_seed(0),
    )
    ids, mask, target = _completion_targets(tiny_lm, completions)
    with torch.no_grad():
        trained = token_log_probs(tiny_lm.model, ids, mask, target, temperature=temperature)
    assert _gap(tiny_lm, completions, trained) < 0.01


def test_without_mask_positions_the_gap_is_large(tiny_lm: LanguageModel) -> None:
    """GPT-2's absolute positions: ignoring left padding shifts every score (why positions matter)."""
    prompts = [tiny_lm.chat_ids(m) for m in MESSAGES]
    completions = generate(
        tiny_lm,
        prompts,
        SamplingConfig(max_new_tokens=12),
        generator=torch.Generator().manual_seed(0),
    )
    ids, mask, target = _completion_targets(tiny_lm, completions)
    with torch.no_grad():
        logits = tiny_lm.model(input_ids=ids, attention_mask=mask).logits  # default positions
    log_probs = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    shifted = torch.zeros_like(ids, dtype=torch.float32)
    shifted[:, 1:] = log_probs
    assert _gap(tiny_lm, completions, shifted * target) > 0.05


def test_position_ids_by_hand() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    ids, pad_mask = left_pad([[7, 8], [1, 2, 3]], pad_id=0)
    assert ids.tolist() == [[0, 7, 8], [1, 2, 3]] and pad_mask.tolist() == [[0, 1, 1], [1, 1, 1]]


def test_constrained_generation_yields_only_valid_actions(tiny_lm: LanguageModel) -> None:
    actions = ["file_read", "web_search", "calculator"]
    constraint = ActionConstraint.from_texts(tiny_lm, actions)
    prompts = [tiny_lm.chat_ids(m) for m in MESSAGES] * 4
    completions = generate(
        tiny_lm,
        prompts,
        SamplingConfig(max_new_tokens=16, temperature=1.5),
        generator=torch.Generator().manual_seed(1),
        constraint=constraint,
    )
    assert all(c.text in actions and c.finish_reason == "stop" for c in completions)
    assert all(c.completion_ids[-1] == tiny_lm.tokenizer.eos_token_id for c in completions)
    # the reported log-probs are the unconstrained model's, the ones training recomputes
    ids, mask, target = _completion_targets(tiny_lm, completions)
    with torch.no_grad():
        trained = token_log_probs(tiny_lm.model, ids, mask, target, temperature=1.5)
    assert _gap(tiny_lm, completions, trained) < 0.01


def test_prefix_tree_by_hand() -> None:
    constraint = ActionConstraint([[1, 2, 9], [1, 3, 9], [4, 9]])
    assert constraint.allowed([]) == [1, 4]
    assert constraint.allowed([1]) == [2, 3]
    assert constraint.allowed([1, 2, 9]) == []
    assert constraint.is_complete([4, 9]) and not constraint.is_complete([1, 2])
    with pytest.raises(ConfigError):
        ActionConstraint([])


def test_greedy_is_deterministic_and_length_capped(tiny_lm: LanguageModel) -> None:
    prompts = [tiny_lm.chat_ids(m) for m in MESSAGES]
    config = SamplingConfig(max_new_tokens=5, temperature=0.0)
    first = generate(tiny_lm, prompts, config)
    second = generate(tiny_lm, prompts, config)
    assert [c.completion_ids for c in first] == [c.completion_ids for c in second]
    assert all(len(c.completion_ids) <= 5 for c in first)
    assert any(c.finish_reason == "length" for c in first)


def test_stop_string_cuts_the_text(tiny_lm: LanguageModel) -> None:
    prompt = tiny_lm.chat_ids(MESSAGES[0])
    config = SamplingConfig(max_new_tokens=12)
    free = next(
        c
        for seed in range(20)
        for c in generate(tiny_lm, [prompt], config, generator=torch.Generator().manual_seed(seed))
        if len(c.text) > 4
    )
    stop = free.text[2:4]
    seed = next(
        s
        for s in range(20)
        if generate(tiny_lm, [prompt], config, generator=torch.Generator().manual_seed(s))[0].text
        == free.text
    )
    cut = generate(
        tiny_lm,
        [prompt],
        SamplingConfig(max_new_tokens=12, stop=(stop,)),
        generator=torch.Generator().manual_seed(seed),
    )[0]
    assert stop not in cut.text and free.text.startswith(cut.text)
    assert cut.finish_reason == "stop" and len(cut.completion_ids) < len(free.completion_ids)


def test_top_p_keeps_the_smallest_nucleus() -> None:
    # probabilities 0.5, 0.3, 0.2: top_p 0.6 keeps the first two, 0.4 only the first
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    kept = _top_p_filter(logits, 0.6)
    assert torch.isfinite(kept).tolist() == [[False, True, True]]
    assert torch.isfinite(_top_p_filter(logits, 0.4)).tolist() == [[False, True, False]]
    probs = torch.softmax(_top_p_filter(logits, 0.6), -1)
    assert math.isclose(float(probs[0, 1]), 0.5 / 0.8, rel_tol=1e-5)


def test_bad_sampling_configs_name_the_fix(tiny_lm: LanguageModel) -> None:
    with pytest.raises(ConfigError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ConfigError, match="temperature"):
        SamplingConfig(temperature=-1.0)
    with pytest.raises(ConfigError, match="at least one prompt"):
        generate(tiny_lm, [])
