"""Multi-turn GRPO on token traces: advantages, masks, the loss, an update, KL, warm-start."""

from __future__ import annotations

import copy
import doctest
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from learnloop.envs.suite import ToolUseSuite
from learnloop.errors import ConfigError
from learnloop.recorder import Recorder
from learnloop.store import SqliteStore
from learnloop.train.config import GRPOConfig
from learnloop.train.lm import grpo_lm
from learnloop.train.lm.config import LMGRPOConfig
from learnloop.train.lm.conversation import SuiteChat, TokenTrace
from learnloop.train.lm.generation import token_log_probs
from learnloop.train.lm.grpo_lm import (
    LMGRPO,
    collate_traces,
    lm_grpo_loss,
    normalized_grpo_loss,
    record_exploration,
    sft_loss,
    step_advantages,
    successful_demonstrations,
    warm_start,
)
from learnloop.train.lm.model import LanguageModel
from learnloop.train.losses import grpo_loss


def test_doctests() -> None:
    result = doctest.testmod(grpo_lm)
    assert result.attempted > 0 and result.failed == 0


def _attempt(reward: float, steps: tuple[float, ...]) -> SimpleNamespace:
    return SimpleNamespace(reward=reward, step_rewards=steps)


def test_outcome_advantages_by_hand() -> None:
    runs = [
        _attempt(1.0, (1.0,)),
        _attempt(0.0, (0.0,)),
        _attempt(0.0, (1.0, 0.0)),
        _attempt(1.0, (1.0, 1.0)),
        _attempt(1.0, (1.0,)),
        _attempt(1.0, (1.0,)),
    ]
    out = step_advantages(runs, [0, 0, 0, 0, 1, 1])  # type: ignore[arg-type]
    # group 0: rewards 1, 0, 0, 1: mean 0.5, population std 0.5 -> +-1 on every step
    assert [a.round(6).tolist() for a in out[:4]] == [[1.0], [-1.0], [-1.0, -1.0], [1.0, 1.0]]
    # group 1: all equal -> no signal
    assert [a.tolist() for a in out[4:]] == [[0.0], [0.0]]


def test_process_advantages_use_credit_returns_by_hand() -> None:
    runs = [_attempt(1.0, (1.0, 1.0)), _attempt(0.0, (1.0, 0.0))]
    out = step_advantages(runs, [0, 0], mode="process")  # type: ignore[arg-type]
    # returns to go: [2, 1] and [1, 0]; over the group's steps mean 1, std sqrt(0.5)
    s = math.sqrt(0.5)
    assert np.allclose(out[0], [1 / s, 0.0]) and np.allclose(out[1], [0.0, -1 / s])
    with pytest.raises(ConfigError, match="advantage mode"):
        step_advantages(runs, [0, 0], mode="bogus")  # type: ignore[arg-type]


def test_collate_places_each_steps_advantage_on_its_tokens() -> None:
    long = TokenTrace(
        ids=(5, 6, 7, 8, 9), step_of_token=(-1, 0, -1, 1, 1), log_probs=(0.0, -1.0, 0.0, -2.0, -3.0)
    )
    short = TokenTrace(ids=(4, 3), step_of_token=(-1, 0), log_probs=(0.0, -0.5))
    batch = collate_traces([long, short], [[0.5, -2.0], [1.0]], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9], [0, 0, 0, 4, 3]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]
    assert batch.completion_mask.tolist() == [
        [False, True, False, True, True],
        [False, False, False, False, True],
    ]
    assert batch.advantages.tolist() == [[0.0, 0.5, 0.0, -2.0, -2.0], [0.0, 0.0, 0.0, 0.0, 1.0]]
    assert batch.old_log_probs.tolist() == [
        [0.0, -1.0, 0.0, -2.0, -3.0],
        [0.0, 0.0, 0.0, 0.0, -0.5],
    ]
    with pytest.raises(ConfigError, match="step advantages"):
        collate_traces([long], [[0.5]], pad_id=0)


def _traces(lm: LanguageModel) -> list[TokenTrace]:
    prompt = lm.chat_ids([{"role": "user", "content": "Read the file notes.txt"}])
    end = lm.tokenizer.eos_token_id
    good, bad = [*lm.encode("file_read"), end], [*lm.encode("web_search"), end]
    tool = lm.encode("<|im_start|>tool\nok<|im_end|>\n<|im_start|>assistant\n")
    traces = []
    for first, second in ((good, good), (bad, bad)):
        ids = prompt + first + tool + second
        steps = [-1] * len(prompt) + [0] * len(first) + [-1] * len(tool) + [1] * len(second)
        with torch.no_grad():
            t = torch.tensor([ids])
            lp = token_log_probs(
                lm.model, t, torch.ones_like(t), torch.tensor([[s >= 0 for s in steps]])
            )
        traces.append(
            TokenTrace(ids=tuple(ids), step_of_token=tuple(steps), log_probs=tuple(lp[0].tolist()))
        )
    return traces


def test_loss_at_ratio_one_is_minus_the_mean_active_advantage(tiny_lm: LanguageModel) -> None:
    traces = _traces(tiny_lm)
    batch = collate_traces(traces, [[1.0, 0.5], [-1.0, 0.0]], pad_id=tiny_lm.pad_token_id)
    loss, _ = lm_grpo_loss(tiny_lm.model, batch, clip_eps=0.2, normalization="active_tokens")
    # ratio 1 everywhere; the loss averages A over model tokens with A != 0
    adv = batch.advantages[batch.completion_mask]
    expected = -float(adv[adv != 0].mean())
    assert math.isclose(loss.item(), expected, abs_tol=1e-5)
    # the default averages over every model token, A = 0 ones included
    loss, _ = lm_grpo_loss(tiny_lm.model, batch, clip_eps=0.2)
    assert math.isclose(loss.item(), -float(adv.mean()), abs_tol=1e-5)


# (2, 3) tokens; row 0 has two model tokens, row 1 three (one of them with A = 0)
_MASK = torch.tensor([[True, True, False], [True, True, True]])
_ADV = torch.tensor([[1.0, 1.0, 7.0], [-0.5, 0.0, 0.25]])


@pytest.mark.parametrize(
    ("normalization", "denominator", "expected"),
    [
        # sum of A over the 5 model tokens: 1 + 1 - 0.5 + 0 + 0.25 = 1.75
        ("all_tokens", None, -1.75 / 5),
        ("all_tokens", 7.0, -1.75 / 7),  # 2 more tokens of left-out traces
        ("active_tokens", None, -1.75 / 4),  # the A = 0 token does not count
        # row means 2 / 2 = 1 and -0.25 / 3, averaged over the 2 rows (or 4)
        ("attempts", None, -(1.0 - 0.25 / 3) / 2),
        ("attempts", 4.0, -(1.0 - 0.25 / 3) / 4),
    ],
)
def test_loss_normalizations_by_hand(
    normalization: str, denominator: float | None, expected: float
) -> None:
    zero = torch.zeros(2, 3)  # ratio 1: each token's objective is its advantage
    loss = normalized_grpo_loss(
        zero,
        zero,
        _ADV,
        _MASK,
        clip_eps=0.2,
        normalization=normalization,
        denominator=denominator,
    )
    assert loss.item() == pytest.approx(expected, abs=1e-7)


def test_loss_clips_the_ratio_and_adds_kl_on_every_counted_token() -> None:
    mask = torch.tensor([[True, True, True]])
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))
    adv = torch.tensor([[1.0, -1.0, 0.0]])
    # min(1.5 * 1, 1.2 * 1) = 1.2; min(0.5 * -1, 0.8 * -1) = -0.8; 0 -> mean 0.4 / 3
    loss = normalized_grpo_loss(new, old, adv, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(-0.4 / 3, abs=1e-6)
    # KL: pi_ref / pi = 2 on every token -> 2 - ln 2 - 1 per token, also where A = 0
    ref = new + math.log(2.0)
    kl = 1.0 - math.log(2.0)
    loss = normalized_grpo_loss(new, old, adv, mask, clip_eps=0.2, kl_coef=0.1, ref_log_probs=ref)
    assert loss.item() == pytest.approx((-0.4 + 3 * 0.1 * kl) / 3, abs=1e-6)
    # active_tokens drops the A = 0 token, its KL too (learnloop.train.losses.grpo_loss)
    loss = normalized_grpo_loss(
        new,
        old,
        adv,
        mask,
        clip_eps=0.2,
        kl_coef=0.1,
        ref_log_probs=ref,
        normalization="active_tokens",
    )
    assert loss.item() == pytest.approx((-0.4 + 2 * 0.1 * kl) / 2, abs=1e-6)
    same = grpo_loss(
        new[mask], old[mask], adv[mask], clip_eps=0.2, kl_coef=0.1, ref_log_prob=ref[mask]
    )
    assert loss.item() == pytest.approx(same.item(), abs=1e-7)


def test_loss_ignores_what_lies_off_the_mask() -> None:
    log_probs = torch.tensor([[-1.0, -2.0, float("-inf")]], requires_grad=True)
    old = torch.tensor([[-1.0, -2.0, float("nan")]])
    adv = torch.tensor([[1.0, -1.0, float("inf")]])
    mask = torch.tensor([[True, True, False]])
    for normalization in ("all_tokens", "attempts"):
        loss = normalized_grpo_loss(
            log_probs, old, adv, mask, clip_eps=0.2, normalization=normalization
        )
        loss.backward()
        assert loss.item() == pytest.approx(0.0, abs=1e-7)
        assert log_probs.grad is not None and torch.isfinite(log_probs.grad).all()
        # d/dlog_prob of -A r / 2 at r = 1: -A / 2 (all_tokens: 2 tokens; attempts: 1 row of 2)
        assert log_probs.grad[0].tolist() == pytest.approx([-0.5, 0.5, 0.0])
        log_probs.grad = None


def test_loss_without_counted_tokens_is_zero_with_zero_gradient() -> None:
    log_probs = torch.zeros(2, 3, requires_grad=True)
    nothing = torch.zeros(2, 3, dtype=torch.bool)
    for normalization in ("all_tokens", "active_tokens", "attempts"):
        loss = normalized_grpo_loss(
            log_probs, torch.zeros(2, 3), _ADV, nothing, clip_eps=0.2, normalization=normalization
        )
        loss.backward()
        assert loss.item() == 0.0
        assert log_probs.grad is not None and not log_probs.grad.any()
    with pytest.raises(ConfigError, match="loss normalization"):
        normalized_grpo_loss(
            log_probs, log_probs, _ADV, _MASK, clip_eps=0.2, normalization="sequence"
        )
    with pytest.raises(ConfigError, match="own count"):
        normalized_grpo_loss(
            log_probs,
            log_probs,
            _ADV,
            _MASK,
            clip_eps=0.2,
            normalization="active_tokens",
            denominator=3.0,
        )
    with pytest.raises(ConfigError, match="loss_normalization"):
        LMGRPOConfig(loss_normalization="sequence")  # type: ignore[arg-type]


@pytest.mark.parametrize("normalization", ["all_tokens", "active_tokens", "attempts"])
def test_update_counts_the_left_out_traces(
    tiny_lm: LanguageModel, suite: ToolUseSuite, normalization: str
) -> None:
    good, bad = _traces(tiny_lm)
    traces = [good, bad, good, bad]  # the last two: a group that scored all the same
    advantages = [[1.0, 1.0], [-0.5, -0.5], [0.0, 0.0], [0.0, 0.0]]
    learner = LMGRPO(
        SuiteChat(suite, tiny_lm),
        GRPOConfig(group_size=2, tasks_per_iteration=2, num_epochs=1, minibatch_size=4),
        LMGRPOConfig(loss_normalization=normalization),  # type: ignore[arg-type]
        num_iterations=1,
    )
    metrics = learner.update(traces, advantages)
    # one minibatch of the 2 kept traces, at ratio 1 (the loss is taken before the step)
    n_good, n_bad = sum(good.completion_mask), sum(bad.completion_mask)
    expected = {
        "all_tokens": -(n_good - 0.5 * n_bad) / (2 * (n_good + n_bad)),
        "active_tokens": -(n_good - 0.5 * n_bad) / (n_good + n_bad),
        "attempts": -(1.0 - 0.5) / 4,
    }[normalization]
    assert metrics["train/active_fraction"] == 0.5 and metrics["train/updates"] == 1.0
    assert metrics["train/policy_loss"] == pytest.approx(expected, abs=1e-5)


def test_only_model_tokens_get_gradient_signal(tiny_lm: LanguageModel) -> None:
    traces = _traces(tiny_lm)
    batch = collate_traces(traces, [[1.0, 1.0], [-1.0, -1.0]], pad_id=tiny_lm.pad_token_id)
    # garbage in old log-probs and advantages off the mask must not change the loss
    noisy = type(batch)(
        batch.input_ids,
        batch.attention_mask,
        batch.completion_mask,
        torch.where(
            batch.completion_mask, batch.old_log_probs, torch.full_like(batch.old_log_probs, -50.0)
        ),
        torch.where(
            batch.completion_mask, batch.advantages, torch.full_like(batch.advantages, 9.0)
        ),
        prefix_ids=batch.prefix_ids,
    )
    first, _ = lm_grpo_loss(tiny_lm.model, batch, clip_eps=0.2)
    second, _ = lm_grpo_loss(tiny_lm.model, noisy, clip_eps=0.2)
    assert first.item() == pytest.approx(second.item(), abs=1e-6)


def test_zero_advantages_give_zero_gradient(tiny_lm: LanguageModel) -> None:
    batch = collate_traces(_traces(tiny_lm), [[0.0, 0.0], [0.0, 0.0]], pad_id=tiny_lm.pad_token_id)
    loss, _ = lm_grpo_loss(tiny_lm.model, batch, clip_eps=0.2)
    loss.backward()
    assert loss.item() == 0.0
    assert all(
        p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in tiny_lm.model.parameters()
    )


def _sequence_log_prob(lm: LanguageModel, trace: TokenTrace) -> float:
    with torch.no_grad():
        t = torch.tensor([trace.ids])
        mask = torch.tensor([trace.completion_mask])
        return float(token_log_probs(lm.model, t, torch.ones_like(t), mask).sum())


@pytest.mark.parametrize("lora", [False, True])
def test_an_update_moves_probability_toward_the_better_attempt(
    make_lm: object, suite: ToolUseSuite, lora: bool
) -> None:
    lm = make_lm(lora=lora)  # type: ignore[operator]
    traces = _traces(lm)
    before = [_sequence_log_prob(lm, t) for t in traces]
    learner = LMGRPO(
        SuiteChat(suite, lm),
        GRPOConfig(
            group_size=2,
            tasks_per_iteration=1,
            num_epochs=3,
            minibatch_size=2,
            learning_rate=1e-2 if lora else 3e-3,
            kl_coef=0.05,
        ),
        LMGRPOConfig(),
        num_iterations=1,
    )
    assert (learner.reference is None) == lora  # LoRA: adapters off; full: a frozen copy
    metrics = learner.update(traces, [[1.0, 1.0], [-1.0, -1.0]])
    after = [_sequence_log_prob(lm, t) for t in traces]
    assert metrics["train/updates"] == 3.0 and metrics["train/active_fraction"] == 1.0
    assert after[0] > before[0] + 0.05 and after[1] < before[1] - 0.05


def test_reference_is_built_only_with_kl(tiny_lm: LanguageModel, suite: ToolUseSuite) -> None:
    learner = LMGRPO(
        SuiteChat(suite, tiny_lm), GRPOConfig(kl_coef=0.0), LMGRPOConfig(), num_iterations=1
    )
    assert learner.reference is None


def test_train_iteration_records_episodes_with_tokens(
    tiny_lm: LanguageModel, suite: ToolUseSuite, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "e.db")
    recorder = Recorder(store)
    learner = LMGRPO(
        SuiteChat(suite, tiny_lm),
        GRPOConfig(group_size=4, tasks_per_iteration=2, num_epochs=1, minibatch_size=8),
        LMGRPOConfig(),
        num_iterations=1,
        recorder=recorder,
    )
    state = {k: v.clone() for k, v in tiny_lm.trainable_state().items()}
    metrics = learner.train_iteration(0)
    recorder.flush()
    episodes = store.query_episodes()
    assert len(episodes) == 8 and metrics["rollout/episodes"] == 8.0
    step = episodes[0].steps[0]
    assert step.completion_token_ids and len(step.completion_logprobs) == len(
        step.completion_token_ids
    )
    assert step.tool in suite.tools
    if metrics["train/active_fraction"] > 0:
        changed = any(not torch.equal(v, tiny_lm.trainable_state()[k]) for k, v in state.items())
        assert changed
    restored = LMGRPO(SuiteChat(suite, tiny_lm), learner.grpo, learner.config, num_iterations=1)
    restored.load_state_dict(learner.state_dict())
    assert restored.env_steps == learner.env_steps
    recorder.close()
    store.close()


def _learner(lm: LanguageModel, suite: ToolUseSuite, tasks: int, per_iteration: int) -> LMGRPO:
    return LMGRPO(
        SuiteChat(suite, lm),
        GRPOConfig(group_size=2, tasks_per_iteration=per_iteration, num_epochs=1, minibatch_size=4),
        LMGRPOConfig(),
        num_iterations=4,
        seed=3,
        tasks=suite.train_tasks[:tasks],
    )


def test_tasks_are_drawn_without_replacement_within_an_epoch(
    tiny_lm: LanguageModel, suite: ToolUseSuite
) -> None:
    learner = _learner(tiny_lm, suite, tasks=10, per_iteration=3)
    ids = [t.id for _ in range(10) for t in learner.draw_tasks(3)]  # 30 draws: 3 epochs
    everything = sorted(t.id for t in learner.tasks)
    epochs = [ids[0:10], ids[10:20], ids[20:30]]
    assert all(sorted(epoch) == everything for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) == 3  # reshuffled each epoch
    # more tasks per draw than tasks: the draw runs through whole epochs
    two = _learner(tiny_lm, suite, tasks=2, per_iteration=5)
    drawn = [t.id for t in two.draw_tasks(5)]
    assert sorted(drawn[:2]) == sorted(drawn[2:4]) == sorted(t.id for t in two.tasks)


def test_a_resumed_learner_draws_the_same_tasks(make_lm: object, suite: ToolUseSuite) -> None:
    first = _learner(make_lm(), suite, tasks=5, per_iteration=2)  # type: ignore[operator]
    first.train_iteration(0)
    first.train_iteration(1)  # 4 of the 5 tasks of the first epoch drawn
    state = copy.deepcopy(first.state_dict())
    # a killed run: a new process, a new model, the checkpoint loaded
    resumed = _learner(make_lm(seed=1), suite, tasks=5, per_iteration=2)  # type: ignore[operator]
    resumed.load_state_dict(state)
    for _ in range(3):  # across the epoch's end and into the next one
        ours, theirs = first.collect(), resumed.collect()
        assert [r.task.id for r in ours[0]] == [r.task.id for r in theirs[0]]
        assert [r.trace.ids for r in ours[0]] == [r.trace.ids for r in theirs[0]]
    assert first.task_order == resumed.task_order
    assert first.task_position == resumed.task_position


def test_a_checkpoint_without_a_task_order_starts_a_fresh_one(
    tiny_lm: LanguageModel, suite: ToolUseSuite, caplog: pytest.LogCaptureFixture
) -> None:
    learner = _learner(tiny_lm, suite, tasks=5, per_iteration=2)
    learner.draw_tasks(2)
    old = {k: v for k, v in learner.state_dict().items() if not k.startswith("task_")}
    restored = _learner(tiny_lm, suite, tasks=5, per_iteration=2)
    restored.load_state_dict(old)
    assert restored.task_order == [] and restored.task_position == 0
    assert sorted(t.id for _ in range(5) for t in restored.draw_tasks(1)) == sorted(
        t.id for t in restored.tasks
    )
    # an order for other tasks (the task list changed): a warning and a fresh order
    other = _learner(tiny_lm, suite, tasks=7, per_iteration=2)
    with caplog.at_level(logging.WARNING, logger="learnloop.train.lm.grpo_lm"):
        other.load_state_dict(learner.state_dict())
    assert other.task_order == [] and "fresh order" in caplog.text


def test_warm_start_on_the_stores_successes(
    tiny_lm: LanguageModel, suite: ToolUseSuite, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "e.db")
    recorder = Recorder(store)
    record_exploration(suite, recorder, 60, seed=0, policy="random")
    chat = SuiteChat(suite, tiny_lm)
    traces = successful_demonstrations(store, chat)
    assert traces and len(traces) < 60
    for trace in traces[:5]:
        masked = [t for t, m in zip(trace.ids, trace.completion_mask, strict=True) if m]
        names = tiny_lm.tokenizer.decode(masked).split("<|im_end|>")
        assert all(n in suite.tools for n in names if n)
    batch = collate_traces(traces[:8], None, pad_id=tiny_lm.pad_token_id)
    before = sft_loss(tiny_lm.model, batch).item()
    losses = warm_start(tiny_lm, traces, steps=15, learning_rate=3e-3, batch_size=8)
    assert len(losses) == 15
    assert sft_loss(tiny_lm.model, batch).item() < before - 1.0
    with pytest.raises(ConfigError, match="no successful episodes"):
        warm_start(tiny_lm, [], steps=1, learning_rate=1e-3, batch_size=1)
    recorder.close()
    store.close()
