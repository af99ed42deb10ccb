"""Multi-turn GRPO for language-model policies, with a supervised warm-start.

GRPO (Shao et al. 2024, "DeepSeekMath", sec. 4.1, alg. 1) on token traces:

    pick B tasks (the next B of a shuffled order of the training tasks, reshuffled
    once every task has been drawn: epochs, without replacement);
    run G attempts at each (one group), sampling with pi_theta_old
    r_i = 1 when attempt i solved its task, else 0
    outcome (4.1.2): A_i = (r_i - mean(r_group)) / (std(r_group) + 1e-8) on every model
                     token of i (population std; a group that scored all the same: 0)
    process (4.1.3): per-step credit from learnloop.credit.assign_credit (returns to
                     go, or attribution) normalized over the group's steps, applied to
                     the tokens of that step
    for mu epochs, minibatches of traces: maximize J (eq. 3) over the model's tokens,
    clipped ratio per token, optional KL to pi_ref (eq. 4), gradient clipped

Only the model's own tokens enter the loss (the trace's completion mask); prompt
and tool tokens never do. Traces whose advantages are all zero (a group whose
attempts all scored the same) carry no gradient and are not run; by default
(``LMGRPOConfig.loss_normalization="all_tokens"``, :func:`normalized_grpo_loss`)
their tokens still count in the mean, so the loss is the token-level mean over
every model token of the iteration (their KL term, when ``kl_coef > 0``, is left
out with them). The prompt tokens every trace of a minibatch starts
with (system prompt and worked examples; the task too when all attempt it) run once
through the model, not once per trace (:func:`collate_traces`); their gradient is
the same. pi_ref is computed only when ``kl_coef > 0``:
under LoRA it is the base model with the adapters switched off (no copy), under
full fine-tuning a frozen copy of the initial weights.

GRPO from a model that never succeeds has zero gradient (every group scores all
zeros), so :func:`warm_start` first fits the model on successful episodes from
the store (supervised, completion tokens only); :func:`record_exploration`
fills the store with random-tool episodes when it has none.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from learnloop.credit import assign_credit, group_normalize
from learnloop.envs.suite import Task, ToolUseSuite
from learnloop.episode import Episode, OutcomeStatus, Step
from learnloop.errors import ConfigError
from learnloop.train.config import GRPOConfig, linear_schedule
from learnloop.train.lm.config import LMGRPOConfig
from learnloop.train.lm.conversation import AttemptResult, SuiteChat, TokenTrace, group_tasks
from learnloop.train.lm.generation import left_pad, split_shared_prefix, token_log_probs
from learnloop.train.lm.model import LanguageModel
from learnloop.train.losses import approx_kl, clip_fraction, grpo_loss, kl_to_reference

__all__ = [
    "LMGRPO",
    "LMPolicy",
    "TraceBatch",
    "collate_traces",
    "lm_grpo_loss",
    "normalized_grpo_loss",
    "record_exploration",
    "sft_loss",
    "step_advantages",
    "successful_demonstrations",
    "warm_start",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class TraceBatch:
    """Traces as tensors, all ``(B, L)``: what follows their shared prefix, left-padded."""

    input_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor
    """True on the model's own tokens."""
    old_log_probs: Tensor
    """log pi_old of each model token at sampling time (0 elsewhere)."""
    advantages: Tensor
    """A of each model token (its step's advantage; 0 elsewhere)."""
    prefix_ids: Tensor | None = None
    """``(1, P)``: the prompt tokens every trace starts with, run once (None: no prefix)."""

    @property
    def prefix_length(self) -> int:
        """P, the tokens of each trace before its row of ``input_ids``."""
        return 0 if self.prefix_ids is None else int(self.prefix_ids.shape[1])


def collate_traces(
    traces: Sequence[TokenTrace],
    step_advantages: Sequence[Sequence[float]] | None,
    *,
    pad_id: int,
    device: torch.device | str = "cpu",
    share_prefix: bool = True,
) -> TraceBatch:
    """Stack traces (left padding); token advantages come from each token's step.

    With ``share_prefix`` the prompt tokens all traces start with (a GRPO group's
    system prompt, worked examples and task) become ``prefix_ids``, which the loss
    runs once instead of once per trace; they are never model tokens.
    """
    first_targets = [
        next((j for j, step in enumerate(t.step_of_token) if step >= 0), len(t.ids)) for t in traces
    ]
    sequences = [t.ids for t in traces]
    if share_prefix:
        prefix, ids, mask = split_shared_prefix(
            sequences, pad_id, device, first_targets=first_targets
        )
    else:
        prefix, (ids, mask) = None, left_pad(sequences, pad_id, device)
    start = 0 if prefix is None else prefix.shape[1]
    width = ids.shape[1]
    completion = torch.zeros((len(traces), width), dtype=torch.bool)
    old = torch.zeros((len(traces), width), dtype=torch.float32)
    adv = torch.zeros((len(traces), width), dtype=torch.float32)
    for row, trace in enumerate(traces):
        offset = width - (len(trace.ids) - start)
        steps = torch.tensor(trace.step_of_token[start:], dtype=torch.long)
        completion[row, offset:] = steps >= 0
        old[row, offset:] = torch.tensor(trace.log_probs[start:], dtype=torch.float32)
        if step_advantages is not None:
            per_step = torch.tensor([0.0, *step_advantages[row]], dtype=torch.float32)
            if len(step_advantages[row]) < trace.num_steps:
                raise ConfigError(
                    f"trace {row} has {trace.num_steps} model calls but "
                    f"{len(step_advantages[row])} step advantages"
                )
            adv[row, offset:] = per_step[steps + 1]  # step -1 (not the model's) reads 0.0
    return TraceBatch(
        ids, mask, completion.to(device), old.to(device), adv.to(device), prefix_ids=prefix
    )


def step_advantages(
    results: Sequence[AttemptResult],
    group_ids: Sequence[int],
    *,
    mode: str = "outcome",
    credit: str = "return",
) -> list[np.ndarray]:
    """Per-step advantages of each attempt (see the module docstring).

    >>> from types import SimpleNamespace as NS
    >>> runs = [NS(reward=1.0, step_rewards=(1.0,)), NS(reward=0.0, step_rewards=(0.0,))]
    >>> [a.round(6).tolist() for a in step_advantages(runs, [0, 0])]
    [[1.0], [-1.0]]
    """
    if len(results) != len(group_ids):
        raise ConfigError(
            f"one group id per attempt: {len(results)} attempts, {len(group_ids)} ids"
        )
    if mode == "outcome":
        normalized = group_normalize([r.reward for r in results], group_ids=list(group_ids))
        return [np.full(len(r.step_rewards), normalized[i]) for i, r in enumerate(results)]
    if mode != "process":
        raise ConfigError(f"unknown advantage mode {mode!r}; use 'outcome' or 'process'")
    credits: list[np.ndarray] = []
    for result in results:
        steps = [Step.new(i, "call", reward=r) for i, r in enumerate(result.step_rewards)]
        status = OutcomeStatus.SUCCESS if result.reward > 0 else OutcomeStatus.FAILURE
        episode = Episode.new("attempt", steps=steps, status=status)
        credited = assign_credit(episode, credit)  # type: ignore[arg-type]
        credits.append(np.array([s.credit or 0.0 for s in credited.steps]))
    flat = np.concatenate(credits) if credits else np.zeros(0)
    flat_ids = np.concatenate([np.full(len(c), group_ids[i]) for i, c in enumerate(credits)])
    normalized = group_normalize(flat, group_ids=flat_ids) if flat.size else flat
    out, start = [], 0
    for c in credits:
        out.append(normalized[start : start + len(c)])
        start += len(c)
    return out


LOSS_NORMALIZATIONS = ("all_tokens", "active_tokens", "attempts")


def normalized_grpo_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float,
    normalization: str = "all_tokens",
    denominator: float | None = None,
    kl_coef: float = 0.0,
    ref_log_probs: Tensor | None = None,
) -> Tensor:
    """GRPO's objective (eq. 3), negated, over the ``mask`` tokens of ``(B, L)`` tensors.

    Each model token t contributes s_t = min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t)
    - beta D_KL,t (eq. 4) with r_t = exp(log_probs - old_log_probs). The loss is
    -(sum) / ``denominator``, where

    * ``"all_tokens"``: the sum of s over the model tokens; ``denominator`` defaults
      to their number (the token-level mean);
    * ``"attempts"``: the sum over rows of each row's mean of s over its model
      tokens; ``denominator`` defaults to the rows that have one (eq. 3's 1/G 1/|o_i|);
    * ``"active_tokens"``: sum and count over the tokens with A != 0 only, KL too
      (:func:`learnloop.train.losses.grpo_loss`); ``denominator`` must be None.

    A larger ``denominator`` stands for traces that were left out of the batch
    because their advantages were all zero: they add nothing to the sum, but count.
    A batch without a counted token gives a zero loss with a zero gradient.

    >>> zero = torch.zeros(1, 3)
    >>> a, m = torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[True, True, False]])
    >>> float(normalized_grpo_loss(zero, zero, a, m, clip_eps=0.2, denominator=4.0))
    -0.5
    """
    if normalization not in LOSS_NORMALIZATIONS:
        raise ConfigError(
            f"unknown loss normalization {normalization!r}; use one of {LOSS_NORMALIZATIONS}"
        )
    if normalization == "active_tokens":
        if denominator is not None:
            raise ConfigError("'active_tokens' normalization divides by the batch's own count")
        return grpo_loss(
            log_probs[mask],
            old_log_probs[mask],
            advantages[mask],
            clip_eps=clip_eps,
            ref_log_prob=None if ref_log_probs is None else ref_log_probs[mask],
            kl_coef=kl_coef,
        )
    # Off the mask everything is zeroed first (ratio 1, A 0), so whatever those
    # positions hold (padding, -inf) reaches neither the sum nor the gradient.
    adv = torch.where(mask, advantages, 0.0)
    log_ratio = torch.where(mask, log_probs - old_log_probs, 0.0)
    ratio = torch.exp(log_ratio)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
    if kl_coef > 0.0:
        if ref_log_probs is None:
            raise ConfigError("kl_coef > 0 needs ref_log_probs; pass the reference policy's")
        surrogate = surrogate - kl_coef * kl_to_reference(
            torch.where(mask, log_probs, 0.0), torch.where(mask, ref_log_probs, 0.0)
        )
    weights = mask.to(surrogate.dtype)
    if normalization == "attempts":
        weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        count = float((mask.sum(dim=1) > 0).sum())
    else:
        count = float(mask.sum())
    if denominator is None:
        denominator = count
    if count == 0 or denominator <= 0:
        return torch.where(mask, log_probs, 0.0).sum() * 0.0
    return -(surrogate * weights).sum() / denominator


def lm_grpo_loss(
    model: Any,
    batch: TraceBatch,
    *,
    clip_eps: float,
    kl_coef: float = 0.0,
    ref_log_probs: Tensor | None = None,
    normalization: str = "all_tokens",
    denominator: float | None = None,
) -> tuple[Tensor, Tensor]:
    """GRPO's loss over the model's tokens of ``batch``; returns ``(loss, log_probs)``.

    ``normalization`` and ``denominator`` as in :func:`normalized_grpo_loss`.
    ``log_probs`` is ``(B, L)`` (0 off the completion mask), for metrics.
    """
    log_probs = token_log_probs(
        model,
        batch.input_ids,
        batch.attention_mask,
        batch.completion_mask,
        prefix_ids=batch.prefix_ids,
    )
    loss = normalized_grpo_loss(
        log_probs,
        batch.old_log_probs,
        batch.advantages,
        batch.completion_mask,
        clip_eps=clip_eps,
        normalization=normalization,
        denominator=denominator,
        kl_coef=kl_coef,
        ref_log_probs=ref_log_probs,
    )
    return loss, log_probs


def sft_loss(model: Any, batch: TraceBatch) -> Tensor:
    """Mean negative log-likelihood of the model's tokens (warm-start on demonstrations)."""
    log_probs = token_log_probs(
        model,
        batch.input_ids,
        batch.attention_mask,
        batch.completion_mask,
        prefix_ids=batch.prefix_ids,
    )
    return -log_probs[batch.completion_mask].mean()


# --- warm-start ----------------------------------------------------------------------------


def record_exploration(
    suite: ToolUseSuite,
    recorder: Any,
    num_episodes: int,
    *,
    seed: int = 0,
    policy: str = "bandit",
) -> None:
    """Record ``num_episodes`` attempts at training tasks, as an agent in production would.

    ``policy="bandit"`` chooses tools with a LinUCB selector over hashed task text
    that learns online from each call's success (learnloop.bandits), so later
    episodes mostly use good tools; ``"random"`` chooses uniformly. The episodes
    land in the recorder's store like any agent's; the successful ones are what
    :func:`successful_demonstrations` reads back.
    """
    from learnloop.envs.gym_env import EnvConfig, ToolUseEnv

    if policy not in ("bandit", "random"):
        raise ConfigError(f"exploration policy must be 'bandit' or 'random', got {policy!r}")
    env = ToolUseEnv(suite, "train", recorder=recorder, config=EnvConfig(agent_id="explorer"))
    rng = np.random.default_rng(seed)
    selector = None
    if policy == "bandit":
        from learnloop.bandits import ToolSelector, make_policy

        selector = ToolSelector(make_policy("linucb"), tools=suite.tools, seed=seed)
    for episode in range(num_episodes):
        _, info = env.reset(seed=seed + episode)
        done = False
        while not done:
            if selector is None:
                choice, action = None, int(rng.integers(len(suite.tools)))
            else:
                choice = selector.choose(str(info["subtask_text"]))
                action = suite.tool_index(choice.tool)
            _, _, terminated, truncated, info = env.step(np.int64(action))
            if selector is not None and choice is not None:
                selector.update(choice, 1.0 if info["success"] else 0.0)
            done = terminated or truncated
    env.close()
    recorder.flush()


def successful_demonstrations(
    store: Any, chat: SuiteChat, *, limit: int | None = None
) -> list[TokenTrace]:
    """Traces of the store's successful episodes at the suite's training tasks.

    An episode qualifies when its status is success, its ``metadata.task_id``
    names a training task of ``chat.suite`` and it has one tool step per sub-task.
    """
    from learnloop.store.base import EpisodeQuery

    by_id = {task.id: task for task in chat.suite.train_tasks}
    traces: list[TokenTrace] = []
    query = EpisodeQuery(statuses=(OutcomeStatus.SUCCESS,), metadata={"split": "train"})
    for episode in store.iter_episodes(query):
        task = by_id.get(str(episode.metadata.get("task_id", "")))
        tools = [s.tool for s in episode.steps if s.tool]
        if task is None or len(tools) != len(task.subtasks):
            continue
        if any(tool not in chat.suite.tools for tool in tools):
            continue
        traces.append(chat.demonstration(task, [str(t) for t in tools]))
        if limit is not None and len(traces) >= limit:
            break
    return traces


def warm_start(
    lm: LanguageModel,
    traces: Sequence[TokenTrace],
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    seed: int = 0,
) -> list[float]:
    """Supervised steps on the model tokens of ``traces``; returns each step's loss."""
    if steps and not traces:
        raise ConfigError(
            "warm-start has no successful episodes to learn from; record some (e.g. "
            "record_exploration) or pass sft_steps=0"
        )
    params = [p for p in lm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    rng = np.random.default_rng(seed)
    losses = []
    lm.model.train()
    for _ in range(steps):
        picked = rng.choice(len(traces), size=min(batch_size, len(traces)), replace=False)
        batch = collate_traces(
            [traces[int(i)] for i in picked], None, pad_id=lm.pad_token_id, device=lm.device
        )
        loss = sft_loss(lm.model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
    return losses


# --- the learner ---------------------------------------------------------------------------


class LMPolicy:
    """The language model seen by :class:`~learnloop.train.run.TrainingRun`."""

    def __init__(self, lm: LanguageModel, num_actions: int, config: Mapping[str, Any]) -> None:
        self.lm = lm
        self.num_actions = num_actions
        self.config = dict(config)

    def describe(self) -> dict[str, Any]:
        """The model's identity and sizes as plain data."""
        return {
            "kind": "lm",
            "model": self.lm.name,
            "num_actions": self.num_actions,
            "parameters": self.lm.num_parameters(),
            "trainable_parameters": self.lm.num_parameters(trainable=True),
            "config": self.config,
        }

    def save(self, path: Any) -> None:
        """Save the trained tensors (adapters under LoRA) with :meth:`describe`."""
        torch.save({"policy": self.describe(), "state_dict": self.lm.trainable_state()}, path)


class LMGRPO:
    """GRPO on a language-model policy over the built-in suite (see the module docstring).

    Args:
        chat: the suite and the policy (``chat.lm``).
        grpo: group size, tasks per iteration, epochs, learning rate, clip, KL...
        config: sampling and what the language model adds.
        num_iterations: the run's length (learning-rate schedule).
        seed: seeds task choice, sampling and tool outcomes.
        recorder: records every training attempt as an episode when given.
        lm_settings: the model's settings, for :meth:`LMPolicy.describe`.
        tasks: the training tasks groups are drawn from (default: the suite's train split).
    """

    def __init__(
        self,
        chat: SuiteChat,
        grpo: GRPOConfig,
        config: LMGRPOConfig,
        *,
        num_iterations: int,
        seed: int = 0,
        recorder: Any = None,
        lm_settings: Mapping[str, Any] | None = None,
        tasks: Sequence[Task] | None = None,
    ) -> None:
        self.chat = chat
        self.tasks = tuple(tasks) if tasks is not None else chat.suite.train_tasks
        if not self.tasks:
            raise ConfigError("LMGRPO needs at least one training task")
        self.lm = chat.lm
        self.grpo = grpo
        self.config = config
        self.num_iterations = num_iterations
        self.recorder = recorder
        self.policy = LMPolicy(self.lm, len(chat.suite.tools), lm_settings or {})
        self.params = [p for p in self.lm.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=grpo.learning_rate, eps=grpo.adam_eps)
        self.uses_lora = hasattr(self.lm.model, "peft_config")
        self.reference: Any = None
        if grpo.kl_coef > 0 and not self.uses_lora:
            self.reference = copy.deepcopy(self.lm.model).eval().requires_grad_(False)
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.env_steps = 0
        # Tasks are drawn without replacement: the next ones of a shuffled order of
        # ``self.tasks``, reshuffled (from ``self.rng``) once used up. Empty until
        # the first draw.
        self.task_order: list[int] = []
        self.task_position = 0

    @contextmanager
    def _reference_model(self) -> Iterator[Any]:
        if self.reference is not None:
            yield self.reference
        else:
            adapters = self.lm.model.base_model  # peft's LoraModel
            adapters.disable_adapter_layers()
            try:
                yield self.lm.model
            finally:
                adapters.enable_adapter_layers()

    def draw_tasks(self, count: int) -> list[Task]:
        """The next ``count`` tasks of the shuffled order (an epoch); a used-up order is reshuffled.

        Within an epoch no task repeats. When the epoch ends mid-draw the draw goes
        on in the next one, so one draw may hold a task twice only near an epoch's
        end or when ``count`` exceeds the number of tasks.
        """
        picked: list[int] = []
        while len(picked) < count:
            if self.task_position >= len(self.task_order):
                self.task_order = [int(i) for i in self.rng.permutation(len(self.tasks))]
                self.task_position = 0
            take = min(count - len(picked), len(self.task_order) - self.task_position)
            picked.extend(self.task_order[self.task_position : self.task_position + take])
            self.task_position += take
        return [self.tasks[i] for i in picked]

    def collect(self) -> tuple[list[AttemptResult], list[int]]:
        """One batch: ``tasks_per_iteration`` tasks, ``group_size`` attempts at each."""
        picked = self.draw_tasks(self.grpo.tasks_per_iteration)
        attempts = group_tasks(picked, self.grpo.group_size)
        sampling = dataclasses.replace(
            self.config.sampling,
            max_new_tokens=min(self.config.max_new_tokens, self.chat.answer_tokens),
        )
        results = self.chat.run(attempts, sampling, generator=self.generator, rng=self.rng)
        group_ids = [i // self.grpo.group_size for i in range(len(attempts))]
        return results, group_ids

    def _record(self, results: Sequence[AttemptResult]) -> None:
        for result in results:
            episode_id = self.recorder.begin(
                result.task.text,
                agent_id="lm-policy",
                metadata={"task_id": result.task.id, "split": result.task.split, "policy": "lm"},
                expected_outcome={"success": True},
            )
            for completion, tool, reward in zip(
                result.completions, result.tools, result.step_rewards, strict=True
            ):
                self.recorder.step(
                    episode_id,
                    completion.text,
                    tool=tool,
                    reward=reward,
                    success=reward > 0,
                    prompt_token_ids=completion.prompt_ids,
                    completion_token_ids=completion.completion_ids,
                    completion_logprobs=completion.log_probs,
                )
            self.recorder.complete(
                episode_id, status="success" if result.success else "failure", reward=result.reward
            )

    def update(
        self, traces: Sequence[TokenTrace], advantages: Sequence[Sequence[float]]
    ) -> dict[str, float]:
        """mu epochs of minibatch GRPO steps over the traces with a non-zero advantage.

        The traces left out still count in the loss's denominator under the
        ``all_tokens`` and ``attempts`` normalizations: each minibatch is divided by
        its own count (model tokens or attempts) over the kept traces' share of the
        iteration's.
        """
        grpo = self.grpo
        normalization = self.config.loss_normalization
        keep = [i for i, a in enumerate(advantages) if np.any(np.asarray(a) != 0)]
        metrics = {"train/active_fraction": len(keep) / max(len(traces), 1)}
        if not keep:
            return {**metrics, "train/policy_loss": 0.0, "train/updates": 0.0}
        # all counted / kept counted: what one kept model token (or attempt) stands for
        inflation = len(traces) / len(keep)
        if normalization == "all_tokens":
            counts = [sum(t.completion_mask) for t in traces]
            inflation = sum(counts) / max(sum(counts[i] for i in keep), 1)
        device, pad = self.lm.device, self.lm.pad_token_id
        minibatch = max(1, min(grpo.minibatch_size, len(keep)))
        chunks = [keep[s : s + minibatch] for s in range(0, len(keep), minibatch)]
        references: dict[int, Tensor] = {}
        if grpo.kl_coef > 0:
            with torch.no_grad(), self._reference_model() as reference:
                for chunk in chunks:
                    batch = collate_traces(
                        [traces[i] for i in chunk],
                        [advantages[i] for i in chunk],
                        pad_id=pad,
                        device=device,
                    )
                    scored = token_log_probs(
                        reference,
                        batch.input_ids,
                        batch.attention_mask,
                        batch.completion_mask,
                        prefix_ids=batch.prefix_ids,
                    )
                    # Kept over the whole trace (0 on the prefix, which holds no model
                    # token), since the training minibatches may share another prefix.
                    skipped = torch.zeros(batch.prefix_length, device=scored.device)
                    for row, i in enumerate(chunk):
                        tail = len(traces[i].ids) - batch.prefix_length
                        references[i] = torch.cat([skipped, scored[row, scored.shape[1] - tail :]])
        sums = {"policy_loss": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0}
        updates = steps = 0
        self.lm.model.train()
        accumulate = self.config.gradient_accumulation
        for _ in range(grpo.num_epochs):
            order = [keep[int(i)] for i in self.rng.permutation(len(keep))]
            chunks = [order[s : s + minibatch] for s in range(0, len(order), minibatch)]
            for number, chunk in enumerate(chunks):
                batch = collate_traces(
                    [traces[i] for i in chunk],
                    [advantages[i] for i in chunk],
                    pad_id=pad,
                    device=device,
                )
                ref: Tensor | None = None
                if references:
                    ref = torch.zeros_like(batch.old_log_probs)
                    for row, i in enumerate(chunk):
                        tail = len(traces[i].ids) - batch.prefix_length
                        ref[row, ref.shape[1] - tail :] = references[i][batch.prefix_length :]
                denominator: float | None = None
                if normalization == "all_tokens":
                    denominator = float(batch.completion_mask.sum()) * inflation
                elif normalization == "attempts":
                    denominator = len(chunk) * inflation
                loss, log_probs = lm_grpo_loss(
                    self.lm.model,
                    batch,
                    clip_eps=grpo.clip_eps,
                    kl_coef=grpo.kl_coef,
                    ref_log_probs=ref,
                    normalization=normalization,
                    denominator=denominator,
                )
                (loss / accumulate).backward()  # type: ignore[no-untyped-call]
                steps += 1
                if steps % accumulate == 0 or number == len(chunks) - 1:
                    torch.nn.utils.clip_grad_norm_(self.params, grpo.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    updates += 1
                with torch.no_grad():
                    tokens = batch.completion_mask
                    sums["policy_loss"] += loss.item()
                    sums["approx_kl"] += float(
                        approx_kl(log_probs[tokens], batch.old_log_probs[tokens])
                    )
                    sums["clip_fraction"] += float(
                        clip_fraction(
                            log_probs[tokens], batch.old_log_probs[tokens], clip_eps=grpo.clip_eps
                        )
                    )
        metrics.update({f"train/{k}": v / steps for k, v in sums.items()})
        metrics["train/updates"] = float(updates)
        return metrics

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """Collect one batch of groups and update; ``iteration`` counts from 0."""
        grpo = self.grpo
        lr = grpo.learning_rate
        if grpo.anneal_lr:
            lr = linear_schedule(grpo.learning_rate, iteration, self.num_iterations)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        started = time.perf_counter()
        results, group_ids = self.collect()
        rollout_s = time.perf_counter() - started
        if self.recorder is not None:
            self._record(results)
        advantages = step_advantages(
            results, group_ids, mode=grpo.advantage, credit=self.config.credit
        )
        started = time.perf_counter()
        metrics = self.update([r.trace for r in results], [a.tolist() for a in advantages])
        update_s = time.perf_counter() - started
        self.env_steps += sum(len(r.tools) for r in results)
        decisions = max(sum(len(r.tools) for r in results), 1)
        return {
            **metrics,
            "rollout/episodes": float(len(results)),
            "rollout/success_rate": float(np.mean([r.success for r in results])),
            "rollout/return_last100": float(np.mean([r.reward for r in results])),
            "rollout/valid_rate": sum(t is not None for r in results for t in r.tools) / decisions,
            "rollout/tokens": float(sum(len(r.trace.ids) for r in results)),
            "rollout/env_steps": float(self.env_steps),
            "train/learning_rate": lr,
            "time/rollout_s": rollout_s,
            "time/update_s": update_s,
        }

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimizer, random states and the place in the task order."""
        return {
            "weights": self.lm.trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "rng": self.rng.bit_generator.state,
            "env_steps": self.env_steps,
            "task_order": list(self.task_order),
            "task_position": self.task_position,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the run then draws the tasks an uninterrupted one would."""
        self.lm.load_trainable_state(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        self.env_steps = int(state["env_steps"])
        # A checkpoint from before tasks were drawn without replacement has no order:
        # the next draw starts a fresh one (from the restored rng).
        order = [int(i) for i in state.get("task_order", ())]
        position = int(state.get("task_position", 0))
        if order and (sorted(order) != list(range(len(self.tasks))) or position > len(order)):
            logger.warning(
                "the checkpoint's task order is for %d tasks, this learner has %d: "
                "starting a fresh order",
                len(order),
                len(self.tasks),
            )
            order, position = [], 0
        self.task_order, self.task_position = order, position
