"""Fixtures of the language-model tests: the tiny model, built once per session and copied."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch

from learnloop.envs.suite import SuiteConfig, ToolUseSuite
from learnloop.train.lm.config import LMConfig
from learnloop.train.lm.model import LanguageModel, load_language_model


@pytest.fixture(scope="session")
def suite() -> ToolUseSuite:
    return ToolUseSuite(SuiteConfig(seed=0, num_tasks=200))


@pytest.fixture(scope="session")
def _tiny_base() -> LanguageModel:
    torch.set_num_threads(1)
    return load_language_model(LMConfig(model="tiny"))


@pytest.fixture
def tiny_lm(_tiny_base: LanguageModel) -> LanguageModel:
    """A fresh copy of the tiny model (tests may train it)."""
    return LanguageModel(
        copy.deepcopy(_tiny_base.model),
        _tiny_base.tokenizer,
        name=_tiny_base.name,
        pretrained=_tiny_base.pretrained,
    )


@pytest.fixture
def make_lm() -> Callable[..., Any]:
    """Build a tiny model with other settings (LoRA, sizes)."""

    def make(**fields: Any) -> LanguageModel:
        return load_language_model(LMConfig(model="tiny", **fields))

    return make
