"""Policies over discrete actions: the protocol the learners call, an MLP, a baseline.

A :class:`Policy` samples actions with their log-probabilities, scores given
actions (log-probability, entropy, value), and saves itself. Unavailable actions
(tools that cannot be called right now) are masked out: their probability is 0.

>>> import torch
>>> policy = MLPPolicy(obs_dim=3, num_actions=4, seed=0)
>>> out = policy.act(torch.zeros(2, 3), torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0]]))
>>> out.actions.tolist()[0], out.actions.tolist()[1] in (1, 2)
(0, True)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

try:
    import torch
    from torch import Tensor, nn
    from torch.nn import functional as F
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(f"{__name__} needs torch: pip install 'learnloop[train]' ({exc})") from exc

from learnloop.errors import ConfigError, InvalidInputError
from learnloop.train.config import PolicyConfig

__all__ = [
    "MASKED_LOGIT",
    "MLPPolicy",
    "Policy",
    "PolicyOutput",
    "RandomPolicy",
    "load_policy",
]

#: Logit given to unavailable actions: exp() underflows to exactly 0 in float32,
#: yet 0 * MASKED_LOGIT stays finite (unlike -inf), so entropies remain exact.
MASKED_LOGIT = -1e9


@dataclass(frozen=True, slots=True)
class PolicyOutput:
    """What :meth:`Policy.act` returns for a batch of B observations."""

    actions: Tensor
    """Chosen actions, int64, shape (B,)."""
    log_probs: Tensor
    """log pi(a|s) of the chosen actions, shape (B,)."""
    values: Tensor | None
    """V(s), shape (B,), or None without a value head."""


@runtime_checkable
class Policy(Protocol):
    """What the learners need from a policy over ``num_actions`` discrete actions."""

    num_actions: int

    def act(
        self,
        obs: Tensor,
        action_mask: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> PolicyOutput:
        """Sample (or, with ``greedy``, take the most likely) action for each row of ``obs``."""
        ...

    def evaluate_actions(
        self, obs: Tensor, actions: Tensor, action_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(log pi(a|s), entropy of pi(.|s), V(s) or None) for given actions, each (B,)."""
        ...

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the policy (its architecture and weights) to ``path``."""
        ...


def _masked_log_softmax(logits: Tensor, action_mask: Tensor | None) -> Tensor:
    if action_mask is not None:
        logits = logits.masked_fill(action_mask == 0, MASKED_LOGIT)
    return torch.log_softmax(logits, dim=-1)


def _choose(log_probs: Tensor, generator: torch.Generator | None, greedy: bool) -> Tensor:
    if greedy:
        return log_probs.argmax(dim=-1)
    return torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)


def _entropy(log_probs: Tensor) -> Tensor:
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def _run_mlp(net: nn.Sequential, x: Tensor) -> Tensor:
    """``net(x)`` through the functional ops, skipping ``nn.Module.__call__``.

    The module calls cost more than the arithmetic for one small batch (about half
    of an 8-row forward pass); forward hooks on the layers are not run. Used on
    the acting path only; training goes through the modules.
    """
    for layer in net:
        if isinstance(layer, nn.Linear):
            x = F.linear(x, layer.weight, layer.bias)
        elif isinstance(layer, nn.Tanh):
            x = torch.tanh(x)
        elif isinstance(layer, nn.ReLU):
            x = torch.relu(x)
        else:  # a layer this shortcut does not know: call it
            x = layer(x)
    return x


def _mlp(
    sizes: list[int],
    activation: type[nn.Module],
    out_gain: float,
    generator: torch.Generator | None,
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        linear = nn.Linear(sizes[i], sizes[i + 1])
        last = i == len(sizes) - 2
        # Orthogonal init, sqrt(2) for hidden layers, small for the policy head
        # (Andrychowicz et al. 2021, "What matters in on-policy RL", sec. 3.2).
        with torch.no_grad():
            nn.init.orthogonal_(
                linear.weight, gain=out_gain if last else 2**0.5, generator=generator
            )
            linear.bias.zero_()
        layers.append(linear)
        if not last:
            layers.append(activation())
    return nn.Sequential(*layers)


class MLPPolicy(nn.Module):
    """Actor-critic MLP over a flat float observation, with action masking.

    The actor and the critic are separate networks of ``config.hidden_sizes``;
    ``value_head=False`` drops the critic (GRPO needs none). With
    ``config.normalize_obs`` the policy keeps running mean and variance of the
    observations (updated by :meth:`update_obs_stats`, saved with the weights).
    """

    obs_mean: Tensor
    obs_var: Tensor
    obs_count: Tensor

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        config: PolicyConfig = PolicyConfig(),
        *,
        value_head: bool = True,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if obs_dim <= 0 or num_actions <= 0:
            raise ConfigError(
                f"MLPPolicy needs obs_dim > 0 and num_actions > 0, got {obs_dim} and "
                f"{num_actions}; check the environment's spaces"
            )
        self.obs_dim = int(obs_dim)
        self.num_actions = int(num_actions)
        self.config = config
        self.has_value_head = value_head
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        activation: type[nn.Module] = nn.Tanh if config.activation == "tanh" else nn.ReLU
        sizes = [self.obs_dim, *config.hidden_sizes]
        self.actor = _mlp([*sizes, self.num_actions], activation, 0.01, generator)
        self.critic = _mlp([*sizes, 1], activation, 1.0, generator) if value_head else None
        self.register_buffer("obs_mean", torch.zeros(self.obs_dim))
        self.register_buffer("obs_var", torch.ones(self.obs_dim))
        self.register_buffer("obs_count", torch.tensor(1e-4, dtype=torch.float64))

    # --- observations -------------------------------------------------------------

    def _prepare(self, obs: Tensor) -> Tensor:
        if obs.dim() != 2 or obs.shape[1] != self.obs_dim:
            raise InvalidInputError(
                f"MLPPolicy expects observations of shape (batch, {self.obs_dim}), got "
                f"{tuple(obs.shape)}; flatten them (learnloop.train.rollout.ObservationEncoder)"
            )
        obs = obs.float()
        if self.config.normalize_obs:
            obs = (obs - self.obs_mean) / torch.sqrt(self.obs_var + 1e-8)
            obs = obs.clamp(-10.0, 10.0)
        return obs

    @torch.no_grad()
    def update_obs_stats(self, obs: Tensor) -> None:
        """Merge a batch (B, obs_dim) into the running mean/variance (Chan et al. 1979)."""
        if not self.config.normalize_obs:
            return
        obs = obs.reshape(-1, self.obs_dim).double()
        batch_count = obs.shape[0]
        batch_mean, batch_var = obs.mean(0), obs.var(0, unbiased=False)
        count = self.obs_count
        delta = batch_mean - self.obs_mean.double()
        total = count + batch_count
        new_mean = self.obs_mean.double() + delta * batch_count / total
        m2 = self.obs_var.double() * count + batch_var * batch_count
        m2 = m2 + delta**2 * count * batch_count / total
        self.obs_mean.copy_(new_mean.float())
        self.obs_var.copy_((m2 / total).float())
        self.obs_count.copy_(total)

    # --- the protocol ---------------------------------------------------------------

    def forward(self, obs: Tensor, action_mask: Tensor | None = None) -> Tensor:
        """Masked log-probabilities of every action, shape (B, num_actions)."""
        return _masked_log_softmax(self.actor(self._prepare(obs)), action_mask)

    def predict_values(self, obs: Tensor) -> Tensor | None:
        """V(s), shape (B,), or None without a value head."""
        if self.critic is None:
            return None
        values: Tensor = self.critic(self._prepare(obs))
        return values.squeeze(-1)

    @torch.no_grad()
    def act(
        self,
        obs: Tensor,
        action_mask: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> PolicyOutput:
        prepared = self._prepare(obs)
        log_probs = _masked_log_softmax(_run_mlp(self.actor, prepared), action_mask)
        actions = _choose(log_probs, generator, greedy)
        values = None if self.critic is None else _run_mlp(self.critic, prepared).squeeze(-1)
        chosen = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        return PolicyOutput(actions=actions, log_probs=chosen, values=values)

    def evaluate_actions(
        self, obs: Tensor, actions: Tensor, action_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        prepared = self._prepare(obs)
        log_probs = _masked_log_softmax(self.actor(prepared), action_mask)
        chosen = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        values = self.critic(prepared).squeeze(-1) if self.critic is not None else None
        return chosen, _entropy(log_probs), values

    # --- persistence ----------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Architecture as plain data (enough to rebuild the module)."""
        return {
            "kind": "mlp",
            "obs_dim": self.obs_dim,
            "num_actions": self.num_actions,
            "value_head": self.has_value_head,
            "config": dataclasses.asdict(self.config),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        torch.save({"policy": self.describe(), "state_dict": self.state_dict()}, path)

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> MLPPolicy:
        if description.get("kind") != "mlp":
            raise InvalidInputError(
                f"not an MLP policy description: kind={description.get('kind')!r}"
            )
        config = dict(description["config"])
        config["hidden_sizes"] = tuple(config["hidden_sizes"])
        return cls(
            description["obs_dim"],
            description["num_actions"],
            PolicyConfig(**config),
            value_head=description["value_head"],
            seed=None,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MLPPolicy:
        """Rebuild a policy written by :meth:`save`."""
        data = torch.load(path, map_location="cpu", weights_only=True)
        policy = cls.from_description(data["policy"])
        policy.load_state_dict(data["state_dict"])
        return policy


def load_policy(path: str | os.PathLike[str]) -> MLPPolicy:
    """Load a policy saved with ``save`` (an MLP policy file or a training checkpoint)."""
    data = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(data, Mapping) or "policy" not in data:
        raise InvalidInputError(f"{os.fspath(path)!r} holds no policy; pass a policy or checkpoint")
    state = data["state_dict"] if "state_dict" in data else data["policy_state"]
    policy = MLPPolicy.from_description(data["policy"])
    policy.load_state_dict(state)
    return policy


class RandomPolicy:
    """The baseline: uniformly random among the available actions; no value head."""

    def __init__(self, num_actions: int) -> None:
        if num_actions <= 0:
            raise ConfigError(f"RandomPolicy needs num_actions > 0, got {num_actions}")
        self.num_actions = int(num_actions)

    def _log_probs(self, batch: int, action_mask: Tensor | None) -> Tensor:
        return _masked_log_softmax(torch.zeros(batch, self.num_actions), action_mask)

    def act(
        self,
        obs: Tensor,
        action_mask: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> PolicyOutput:
        # Greedy has no meaning for a uniform policy: it always samples.
        log_probs = self._log_probs(obs.shape[0], action_mask)
        actions = _choose(log_probs, generator, greedy=False)
        return PolicyOutput(
            actions=actions,
            log_probs=log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1),
            values=None,
        )

    def evaluate_actions(
        self, obs: Tensor, actions: Tensor, action_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        log_probs = self._log_probs(obs.shape[0], action_mask)
        chosen = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        return chosen, _entropy(log_probs), None

    def save(self, path: str | os.PathLike[str]) -> None:
        torch.save({"policy": {"kind": "random", "num_actions": self.num_actions}}, path)
