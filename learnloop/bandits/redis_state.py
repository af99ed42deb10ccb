"""One policy shared by many agent replicas through Redis (extra ``redis``).

Every update runs as one Lua script inside Redis (EVALSHA: one round trip), so
concurrent replicas never lose one another's updates (a client-side
read-then-write loses a few percent under contention). Each script also refreshes
the TTL of the keys it touches (7 days by default): a policy nobody updates
expires on its own. Selection stays in-process: the script returns the new
statistics of the updated entry, the replica writes them into its local policy,
and :meth:`RedisPolicyState.pull` (called by ``ToolSelector.sync()``, e.g. when a
replica starts) copies everyone's updates in.

Numbers cross the wire packed as little-endian doubles (Redis' Lua ``struct``
library), which is exact and spares both sides formatting and parsing text.

What is stored, per policy kind:

* :class:`~learnloop.bandits.policies.EpsilonGreedyQ`: ``Q`` and count per (context,
  tool), and the shared epsilon (decayed once per update, by any replica);
* :class:`~learnloop.bandits.policies.UCB1` and
  :class:`~learnloop.bandits.policies.BetaThompson`: sums and counts per (context,
  tool), added with ``HINCRBYFLOAT`` (discounted in the same script when forgetting);
* :class:`~learnloop.bandits.linear.LinearThompson` and
  :class:`~learnloop.bandits.linear.SquareCB`: per tool and active feature, the
  posterior mean and variance (16 packed bytes), updated by the same ADF rule as
  in-process.

Keys (``{name}`` is a hash tag, so one policy's keys share a cluster slot):
``{prefix}:{name}:meta`` (hash: ``num_updates``, ``epsilon``),
``{prefix}:{name}:ctx:{context}`` (hash ``q:<tool>``, ``n:<tool>``, ... as text,
tabular), ``{prefix}:{name}:arm:{tool}`` (hash ``<feature index>`` -> packed
``(mean, variance)``, linear).
"""

from __future__ import annotations

import logging
import struct
import threading
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

# KEYS: context hash, meta hash. ARGV: tool, packed <7d (reward, alpha, q0, eps0, decay,
# eps_min, ttl). Returns packed <4d (q, n, epsilon, total updates).
_Q_SCRIPT = """
local ctx, meta, tool = KEYS[1], KEYS[2], ARGV[1]
local reward, alpha, q0, eps0, decay, eps_min, ttl = struct.unpack('<ddddddd', ARGV[2])
local field = 'q:' .. tool
local q = tonumber(redis.call('HGET', ctx, field) or q0)
q = q + alpha * (reward - q)
redis.call('HSET', ctx, field, string.format('%.17g', q))
local n = redis.call('HINCRBY', ctx, 'n:' .. tool, 1)
local eps = tonumber(redis.call('HGET', meta, 'epsilon') or eps0)
eps = math.max(eps_min, eps * decay)
redis.call('HSET', meta, 'epsilon', string.format('%.17g', eps))
local total = redis.call('HINCRBY', meta, 'num_updates', 1)
redis.call('EXPIRE', ctx, ttl)
redis.call('EXPIRE', meta, ttl)
return struct.pack('<dddd', q, n, eps, total)
"""

# KEYS: context hash, meta hash. ARGV: tool, field letters (e.g. 'sn'), packed
# <(2+k)d (discount, ttl, one increment per letter). Every field of the context decays
# first when discount < 1. Returns packed <(k+1)d (new values, total updates).
_SUM_SCRIPT = """
local ctx, meta, tool, letters = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local k = #letters
local numbers = {struct.unpack('<' .. string.rep('d', 2 + k), ARGV[3])}
local discount, ttl = numbers[1], numbers[2]
if discount < 1 then
  local all = redis.call('HGETALL', ctx)
  for i = 1, #all, 2 do
    redis.call('HSET', ctx, all[i], string.format('%.17g', tonumber(all[i + 1]) * discount))
  end
end
local out = {}
for i = 1, k do
  local field = string.sub(letters, i, i) .. ':' .. tool
  out[i] = tonumber(redis.call('HINCRBYFLOAT', ctx, field, string.format('%.17g', numbers[2 + i])))
end
out[k + 1] = redis.call('HINCRBY', meta, 'num_updates', 1)
redis.call('EXPIRE', ctx, ttl)
redis.call('EXPIRE', meta, ttl)
return struct.pack('<' .. string.rep('d', k + 1), unpack(out))
"""

# Diagonal Gaussian ADF update of one arm (learnloop.bandits.linear.DiagonalGaussianRegression).
# KEYS: arm hash, meta hash. ARGV: packed <6d (reward, m0, v0, noise, drift, ttl), packed
# features (n x <i4 indices, then n x <d values). Returns packed <d total, then n x <dd.
_DIAG_SCRIPT = """
local arm, meta = KEYS[1], KEYS[2]
local reward, m0, v0, noise, drift, ttl = struct.unpack('<dddddd', ARGV[1])
local blob = ARGV[2]
local n = #blob / 12
local packed = {struct.unpack('<' .. string.rep('i4', n) .. string.rep('d', n), blob)}
local fields, x = {}, {}
for j = 1, n do
  fields[j] = tostring(packed[j])
  x[j] = packed[n + j]
end
local stored = redis.call('HMGET', arm, unpack(fields))
local mu, var = {}, {}
local s2, pred = noise, 0
for j = 1, n do
  local m, v = m0, v0
  if stored[j] then m, v = struct.unpack('<dd', stored[j]) end
  if drift > 0 then v = math.min(v + drift, v0) end
  mu[j], var[j] = m, v
  s2 = s2 + x[j] * x[j] * v
  pred = pred + m * x[j]
end
local args, out = {}, {}
for j = 1, n do
  local gain = var[j] * x[j] / s2
  local value = struct.pack('<dd', mu[j] + gain * (reward - pred), var[j] * (1 - gain * x[j]))
  args[2 * j - 1], args[2 * j] = fields[j], value
  out[j] = value
end
redis.call('HSET', arm, unpack(args))
local total = redis.call('HINCRBY', meta, 'num_updates', 1)
redis.call('EXPIRE', arm, ttl)
redis.call('EXPIRE', meta, ttl)
return struct.pack('<d', total) .. table.concat(out)
"""


def connect_redis(url: str = "redis://127.0.0.1:6379/0") -> Any:
    """A redis-py client for ``url``; raises ImportError naming the extra if missing."""
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError(
            "the Redis policy state needs the 'redis' extra: "
            f"pip install 'learnloop[redis]' ({exc})"
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
        if not self.name or any(ch in self.name for ch in ":{}"):
            raise ConfigError(
                f"name must be non-empty without ':', '{{' or '}}', got {self.name!r}"
            )


class RedisPolicyState:
    """A :class:`~learnloop.bandits.selector.SharedPolicyState` kept in Redis.

    Updates go through one connection of the client's pool, held for this state's
    lifetime (redis-py's per-command pool checkout cost a third of the client's time
    per update), under a lock, so the state is thread-safe; :meth:`close` returns it.
    A connection error while sending is retried once on a fresh connection (the
    command never reached the server); one while reading the reply is raised, since
    the update may have been applied and must not be applied twice.

    Args:
        client: a redis-py client (see :func:`connect_redis`).
        config: name, key prefix and TTL.
    """

    def __init__(self, client: Any, config: RedisPolicyConfig | None = None) -> None:
        self.client = client
        self.config = config or RedisPolicyConfig()
        self._scripts = {
            name: client.script_load(source)
            for name, source in (("q", _Q_SCRIPT), ("sum", _SUM_SCRIPT), ("diag", _DIAG_SCRIPT))
        }
        self._lock = threading.Lock()
        self._meta_key = f"{self.base}:meta"
        self._connection: Any = None

    @property
    def base(self) -> str:
        return f"{self.config.prefix}:{{{self.config.name}}}"

    @property
    def meta_key(self) -> str:
        return self._meta_key

    def _ctx_key(self, context_key: str) -> str:
        return f"{self.base}:ctx:{context_key}"

    def _arm_key(self, tool: str) -> str:
        return f"{self.base}:arm:{tool}"

    def _call(self, *command: Any) -> Any:
        """Send one command on the held connection and read its reply (caller holds the lock)."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        if self._connection is None:
            self._connection = self.client.connection_pool.get_connection()
        connection = self._connection
        try:
            connection.send_command(*command)
        except (RedisConnectionError, RedisTimeoutError):
            connection.disconnect()
            connection.send_command(*command)  # reconnects
        try:
            return connection.read_response()
        except (RedisConnectionError, RedisTimeoutError):
            connection.disconnect()
            raise

    def _run(self, script: str, key: str, *args: Any) -> bytes:
        """EVALSHA ``script`` on (``key``, meta); reloads it once if the server lost it."""
        from redis.exceptions import NoScriptError

        try:
            reply = self._call("EVALSHA", self._scripts[script], 2, key, self._meta_key, *args)
        except NoScriptError:  # the server restarted or ran SCRIPT FLUSH
            source = {"q": _Q_SCRIPT, "sum": _SUM_SCRIPT, "diag": _DIAG_SCRIPT}[script]
            self._scripts[script] = self._call("SCRIPT", "LOAD", source).decode()
            reply = self._call("EVALSHA", self._scripts[script], 2, key, self._meta_key, *args)
        return reply  # type: ignore[no-any-return]

    def close(self) -> None:
        """Return the held connection to the client's pool (a later update takes one again)."""
        with self._lock:
            if self._connection is not None:
                self.client.connection_pool.release(self._connection)
                self._connection = None

    # --- updates --------------------------------------------------------------------------

    def apply(self, policy: Policy, context: Context, arm: int, tool: str, reward: float) -> None:
        """Update the shared state atomically and mirror the result into ``policy``."""
        ttl = float(self.config.ttl_s)
        with self._lock:
            if isinstance(policy, EpsilonGreedyQ):
                c = policy.config
                out = self._run(
                    "q",
                    self._ctx_key(context.key),
                    tool,
                    struct.pack(
                        "<7d",
                        reward,
                        c.alpha,
                        c.initial_q,
                        c.epsilon,
                        c.epsilon_decay,
                        c.epsilon_min,
                        ttl,
                    ),
                )
                q, n, eps, total = struct.unpack("<4d", out)
                policy.set_entry(context.key, arm, {"q": q, "n": n})
                policy.epsilon = eps
            elif isinstance(policy, UCB1):
                out = self._run(
                    "sum",
                    self._ctx_key(context.key),
                    tool,
                    "sn",
                    struct.pack("<4d", policy.config.discount, ttl, reward, 1.0),
                )
                s, n, total = struct.unpack("<3d", out)
                policy.set_entry(context.key, arm, {"s": s, "n": n})
            elif isinstance(policy, BetaThompson):
                r = min(max(reward, 0.0), 1.0)
                prior = policy.config
                out = self._run(
                    "sum",
                    self._ctx_key(context.key),
                    tool,
                    "abn",
                    struct.pack("<5d", prior.discount, ttl, r, 1.0 - r, 1.0),
                )
                a, b, n, total = struct.unpack("<4d", out)
                policy.set_entry(
                    context.key,
                    arm,
                    {"a": prior.prior_alpha + a, "b": prior.prior_beta + b, "n": n},
                )
            elif isinstance(policy, (LinearThompson, SquareCB)):
                m = policy.model.config
                features = (
                    context.indices.astype("<i4").tobytes() + context.values.astype("<f8").tobytes()
                )
                out = self._run(
                    "diag",
                    self._arm_key(tool),
                    struct.pack(
                        "<6d",
                        reward,
                        m.prior_mean,
                        m.prior_variance,
                        m.noise_variance,
                        m.drift,
                        ttl,
                    ),
                    features,
                )
                values = np.frombuffer(out, dtype="<f8")
                total = values[0]
                policy.model.mean.data[context.indices, arm] = values[1::2]
                policy.model.variance.data[context.indices, arm] = values[2::2]
            else:
                raise ConfigError(
                    f"policy {policy.name!r} cannot be shared through Redis; use epsilon_greedy, "
                    "ucb1, thompson, linear_thompson or squarecb"
                )
        policy.num_updates = int(total)

    # --- reading everything ------------------------------------------------------------------

    def pull(self, policy: Policy, tools: Sequence[str]) -> None:
        """Copy the whole shared state into ``policy`` (tools by the selector's order)."""
        arm_of = {tool: i for i, tool in enumerate(tools)}
        meta = {k.decode(): v.decode() for k, v in self.client.hgetall(self.meta_key).items()}
        if isinstance(policy, (LinearThompson, SquareCB)):
            for tool, arm in arm_of.items():
                stored = self.client.hgetall(self._arm_key(tool))
                if not stored:
                    continue
                indices = np.fromiter((int(f) for f in stored), dtype=np.intp, count=len(stored))
                pairs = np.frombuffer(b"".join(stored.values()), dtype="<f8").reshape(-1, 2)
                policy.model.mean.data[indices, arm] = pairs[:, 0]
                policy.model.variance.data[indices, arm] = pairs[:, 1]
        else:
            prefix = self._ctx_key("")
            for key in self.client.scan_iter(match=f"{self._glob_base}:ctx:*", count=1000):
                context_key = key.decode()[len(prefix) :]
                for field, value in self.client.hgetall(key).items():
                    name, _, tool = field.decode().partition(":")
                    if tool not in arm_of:
                        continue
                    number = float(value)
                    if isinstance(policy, BetaThompson) and name in ("a", "b"):
                        number += (
                            policy.config.prior_alpha if name == "a" else policy.config.prior_beta
                        )
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
        keys = list(self.client.scan_iter(match=f"{self._glob_base}:*", count=1000))
        return int(self.client.delete(*keys)) if keys else 0

    @property
    def _glob_base(self) -> str:
        # a SCAN pattern treats * ? [ ] and backslash specially; match them literally
        return "".join(f"\\{ch}" if ch in "[]*?\\" else ch for ch in self.base)
