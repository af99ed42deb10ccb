"""Losses against values worked by hand."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from learnloop.errors import ConfigError  # noqa: E402
from learnloop.train.losses import (  # noqa: E402
    approx_kl,
    clip_fraction,
    clipped_surrogate_loss,
    entropy_loss,
    grpo_loss,
    kl_to_reference,
    normalize,
    value_loss,
)


def _log(values: list[float]) -> torch.Tensor:
    return torch.log(torch.tensor(values, dtype=torch.float64))


def test_clipped_surrogate_by_hand() -> None:
    # (ratio, A): (1.5, 1) -> min(1.5, 1.2) = 1.2 ; (0.5, 1) -> min(0.5, 0.8) = 0.5
    # (1.5, -1) -> min(-1.5, -1.2) = -1.5 ; (0.5, -1) -> min(-0.5, -0.8) = -0.8
    # (1.1, 2) -> 2.2 (inside the clip range). Mean = (1.2 + 0.5 - 1.5 - 0.8 + 2.2) / 5 = 0.32
    ratios = [1.5, 0.5, 1.5, 0.5, 1.1]
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 2.0], dtype=torch.float64)
    loss = clipped_surrogate_loss(
        _log(ratios), torch.zeros(5, dtype=torch.float64), adv, clip_eps=0.2
    )
    assert float(loss) == pytest.approx(-0.32)


def test_clipped_surrogate_gradient_vanishes_outside_clip_range() -> None:
    log_prob = _log([1.5]).requires_grad_(True)
    clipped_surrogate_loss(
        log_prob,
        torch.zeros(1, dtype=torch.float64),
        torch.ones(1, dtype=torch.float64),
        clip_eps=0.2,
    ).backward()
    assert log_prob.grad is not None and float(log_prob.grad[0]) == 0.0
    inside = _log([1.1]).requires_grad_(True)
    clipped_surrogate_loss(
        inside,
        torch.zeros(1, dtype=torch.float64),
        torch.ones(1, dtype=torch.float64),
        clip_eps=0.2,
    ).backward()
    # d/dlogp of -(exp(logp) * 1) = -1.1
    assert float(inside.grad[0]) == pytest.approx(-1.1)


def test_value_loss_plain_and_clipped() -> None:
    values = torch.tensor([1.0, 3.0])
    returns = torch.tensor([2.0, 1.0])
    # 0.5 * mean(1, 4) = 1.25
    assert float(value_loss(values, returns)) == pytest.approx(1.25)
    old = torch.tensor([0.0, 0.0])
    # clipped values: 0 + clip(1, -.5, .5) = 0.5 ; 0 + clip(3) = 0.5
    # squared: max(1, (0.5-2)^2=2.25) = 2.25 ; max(4, (0.5-1)^2=0.25) = 4 -> 0.5 * mean = 1.5625
    assert float(value_loss(values, returns, old_values=old, clip_value=0.5)) == pytest.approx(
        1.5625
    )
    with pytest.raises(ConfigError, match="old_values"):
        value_loss(values, returns, clip_value=0.5)


def test_entropy_loss_of_uniform_distribution() -> None:
    entropy = torch.full((3,), math.log(4))
    assert float(entropy_loss(entropy)) == pytest.approx(-math.log(4))


def test_approx_kl_and_clip_fraction_by_hand() -> None:
    log_prob = _log([2.0, 1.0])
    old = torch.zeros(2, dtype=torch.float64)
    # k3: (2 - 1 - ln 2) and 0 -> mean = (1 - ln 2) / 2
    assert float(approx_kl(log_prob, old)) == pytest.approx((1 - math.log(2)) / 2)
    assert float(clip_fraction(log_prob, old, clip_eps=0.2)) == pytest.approx(0.5)


def test_kl_to_reference_is_zero_at_equality_and_positive_otherwise() -> None:
    same = kl_to_reference(_log([0.3]), _log([0.3]))
    assert float(same[0]) == pytest.approx(0.0)
    # pi_ref/pi = 0.5 -> 0.5 - ln 0.5 - 1 = ln 2 - 0.5
    assert float(kl_to_reference(_log([0.4]), _log([0.2]))[0]) == pytest.approx(math.log(2) - 0.5)


def test_grpo_loss_by_hand_skips_zero_advantages() -> None:
    log_prob = _log([1.5, 1.0, 0.9])
    old = torch.zeros(3, dtype=torch.float64)
    adv = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    # active: (1.5, 1) -> 1.2 ; (0.9, -1) -> min(-0.9, -0.9) = -0.9 -> mean 0.15
    assert float(grpo_loss(log_prob, old, adv, clip_eps=0.2)) == pytest.approx(-0.15)


def test_grpo_loss_with_kl_by_hand() -> None:
    log_prob = _log([0.4])
    adv = torch.tensor([1.0], dtype=torch.float64)
    loss = grpo_loss(
        log_prob, log_prob.clone(), adv, clip_eps=0.2, ref_log_prob=_log([0.2]), kl_coef=0.1
    )
    assert float(loss) == pytest.approx(-(1.0 - 0.1 * (math.log(2) - 0.5)))
    with pytest.raises(ConfigError, match="ref_log_prob"):
        grpo_loss(log_prob, log_prob, adv, clip_eps=0.2, kl_coef=0.1)


def test_grpo_loss_zero_advantages_give_zero_gradient() -> None:
    policy_logits = torch.randn(4, 3, requires_grad=True)
    log_prob = torch.log_softmax(policy_logits, -1)[:, 0]
    loss = grpo_loss(
        log_prob,
        log_prob.detach(),
        torch.zeros(4),
        clip_eps=0.2,
        ref_log_prob=log_prob.detach() - 0.3,
        kl_coef=0.5,
    )
    loss.backward()
    assert loss.item() == 0.0
    assert policy_logits.grad is not None and torch.count_nonzero(policy_logits.grad) == 0


def test_normalize() -> None:
    out = normalize(torch.tensor([1.0, 3.0]))
    # std (unbiased) of [1, 3] = sqrt(2) -> (-1, 1) / sqrt(2)
    assert out.tolist() == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2)], rel=1e-6)
    assert normalize(torch.tensor([5.0])).tolist() == [0.0]
