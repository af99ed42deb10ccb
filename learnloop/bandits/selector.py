"""The tool selector: featurize the task, let the policy choose, learn from the reward.

>>> from learnloop.bandits import ToolSelector, make_policy
>>> selector = ToolSelector(make_policy("epsilon_greedy"), tools=["grep", "http_get"], seed=0)
>>> choice = selector.choose("grep the logs for errors")
>>> choice.tool in {"grep", "http_get"}, choice.context.key, 0.0 < choice.propensity <= 1.0
(True, 'search', True)
>>> selector.update(choice, 1.0)
>>> selector.stats()["total_updates"]
1
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from learnloop.bandits.contexts import (
    Context,
    Featurizer,
    HashedTextFeaturizer,
    KeywordFeaturizer,
    keyword_category,
    make_featurizer,
)
from learnloop.bandits.linear import (
    LinearThompson,
    LinearThompsonConfig,
    LinUCB,
    LinUCBConfig,
    SquareCB,
    SquareCBConfig,
)
from learnloop.bandits.policies import (
    UCB1,
    BetaThompson,
    BetaThompsonConfig,
    EpsilonGreedyQ,
    EpsilonGreedyQConfig,
    Policy,
    UCB1Config,
)
from learnloop.episode import check_reward
from learnloop.errors import ConfigError, InvalidInputError, ToolError

__all__ = [
    "POLICIES",
    "Choice",
    "SharedPolicyState",
    "ToolSelector",
    "default_featurizer",
    "heldout_success",
    "make_policy",
    "policy_from_dict",
]

logger = logging.getLogger(__name__)

#: Policy names (CLI and config edge) -> classes.
POLICIES: Mapping[str, Any] = {
    "epsilon_greedy": EpsilonGreedyQ,
    "ucb1": UCB1,
    "thompson": BetaThompson,
    "linucb": LinUCB,
    "linear_thompson": LinearThompson,
    "squarecb": SquareCB,
}

_CONFIGS: Mapping[str, Any] = {
    "epsilon_greedy": EpsilonGreedyQConfig,
    "ucb1": UCB1Config,
    "thompson": BetaThompsonConfig,
    "linucb": LinUCBConfig,
    "linear_thompson": LinearThompsonConfig,
    "squarecb": SquareCBConfig,
}

#: The spec's learner by its long name.
_ALIASES = {"epsilon_greedy_keyword": "epsilon_greedy"}

_CONTEXTUAL = {"linucb", "linear_thompson", "squarecb"}


def default_featurizer(policy_name: str) -> Featurizer:
    """Keyword categories for the tabular policies, hashed text for the contextual ones."""
    name = _ALIASES.get(policy_name, policy_name)
    return HashedTextFeaturizer() if name in _CONTEXTUAL else KeywordFeaturizer()


def make_policy(name: str, *, dim: int = 1024, seed: int = 0, **config: Any) -> Policy:
    """A policy by name with default config (or ``config`` fields), for the CLI edge.

    ``dim`` is the feature dimension of contextual policies (match the featurizer).
    """
    key = _ALIASES.get(name, name)
    if key not in POLICIES:
        raise ConfigError(
            f"unknown policy {name!r}; choose one of {sorted({*POLICIES, *_ALIASES})}"
        )
    cls = POLICIES[key]
    cfg = _CONFIGS[key](**config)
    if key in _CONTEXTUAL:
        return cls(dim, cfg)  # type: ignore[no-any-return]
    if key == "thompson":
        return cls(cfg, seed=seed)  # type: ignore[no-any-return]
    return cls(cfg)  # type: ignore[no-any-return]


def policy_from_dict(data: Mapping[str, Any]) -> Policy:
    """Rebuild any shipped policy from its ``to_dict()``."""
    name = str(data.get("policy"))
    if name not in POLICIES:
        raise InvalidInputError(
            f"unknown policy {name!r} in saved state; expected one of {sorted(POLICIES)}"
        )
    return POLICIES[name].from_dict(data)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True, eq=False)
class Choice:
    """One decision of a :class:`ToolSelector`."""

    tool: str
    """The chosen tool."""
    context: Context
    """What the policy saw (key, sparse features, task text)."""
    propensity: float
    """Probability with which the policy chose this tool among ``candidates``."""
    policy_version: str
    """Which policy state made the choice: ``"<name>:<number of updates>"``."""
    candidates: tuple[str, ...]
    """The tools the choice was made among."""
    arm: int
    """The tool's arm index in the selector."""

    def log_state(self) -> dict[str, Any]:
        """What to record in the step's ``state`` for off-policy evaluation."""
        return {
            "context": self.context.key,
            "features": self.context.to_dict(),
            "propensity": self.propensity,
            "policy_version": self.policy_version,
            "candidates": list(self.candidates),
        }


class SharedPolicyState(Protocol):
    """Learned state shared by many selector replicas (e.g. Redis).

    ``apply`` performs one update atomically where the state lives and mirrors the
    new statistics of that entry into the local ``policy``; ``pull`` copies the
    whole shared state into the local policy.
    """

    def apply(
        self, policy: Policy, context: Context, arm: int, tool: str, reward: float
    ) -> None: ...

    def pull(self, policy: Policy, tools: Sequence[str]) -> None: ...


class ToolSelector:
    """Chooses a tool for a task with a :class:`Policy` and learns from rewards.

    Args:
        policy: the learner (see :func:`make_policy`).
        featurizer: task text -> context; by default keyword categories for tabular
            policies and 1024-bucket hashed text for contextual ones.
        tools: the initial tools; more can be added with :meth:`add_tool` (cold start).
        seed: seed of the exploration random generator.
        name: the policy's name in stores and logs.
        shared: optional shared state (Redis) for many replicas.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        featurizer: Featurizer | None = None,
        tools: Sequence[str] = (),
        seed: int = 0,
        name: str | None = None,
        shared: SharedPolicyState | None = None,
    ) -> None:
        self.policy = policy
        self.featurizer = featurizer or default_featurizer(policy.name)
        if hasattr(policy, "dim") and policy.dim != self.featurizer.dim:
            raise ConfigError(
                f"policy {policy.name!r} has dim {policy.dim} but the featurizer has dim "
                f"{self.featurizer.dim}; build the policy with "
                f"make_policy(..., dim={self.featurizer.dim})"
            )
        self.name = name or policy.name
        self.shared = shared
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._tools: list[str] = []
        self._arm_of: dict[str, int] = {}
        self._all_arms = np.zeros(0, dtype=np.intp)
        # per (keyword category, arm): [count, reward sum], for stats only
        self._stats: dict[str, np.ndarray] = {}
        for tool in tools:
            self.add_tool(tool)

    # --- tools ----------------------------------------------------------------------------

    @property
    def tools(self) -> tuple[str, ...]:
        return tuple(self._tools)

    def add_tool(self, tool: str) -> None:
        """Register a tool (no-op if known). A new tool starts at the policy's prior."""
        if not isinstance(tool, str) or not tool:
            raise ToolError(f"a tool name must be a non-empty string, got {tool!r}")
        with self._lock:
            if tool in self._arm_of:
                return
            self._arm_of[tool] = len(self._tools)
            self._tools.append(tool)
            self._all_arms = np.arange(len(self._tools), dtype=np.intp)
            self.policy.add_arms(len(self._tools))

    def _arms(self, tools: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
        if tools is None:
            if not self._tools:
                raise ToolError("no tools registered; call add_tool(name) first")
            return self._all_arms, self.tools
        names = tuple(tools)
        if not names:
            raise ToolError("tools is empty; pass at least one candidate tool or None for all")
        try:
            arms = np.fromiter((self._arm_of[t] for t in names), dtype=np.intp, count=len(names))
        except KeyError as exc:
            raise ToolError(
                f"unknown tool {exc.args[0]!r}; register it with add_tool() first "
                f"(known: {self._tools})"
            ) from None
        return arms, names

    # --- choosing and learning --------------------------------------------------------------

    @property
    def num_updates(self) -> int:
        return int(self.policy.num_updates)  # type: ignore[attr-defined]

    @property
    def policy_version(self) -> str:
        return f"{self.name}:{self.num_updates}"

    def context(self, task: str) -> Context:
        """The context the policy sees for ``task``."""
        return self.featurizer(task)

    def choose(self, task: str, tools: Sequence[str] | None = None) -> Choice:
        """Choose a tool for ``task`` among ``tools`` (default: all registered)."""
        context = self.featurizer(task)
        with self._lock:
            arms, names = self._arms(tools)
            position, propensity = self.policy.select(context, arms, self._rng)
            version = f"{self.name}:{self.policy.num_updates}"  # type: ignore[attr-defined]
        return Choice(
            tool=names[position],
            context=context,
            propensity=propensity,
            policy_version=version,
            candidates=names,
            arm=int(arms[position]),
        )

    def update(self, choice: Choice, reward: float) -> None:
        """Learn from ``reward`` for ``choice`` (shared state first when configured)."""
        reward = check_reward(reward, "bandit reward")
        with self._lock:
            if self._arm_of.get(choice.tool) != choice.arm:
                raise InvalidInputError(
                    f"choice of tool {choice.tool!r} was not made by this selector "
                    f"(arm {choice.arm}); update the selector that chose it"
                )
            if self.shared is not None:
                self.shared.apply(self.policy, choice.context, choice.arm, choice.tool, reward)
            else:
                self.policy.update(choice.context, choice.arm, reward)
            category = keyword_category(choice.context.text)
            row = self._stats.get(category)
            if row is None or row.shape[1] < len(self._tools):
                grown = np.zeros((2, len(self._tools)))
                if row is not None:
                    grown[:, : row.shape[1]] = row
                row = self._stats[category] = grown
            row[0, choice.arm] += 1.0
            row[1, choice.arm] += reward

    def sync(self) -> None:
        """Copy the shared state (if any) into the local policy (a restarted replica calls this)."""
        if self.shared is not None:
            with self._lock:
                self.shared.pull(self.policy, self.tools)

    def values(self, task: str, tools: Sequence[str] | None = None) -> dict[str, float]:
        """The policy's current reward estimate of each tool for ``task``."""
        context = self.featurizer(task)
        with self._lock:
            arms, names = self._arms(tools)
            estimates = self.policy.values(context, arms)
        return {name: float(v) for name, v in zip(names, estimates, strict=True)}

    def probabilities(self, task: str, tools: Sequence[str] | None = None) -> dict[str, float]:
        """The probability the policy would choose each tool for ``task`` now."""
        context = self.featurizer(task)
        with self._lock:
            arms, names = self._arms(tools)
            p = self.policy.probabilities(context, arms)
        return {name: float(v) for name, v in zip(names, p, strict=True)}

    # --- statistics and export ----------------------------------------------------------------

    def stats(self, top_k: int = 3) -> dict[str, Any]:
        """Total updates; counts, mean reward and top tools per keyword category; epsilon."""
        with self._lock:
            per_context: dict[str, Any] = {}
            for category, row in sorted(self._stats.items()):
                counts = {
                    t: int(row[0, i])
                    for i, t in enumerate(self._tools[: row.shape[1]])
                    if row[0, i]
                }
                means = {
                    t: float(row[1, i] / row[0, i])
                    for i, t in enumerate(self._tools[: row.shape[1]])
                    if row[0, i]
                }
                top = sorted(means, key=lambda t: (-means[t], -counts[t], t))[:top_k]
                per_context[category] = {"counts": counts, "mean_reward": means, "top_tools": top}
            return {
                "policy": self.policy.name,
                "name": self.name,
                "policy_version": self.policy_version,
                "total_updates": self.num_updates,
                "tools": list(self._tools),
                "epsilon": getattr(self.policy, "epsilon", None),
                "contexts": per_context,
            }

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this selector (JSON-safe)."""
        with self._lock:
            featurizer = getattr(self.featurizer, "to_dict", None)
            return {
                "format": "learnloop.bandit_policy/1",
                "name": self.name,
                "seed": self.seed,
                "tools": list(self._tools),
                "featurizer": featurizer() if featurizer else None,
                "policy": self.policy.to_dict(),
                "stats": {k: v.tolist() for k, v in self._stats.items()},
            }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        featurizer: Featurizer | None = None,
        shared: SharedPolicyState | None = None,
    ) -> ToolSelector:
        """Rebuild a selector from :meth:`to_dict` (pass ``featurizer`` for a dense one)."""
        if data.get("format") != "learnloop.bandit_policy/1":
            raise InvalidInputError(
                f"not a learnloop bandit policy (format {data.get('format')!r}); expected "
                "'learnloop.bandit_policy/1' as written by ToolSelector.to_dict"
            )
        policy = policy_from_dict(data["policy"])
        if featurizer is None:
            spec = data.get("featurizer")
            featurizer = make_featurizer(spec) if spec else default_featurizer(policy.name)
        selector = cls(
            policy,
            featurizer=featurizer,
            tools=data.get("tools", ()),
            seed=int(data.get("seed", 0)),
            name=data.get("name"),
            shared=shared,
        )
        for key, rows in data.get("stats", {}).items():
            selector._stats[key] = np.asarray(rows, dtype=np.float64)
        return selector


def heldout_success(selector: Any, suite: Any) -> float:
    """Expected success on the suite's held-out split: the mean over held-out sub-tasks
    of sum_a pi(a|x) p(x, a), with the policy's choice probabilities pi and the suite's
    true success probabilities p (no sampling noise)."""
    total, count = 0.0, 0
    for task in suite.heldout_tasks:
        for sub in task.subtasks:
            probabilities = selector.probabilities(sub.text)
            total += sum(
                p * suite.success_probability(sub, tool) for tool, p in probabilities.items()
            )
            count += 1
    return total / max(count, 1)
