"""One policy shared by many agent replicas through Redis (extra ``redis``).

Every update runs as a Lua script inside Redis, so concurrent replicas never lose
one another's updates (a client-side read-then-write loses a few percent under
contention). Each script also refreshes the TTL of the keys it touches (7 days by
default): a policy nobody updates expires on its own. Selection stays in-process:
the script returns the new statistics of the updated entry, the replica writes them
into its local policy, and :meth:`RedisPolicyState.pull` (called by
``ToolSelector.sync()``, e.g. when a replica starts) copies everyone's updates in.

What is stored, per policy kind:

* :class:`~learnloop.bandits.policies.EpsilonGreedyQ`: ``Q`` and count per (context,
  tool), and the shared epsilon (decayed once per update, by any replica);
* :class:`~learnloop.bandits.policies.UCB1` and
  :class:`~learnloop.bandits.policies.BetaThompson`: sums and counts per (context,
  tool), added with ``HINCRBYFLOAT`` (discounted in the same script when forgetting);
* :class:`~learnloop.bandits.linear.LinearThompson` and
  :class:`~learnloop.bandits.linear.SquareCB`: the per-tool posterior means and
  variances of the active features, updated by the same ADF rule as in-process.

Keys: ``{prefix}:{name}:meta`` (hash), ``{prefix}:{name}:ctx:{context}`` (hash,
tabular), ``{prefix}:{name}:arm:{tool}`` (hash, linear).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from learnloop.bandits.contexts import Context
from learnloop.bandits.linear import LinearThompson, SquareCB
from learnloop.bandits.policies import UCB1, BetaThompson, EpsilonGreedyQ, Policy
from learnloop.errors import ConfigError

__all__ = ["RedisPolicyConfig", "RedisPolicyState", "connect_redis"]

logger = logging.getLogger(__name__)

_Q_SCRIPT = """
local ctx, meta = KEYS[1], KEYS[2]
local tool, reward, alpha = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local q0, eps0, decay, eps_min, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local q = tonumber(redis.call('HGET', ctx, 'q:' .. tool) or q0)
q = q + alpha * (reward - q)
redis.call('HSET', ctx, 'q:' .. tool, string.format('%.17g', q))
local n = redis.call('HINCRBY', ctx, 'n:' .. tool, 1)
local eps = tonumber(redis.call('HGET', meta, 'epsilon') or eps0)
eps = math.max(eps_min, eps * decay)
redis.call('HSET', meta, 'epsilon', string.format('%.17g', eps))
local total = redis.call('HINCRBY', meta, 'num_updates', 1)
redis.call('EXPIRE', ctx, ttl)
redis.call('EXPIRE', meta, ttl)
return {string.format('%.17g', q), n, string.format('%.17g', eps), total}
"""

# Sums of increments per field; with discount < 1 every field of the context decays first.
_SUM_SCRIPT = """
local ctx, meta = KEYS[1], KEYS[2]
local tool, discount, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if discount < 1 then
  local all = redis.call('HGETALL', ctx)
  for i = 1, #all, 2 do
    redis.call('HSET', ctx, all[i], string.format('%.17g', tonumber(all[i + 1]) * discount))
  end
end
local out = {}
for i = 4, #ARGV, 2 do
  out[#out + 1] = redis.call('HINCRBYFLOAT', ctx, ARGV[i] .. ':' .. tool, ARGV[i + 1])
end
out[#out + 1] = redis.call('HINCRBY', meta, 'num_updates', 1)
redis.call('EXPIRE', ctx, ttl)
redis.call('EXPIRE', meta, ttl)
return out
"""

# Diagonal Gaussian ADF update of one arm (learnloop.bandits.linear.DiagonalGaussianRegression).
_DIAG_SCRIPT = """
local arm, meta = KEYS[1], KEYS[2]
local reward, m0, v0 = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local noise, drift, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local n = (#ARGV - 6) / 2
local fields = {}
for j = 1, n do
  fields[2 * j - 1] = 'm' .. ARGV[6 + j]
  fields[2 * j] = 'v' .. ARGV[6 + j]
end
local stored = redis.call('HMGET', arm, unpack(fields))
local mu, var, x = {}, {}, {}
local s2, pred = noise, 0
for j = 1, n do
  x[j] = tonumber(ARGV[6 + n + j])
  mu[j] = tonumber(stored[2 * j - 1] or m0)
  local v = tonumber(stored[2 * j] or v0)
  if drift > 0 then v = math.min(v + drift, v0) end
  var[j] = v
  s2 = s2 + x[j] * x[j] * v
  pred = pred + mu[j] * x[j]
end
local out, args = {}, {}
for j = 1, n do
  local gain = var[j] * x[j] / s2
  local m = mu[j] + gain * (reward - pred)
  local v = var[j] * (1 - gain * x[j])
  args[#args + 1] = fields[2 * j - 1]; args[#args + 1] = string.format('%.17g', m)
  args[#args + 1] = fields[2 * j]; args[#args + 1] = string.format('%.17g', v)
  out[2 * j - 1] = string.format('%.17g', m); out[2 * j] = string.format('%.17g', v)
end
redis.call('HSET', arm, unpack(args))
out[#out + 1] = redis.call('HINCRBY', meta, 'num_updates', 1)
redis.call('EXPIRE', arm, ttl)
redis.call('EXPIRE', meta, ttl)
return out
"""


def connect_redis(url: str = "redis://127.0.0.1:6379/0") -> Any:
    """A redis-py client for ``url``; raises ImportError naming the extra if missing."""
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError(
            f"the Redis policy state needs the 'redis' extra: pip install 'learnloop[redis]' ({exc})"
        ) from exc
    return redis.Redis.from_url(url)


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisPolicyConfig:
    """Where and how long a shared policy lives in Redis."""

    name: str = "default"
    """The policy's name (part of every key)."""
    prefix: str = "learnloop:bandit"
    """Key prefix."""
    ttl_s: int = 7 * 24 * 3600
    """Seconds a key lives after its last update (refreshed by every write)."""

    def __post_init__(self) -> None:
        if self.ttl_s < 1:
            raise ConfigError(f"ttl_s must be >= 1 second, got {self.ttl_s}; the default is 7 days")
        if not self.name or ":" in self.name:
            raise ConfigError(f"name must be non-empty without ':', got {self.name!r}")


class RedisPolicyState:
    """A :class:`~learnloop.bandits.selector.SharedPolicyState` kept in Redis.

    Args:
        client: a redis-py client (see :func:`connect_redis`).
        config: name, key prefix and TTL.
    """

    def __init__(self, client: Any, config: RedisPolicyConfig | None = None) -> None:
        self.client = client
        self.config = config or RedisPolicyConfig()
        self._q = client.register_script(_Q_SCRIPT)
        self._sum = client.register_script(_SUM_SCRIPT)
        self._diag = client.register_script(_DIAG_SCRIPT)

    @property
    def base(self) -> str:
        return f"{self.config.prefix}:{self.config.name}"

    @property
    def meta_key(self) -> str:
        return f"{self.base}:meta"

    def _ctx_key(self, context_key: str) -> str:
        return f"{self.base}:ctx:{context_key}"

    def _arm_key(self, tool: str) -> str:
        return f"{self.base}:arm:{tool}"

    # --- updates --------------------------------------------------------------------------

    def apply(self, policy: Policy, context: Context, arm: int, tool: str, reward: float) -> None:
        """Update the shared state atomically and mirror the result into ``policy``."""
        ttl = self.config.ttl_s
        keys = [self._ctx_key(context.key), self.meta_key]
        if isinstance(policy, EpsilonGreedyQ):
            c = policy.config
            q, n, eps, total = self._q(keys=keys, args=[tool, reward, c.alpha, c.initial_q, c.epsilon,
                                                         c.epsilon_decay, c.epsilon_min, ttl])
            policy.set_entry(context.key, arm, {"q": float(q), "n": float(n)})
            policy.epsilon = float(eps)
        elif isinstance(policy, UCB1):
            s, n, total = self._sum(keys=keys, args=[tool, policy.config.discount, ttl, "s", reward, "n", 1])
            policy.set_entry(context.key, arm, {"s": float(s), "n": float(n)})
        elif isinstance(policy, BetaThompson):
            r = min(max(reward, 0.0), 1.0)
            a, b, n, total = self._sum(
                keys=keys, args=[tool, policy.config.discount, ttl, "a", r, "b", 1.0 - r, "n", 1])
            c = policy.config
            policy.set_entry(context.key, arm,
                             {"a": c.prior_alpha + float(a), "b": c.prior_beta + float(b), "n": float(n)})
        elif isinstance(policy, (LinearThompson, SquareCB)):
            m = policy.model.config
            out = self._diag(
                keys=[self._arm_key(tool), self.meta_key],
                args=[reward, m.prior_mean, m.prior_variance, m.noise_variance, m.drift, ttl,
                      *context.indices.tolist(), *context.values.tolist()])
            values = np.asarray(out[:-1], dtype=np.float64)
            policy.model.mean.data[context.indices, arm] = values[0::2]
            policy.model.variance.data[context.indices, arm] = values[1::2]
            total = out[-1]
        else:
            raise ConfigError(
                f"policy {policy.name!r} cannot be shared through Redis; use epsilon_greedy, "
                "ucb1, thompson, linear_thompson or squarecb"
            )
        policy.num_updates = int(total)  # type: ignore[attr-defined]

    # --- reading everything ------------------------------------------------------------------

    def pull(self, policy: Policy, tools: Sequence[str]) -> None:
        """Copy the whole shared state into ``policy`` (tools by the selector's order)."""
        arm_of = {tool: i for i, tool in enumerate(tools)}
        meta = {k.decode(): v.decode() for k, v in self.client.hgetall(self.meta_key).items()}
        if isinstance(policy, (LinearThompson, SquareCB)):
            for tool, arm in arm_of.items():
                stored = self.client.hgetall(self._arm_key(tool))
                for field, value in stored.items():
                    name = field.decode()
                    target = policy.model.mean if name[0] == "m" else policy.model.variance
                    target.data[int(name[1:]), arm] = float(value)
        else:
            prefix = self._ctx_key("")
            for key in self.client.scan_iter(match=prefix + "*", count=1000):
                context_key = key.decode()[len(prefix):]
                for field, value in self.client.hgetall(key).items():
                    name, _, tool = field.decode().partition(":")
                    if tool not in arm_of:
                        continue
                    number = float(value)
                    if isinstance(policy, BetaThompson) and name in ("a", "b"):
                        number += policy.config.prior_alpha if name == "a" else policy.config.prior_beta
                    policy.set_entry(context_key, arm_of[tool], {name: number})  # type: ignore[attr-defined]
            if isinstance(policy, EpsilonGreedyQ) and "epsilon" in meta:
                policy.epsilon = float(meta["epsilon"])
        policy.num_updates = int(meta.get("num_updates", 0))  # type: ignore[attr-defined]

    def num_updates(self) -> int:
        """Total updates applied by all replicas."""
        value = self.client.hget(self.meta_key, "num_updates")
        return int(value) if value is not None else 0

    def clear(self) -> int:
        """Delete every key of this policy; returns how many were deleted."""
        keys = list(self.client.scan_iter(match=f"{self.base}:*", count=1000))
        return int(self.client.delete(*keys)) if keys else 0
