"""Tool selection that learns: contexts, policies, the selector, off-policy evaluation.

>>> from learnloop.bandits import ToolSelector, make_policy
>>> selector = ToolSelector(make_policy("linear_thompson"), tools=["web_search", "code_grep"])
>>> choice = selector.choose("find papers about graph neural networks")
>>> selector.update(choice, 1.0)
"""

from __future__ import annotations

from learnloop.bandits.contexts import (
    Context,
    DenseFeaturizer,
    Featurizer,
    HashedTextConfig,
    HashedTextFeaturizer,
    KeywordFeaturizer,
    keyword_category,
)
from learnloop.bandits.linear import (
    DiagonalGaussianConfig,
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
from learnloop.bandits.selector import (
    POLICIES,
    Choice,
    SharedPolicyState,
    ToolSelector,
    make_policy,
    policy_from_dict,
)

__all__ = [
    "POLICIES",
    "UCB1",
    "BetaThompson",
    "BetaThompsonConfig",
    "Choice",
    "Context",
    "DenseFeaturizer",
    "DiagonalGaussianConfig",
    "EpsilonGreedyQ",
    "EpsilonGreedyQConfig",
    "Featurizer",
    "HashedTextConfig",
    "HashedTextFeaturizer",
    "KeywordFeaturizer",
    "LinUCB",
    "LinUCBConfig",
    "LinearThompson",
    "LinearThompsonConfig",
    "Policy",
    "SharedPolicyState",
    "SquareCB",
    "SquareCBConfig",
    "ToolSelector",
    "UCB1Config",
    "keyword_category",
    "make_policy",
    "policy_from_dict",
]
