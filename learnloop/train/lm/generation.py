"""Batched sampling from a causal LM, and the log-probabilities training recomputes.

:func:`generate` samples a batch of left-padded prompts with one KV cache:
temperature, top-p, stop tokens and stop strings, and optionally an
:class:`ActionConstraint` that lets only whole valid actions (e.g. tool names)
out. Each sampled token's log-probability is reported under the model's
*tempered* distribution, log softmax(z / T), before top-p and the constraint
cut it down: exactly what :func:`token_log_probs` recomputes from the same
tokens in training, so the ratio pi_theta / pi_theta_old of GRPO starts at 1.
(Greedy sampling reports T = 1.)

Left padding shifts each row's tokens right; positions are derived from the
attention mask (0 at each row's first real token) both here and in
:func:`token_log_probs`, as ``generate()`` of transformers does. Without that, a
model with absolute position embeddings scores the same tokens 0.17 nats/token
differently.

A batch whose rows start with the same tokens (the system prompt and worked
examples every attempt of a GRPO step shares) runs that prefix once, as one
row, and repeats its KV cache across the batch (:func:`shared_prefix_length`):
on a CPU the prompt's tokens dominate both sampling and the loss's forward and
backward passes. The suffixes are left-padded after the prefix, so each row's
padding sits between the prefix and its own tokens; the attention mask hides
it and positions continue from the prefix's length, so the numbers match a
pass over the whole rows. Gradients flow through the shared prefix once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from learnloop.errors import ConfigError
from learnloop.train.lm.config import SamplingConfig
from learnloop.train.lm.model import LanguageModel

__all__ = [
    "ActionConstraint",
    "Completion",
    "generate",
    "left_pad",
    "position_ids_from_mask",
    "shared_prefix_length",
    "split_shared_prefix",
    "token_log_probs",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """One sampled completion of one prompt."""

    prompt_ids: tuple[int, ...]
    """The prompt's token ids, as given."""
    completion_ids: tuple[int, ...]
    """The sampled token ids (the stop token included when one ended the completion)."""
    log_probs: tuple[float, ...]
    """log pi(token | prefix) of each completion token under the tempered distribution."""
    text: str
    """The completion's text without special tokens, cut before a stop string."""
    finish_reason: Literal["stop", "length"]
    """'stop': a stop token, stop string or complete action ended it; 'length': the token cap."""


class ActionConstraint:
    """Lets only whole valid actions out: a prefix tree over the actions' token sequences.

    Each action is tokenized and followed by the end-of-turn token, so a
    constrained completion is always exactly one action and then stops.

    Args:
        sequences: the token ids of each allowed completion (end token included).
    """

    def __init__(self, sequences: Sequence[Sequence[int]]) -> None:
        if not sequences or any(len(s) == 0 for s in sequences):
            raise ConfigError("ActionConstraint needs at least one non-empty token sequence")
        self._next: dict[tuple[int, ...], set[int]] = {}
        for sequence in sequences:
            ids = tuple(int(t) for t in sequence)
            for end in range(len(ids)):
                self._next.setdefault(ids[:end], set()).add(ids[end])
        self._complete = {tuple(int(t) for t in s) for s in sequences}
        self.longest = max(len(s) for s in sequences)
        """Tokens of the longest allowed sequence, its end token included."""

    @classmethod
    def from_texts(cls, lm: LanguageModel, texts: Sequence[str]) -> ActionConstraint:
        """The constraint allowing each of ``texts`` followed by the model's end-of-turn token."""
        end = int(lm.tokenizer.eos_token_id)
        return cls([[*lm.encode(text), end] for text in texts])

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that may follow ``prefix`` (empty once an action is complete)."""
        return sorted(self._next.get(tuple(prefix), ()))

    def is_complete(self, prefix: Sequence[int]) -> bool:
        """Whether ``prefix`` is one whole allowed sequence."""
        return tuple(prefix) in self._complete


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Position of each token among its row's real tokens (0 at the first; pads get 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)``, both ``(B, max_len)``, real tokens right-aligned."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if sequence:
            ids[row, width - len(sequence) :] = torch.tensor(list(sequence), dtype=torch.long)
            mask[row, width - len(sequence) :] = 1
    return ids.to(device), mask.to(device)


def shared_prefix_length(
    sequences: Sequence[Sequence[int]], first_targets: Sequence[int] | None = None
) -> int:
    """Tokens every row starts with that can run once for the whole batch (0: none).

    Each row keeps at least one token after the prefix, and the prefix stops
    before the token preceding each row's first target (``first_targets[row]``, an
    index into that row), so every target's prediction comes from the row's own part.

    >>> shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]])
    3
    >>> shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]], first_targets=[3, 3])
    2
    """
    if len(sequences) < 2:
        return 0
    limit = min(len(s) for s in sequences) - 1
    if first_targets is not None:
        limit = min(limit, min(first_targets) - 1)
    first = sequences[0]
    length = 0
    while length < limit and all(s[length] == first[length] for s in sequences[1:]):
        length += 1
    return max(length, 0)


def split_shared_prefix(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    device: torch.device | str = "cpu",
    *,
    first_targets: Sequence[int] | None = None,
) -> tuple[Tensor | None, Tensor, Tensor]:
    """``(prefix_ids, input_ids, attention_mask)``: the shared prefix ``(1, P)`` (None when
    there is none) and the rest of each row, left-padded (see :func:`shared_prefix_length`).
    """
    length = shared_prefix_length(sequences, first_targets)
    ids, mask = left_pad([s[length:] for s in sequences], pad_id, device)
    if not length:
        return None, ids, mask
    prefix = torch.tensor([list(sequences[0][:length])], dtype=torch.long, device=device)
    return prefix, ids, mask


@functools.cache
def _cache_argument() -> str:
    """The name of the KV cache in a model's forward and output: ``cache`` since
    transformers 5.24 (``past_key_values`` warns there), ``past_key_values`` before."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    fields = getattr(CausalLMOutputWithPast, "__dataclass_fields__", {})
    return "cache" if "cache" in fields else "past_key_values"


def _with_cache(past: Any) -> dict[str, Any]:
    """The keyword argument passing ``past`` to a model's forward."""
    return {_cache_argument(): past}


def _cache_of(out: Any) -> Any:
    """The KV cache a forward pass run with ``use_cache=True`` returned."""
    name = _cache_argument()
    cache = getattr(out, name, None)
    if cache is None:
        raise ConfigError(
            f"the model returned no KV cache in {name!r}; a model from outside transformers "
            f"must take and return its cache as {name!r} (transformers' own name)"
        )
    return cache


def _run_prefix(model: Any, prefix_ids: Tensor, batch_size: int) -> Any:
    """The KV cache of ``prefix_ids`` ``(1, P)``, repeated ``batch_size`` times."""
    prefix_ids = prefix_ids.view(1, -1)
    out = model(
        input_ids=prefix_ids,
        attention_mask=torch.ones_like(prefix_ids),
        position_ids=torch.arange(prefix_ids.shape[1], device=prefix_ids.device).view(1, -1),
        logits_to_keep=1,
        use_cache=True,
    )
    past = _cache_of(out)
    past.batch_repeat_interleave(batch_size)
    return past


def _checkpointing(model: Any) -> bool:
    """Whether ``model`` trains with gradient checkpointing (which drops the KV cache)."""
    return bool(model.training) and any(
        getattr(module, "gradient_checkpointing", False) is True for module in model.modules()
    )


def _after_prefix(attention_mask: Tensor, prefix_length: int) -> tuple[Tensor, Tensor]:
    """The full attention mask and the suffix's position ids behind a prefix of that length."""
    rows = attention_mask.shape[0]
    ones = torch.ones(
        (rows, prefix_length), dtype=attention_mask.dtype, device=attention_mask.device
    )
    positions = position_ids_from_mask(attention_mask) + prefix_length
    return torch.cat([ones, attention_mask], dim=1), positions


def token_log_probs(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    target_mask: Tensor,
    *,
    temperature: float = 1.0,
    prefix_ids: Tensor | None = None,
) -> Tensor:
    """log pi(x_j | x_<j) at every position j where ``target_mask`` is true; 0 elsewhere.

    All arguments are ``(B, L)``. Only the positions that precede a target get
    logits (``logits_to_keep``), so a 49k-token vocabulary never materializes a
    ``B x L x V`` tensor for a long prompt. Gradients flow when the caller allows.
    ``prefix_ids`` (``(1, P)``), when given, precedes every row: it runs once and
    the rows are what follows it (their first token must not be a target).
    """
    targets = target_mask.clone()
    if prefix_ids is not None and bool(targets[:, 0].any()):
        raise ConfigError(
            "a row's first token after the shared prefix is a target; shorten the prefix "
            "(shared_prefix_length with first_targets)"
        )
    targets[:, 0] = False  # the first token has no prefix to be predicted from
    needed = targets.any(dim=0).nonzero().flatten()
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    if needed.numel() == 0:
        return out
    if prefix_ids is not None and prefix_ids.numel() > 0 and _checkpointing(model):
        # Gradient checkpointing turns the KV cache off in training, so the prefix
        # goes in front of every row instead (same numbers, no saving).
        rows = input_ids.shape[0]
        width = prefix_ids.numel()
        whole = token_log_probs(
            model,
            torch.cat([prefix_ids.view(1, -1).expand(rows, -1), input_ids], dim=1),
            torch.cat(
                [torch.ones_like(attention_mask[:, :1]).expand(-1, width), attention_mask], 1
            ),
            torch.cat([torch.zeros_like(target_mask[:, :1]).expand(-1, width), target_mask], 1),
            temperature=temperature,
        )
        return whole[:, width:]
    if prefix_ids is not None and prefix_ids.numel() > 0:
        mask, positions = _after_prefix(attention_mask, prefix_ids.numel())
        past = _run_prefix(model, prefix_ids, input_ids.shape[0])
    else:
        mask, positions, past = attention_mask, position_ids_from_mask(attention_mask), None
    logits = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        **_with_cache(past),
        logits_to_keep=needed - 1,
        use_cache=past is not None,
    ).logits.float()
    if temperature > 0:
        logits = logits / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    picked = log_probs.gather(-1, input_ids[:, needed].unsqueeze(-1)).squeeze(-1)
    out[:, needed] = picked
    return out * targets


def _top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
    drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # keeps the first always
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def _constraint_mask(
    constraint: ActionConstraint, completions: list[list[int]], active: list[bool], vocab: int
) -> Tensor:
    mask = torch.zeros((len(completions), vocab), dtype=torch.bool)
    for row, tokens in enumerate(completions):
        if active[row]:
            allowed = constraint.allowed(tokens)
            if not allowed:
                raise ConfigError(
                    f"constrained completion {tokens!r} has no allowed continuation; every "
                    "action must end with the end-of-turn token"
                )
            mask[row, allowed] = True
        else:
            mask[row, :] = True
    return mask


def _stop_at(text: str, stops: Sequence[str]) -> int | None:
    cuts = [text.find(s) for s in stops if s in text]
    return min(cuts) if cuts else None


@torch.no_grad()
def generate(
    lm: LanguageModel,
    prompts: Sequence[Sequence[int]],
    config: SamplingConfig = SamplingConfig(),
    *,
    generator: torch.Generator | None = None,
    constraint: ActionConstraint | None = None,
    share_prefix: bool = True,
) -> list[Completion]:
    """Sample one completion per prompt, in one batch with a shared KV cache.

    Args:
        lm: the policy.
        prompts: token ids of each prompt (e.g. :meth:`LanguageModel.chat_ids`).
        config: token cap, temperature, top-p, stop strings.
        generator: seeded CPU generator of the sampling (None: torch's global one).
        constraint: when given, every completion is one of its allowed sequences.
        share_prefix: run the tokens all prompts start with once (module docstring).
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ConfigError("generate needs at least one prompt, each with at least one token")
    model, device = lm.model, lm.device
    was_training = model.training
    model.eval()
    prefix_length = shared_prefix_length(prompts) if share_prefix else 0
    input_ids, mask = left_pad([p[prefix_length:] for p in prompts], lm.pad_token_id, device)
    past = None
    if prefix_length:
        prefix = torch.tensor(list(prompts[0][:prefix_length]), dtype=torch.long, device=device)
        past = _run_prefix(model, prefix, len(prompts))
        mask, positions = _after_prefix(mask, prefix_length)
    else:
        positions = position_ids_from_mask(mask)
    stop_ids = lm.stop_token_ids
    temperature = config.temperature if config.temperature > 0 else 1.0
    size = len(prompts)
    tokens: list[list[int]] = [[] for _ in range(size)]
    log_probs: list[list[float]] = [[] for _ in range(size)]
    finish: list[Literal["stop", "length"]] = ["length"] * size
    cut: list[int | None] = [None] * size
    active = [True] * size
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        **_with_cache(past),
        logits_to_keep=1,
        use_cache=True,
    )
    past = _cache_of(out)
    logits = out.logits[:, -1, :].float()
    try:
        for _ in range(config.max_new_tokens):
            scaled = logits / temperature
            full = torch.log_softmax(scaled, dim=-1).cpu()
            proposal = scaled.cpu()
            if constraint is not None:
                allowed = _constraint_mask(constraint, tokens, active, proposal.shape[-1])
                proposal = proposal.masked_fill(~allowed, float("-inf"))
            if config.greedy:
                chosen = proposal.argmax(dim=-1)
            else:
                proposal = _top_p_filter(proposal, config.top_p)
                chosen = torch.multinomial(
                    torch.softmax(proposal, dim=-1), 1, generator=generator
                ).squeeze(-1)
            for row in range(size):
                if not active[row]:
                    chosen[row] = lm.pad_token_id
                    continue
                token = int(chosen[row])
                tokens[row].append(token)
                log_probs[row].append(float(full[row, token]))
                done = token in stop_ids or (
                    constraint is not None and constraint.is_complete(tokens[row])
                )
                if not done and config.stop:
                    cut[row] = _stop_at(lm.decode(tokens[row]), config.stop)
                    done = cut[row] is not None
                if done:
                    active[row], finish[row] = False, "stop"
            if not any(active):
                break
            mask = torch.cat([mask, torch.ones((size, 1), dtype=mask.dtype, device=device)], 1)
            positions = positions[:, -1:] + 1
            out = model(
                input_ids=chosen.view(size, 1).to(device),
                attention_mask=mask,
                position_ids=positions,
                **_with_cache(past),
                logits_to_keep=1,
                use_cache=True,
            )
            past = _cache_of(out)
            logits = out.logits[:, -1, :].float()
    finally:
        model.train(was_training)
    completions = []
    for row in range(size):
        text = lm.decode(tokens[row])
        if cut[row] is not None:
            text = text[: cut[row]]
        completions.append(
            Completion(
                prompt_ids=tuple(int(t) for t in prompts[row]),
                completion_ids=tuple(tokens[row]),
                log_probs=tuple(log_probs[row]),
                text=text.strip(),
                finish_reason=finish[row],
            )
        )
    return completions
