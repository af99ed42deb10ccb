"""Policy-gradient losses as pure functions of tensors.

Notation follows the papers: ``ratio`` is r_t(theta) = pi_theta(a_t|s_t) /
pi_theta_old(a_t|s_t), ``advantages`` is A_t, ``clip_eps`` is epsilon.
Every loss is a scalar to *minimize* (the objectives of the papers, negated).

>>> import torch
>>> loss = clipped_surrogate_loss(
...     torch.log(torch.tensor([1.5])), torch.zeros(1), torch.tensor([1.0]), clip_eps=0.2)
>>> round(float(loss), 6)  # min(1.5 * 1, 1.2 * 1) = 1.2, negated
-1.2
"""

from __future__ import annotations

try:
    import torch
    from torch import Tensor
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(f"{__name__} needs torch: pip install 'learnloop[train]' ({exc})") from exc

from learnloop.errors import ConfigError

__all__ = [
    "approx_kl",
    "clip_fraction",
    "clipped_surrogate_loss",
    "entropy_loss",
    "grpo_loss",
    "kl_to_reference",
    "normalize",
    "value_loss",
]


def clipped_surrogate_loss(
    log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, *, clip_eps: float
) -> Tensor:
    """PPO's clipped surrogate, negated (Schulman et al. 2017, eq. 7).

    L^CLIP = E_t[min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t)]; returns -L^CLIP.
    All arguments have the same shape (one entry per step).
    """
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return -torch.minimum(unclipped, clipped).mean()


def value_loss(
    values: Tensor,
    returns: Tensor,
    *,
    old_values: Tensor | None = None,
    clip_value: float | None = None,
) -> Tensor:
    """Squared-error value loss 0.5 E[(V(s_t) - R_t)^2] (Schulman et al. 2017, eq. 9).

    With ``clip_value`` (and ``old_values``), the pessimistic clipped form of the
    PPO reference implementation: 0.5 E[max((V - R)^2, (V_old + clip(V - V_old,
    -c, c) - R)^2)].
    """
    unclipped = (values - returns) ** 2
    if clip_value is None:
        return 0.5 * unclipped.mean()
    if old_values is None:
        raise ConfigError(
            "value_loss: clip_value needs old_values (the values at rollout time); pass them"
        )
    clipped_values = old_values + torch.clamp(values - old_values, -clip_value, clip_value)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped).mean()


def entropy_loss(entropy: Tensor) -> Tensor:
    """Negated mean entropy: adding ``c2 * entropy_loss`` is the bonus c2 S[pi](s_t) of eq. 9."""
    return -entropy.mean()


def approx_kl(log_prob: Tensor, old_log_prob: Tensor) -> Tensor:
    """KL(pi_old || pi) estimated from samples of pi_old: E[(r - 1) - log r].

    Schulman's "k3" estimator (http://joschu.net/blog/kl-approx.html): unbiased and
    never negative.
    """
    log_ratio = log_prob - old_log_prob
    return ((torch.exp(log_ratio) - 1.0) - log_ratio).mean()


def clip_fraction(log_prob: Tensor, old_log_prob: Tensor, *, clip_eps: float) -> Tensor:
    """Share of steps whose ratio lies outside [1 - eps, 1 + eps]."""
    ratio = torch.exp(log_prob - old_log_prob)
    return ((ratio - 1.0).abs() > clip_eps).float().mean()


def normalize(values: Tensor, eps: float = 1e-8) -> Tensor:
    """(x - mean) / (std + eps); a single element is returned centred (zero)."""
    if values.numel() < 2:
        return values - values.mean()
    return (values - values.mean()) / (values.std() + eps)


def kl_to_reference(log_prob: Tensor, ref_log_prob: Tensor) -> Tensor:
    """Per-step KL(pi_theta || pi_ref) estimate of GRPO (Shao et al. 2024, eq. 4).

    D_KL = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1, elementwise, >= 0.
    """
    log_ratio = ref_log_prob - log_prob
    return torch.exp(log_ratio) - log_ratio - 1.0


def grpo_loss(
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    *,
    clip_eps: float,
    ref_log_prob: Tensor | None = None,
    kl_coef: float = 0.0,
) -> Tensor:
    """GRPO's objective, negated (Shao et al. 2024, eq. 3), over steps with A != 0.

    J = mean over steps t with A_t != 0 of
    min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t) - beta D_KL[pi_theta || pi_ref].

    Steps whose advantage is exactly zero (e.g. a group whose attempts all scored
    the same) carry no signal and are left out entirely, so a batch of zero
    advantages gives a zero loss with zero gradient. ``ref_log_prob`` is needed
    only when ``kl_coef > 0``.
    """
    active = advantages != 0
    if not bool(active.any()):
        return (log_prob * 0.0).sum()
    log_prob, old_log_prob, adv = log_prob[active], old_log_prob[active], advantages[active]
    ratio = torch.exp(log_prob - old_log_prob)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
    if kl_coef > 0.0:
        if ref_log_prob is None:
            raise ConfigError(
                "grpo_loss: kl_coef > 0 needs ref_log_prob; pass the reference policy's"
            )
        surrogate = surrogate - kl_coef * kl_to_reference(log_prob, ref_log_prob[active])
    return -surrogate.mean()
