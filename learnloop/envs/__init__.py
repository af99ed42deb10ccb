"""The built-in tool-use task suite, its Gymnasium environment and text features.

    >>> from learnloop.envs import ToolUseSuite, SuiteConfig
    >>> suite = ToolUseSuite(SuiteConfig(seed=0, num_tasks=100))
    >>> len(suite.tools) >= 12 and len(suite.task_types) >= 15
    True

Importing this package registers two Gymnasium ids (``gymnasium.make`` passes its
keyword arguments to :func:`~learnloop.envs.gym_env.make_tool_use_env`):

* ``learnloop/ToolUse-v0``: the suite with seed 0, train split by default;
* ``learnloop/ToolUseDegrading-v0``: the same suite where ``web_search`` and
  ``code_grep`` degrade to a success probability of at most 0.1 from the 2,000th
  tool call on (the non-stationary option).
"""

from __future__ import annotations

import gymnasium

from learnloop.envs.featurize import (
    KEYWORD_CATEGORIES,
    TextFeaturizer,
    featurize,
    keyword_category,
    tokenize,
)
from learnloop.envs.gym_env import MAX_SUBTASKS, EnvConfig, ToolUseEnv, make_tool_use_env
from learnloop.envs.suite import (
    MULTI_STEP,
    Split,
    SubTask,
    SuiteConfig,
    Task,
    ToolResult,
    ToolUseSuite,
)

__all__ = [
    "DEGRADING_ENV_ID",
    "ENV_ID",
    "KEYWORD_CATEGORIES",
    "MAX_SUBTASKS",
    "MULTI_STEP",
    "EnvConfig",
    "Split",
    "SubTask",
    "SuiteConfig",
    "Task",
    "TextFeaturizer",
    "ToolResult",
    "ToolUseEnv",
    "ToolUseSuite",
    "featurize",
    "keyword_category",
    "make_tool_use_env",
    "tokenize",
]

#: Gymnasium id of the stationary suite.
ENV_ID = "learnloop/ToolUse-v0"
#: Gymnasium id of the suite with tools that degrade mid-run.
DEGRADING_ENV_ID = "learnloop/ToolUseDegrading-v0"


def _register() -> None:
    """Register the suite's ids with Gymnasium once per process."""
    entry_point = "learnloop.envs.gym_env:make_tool_use_env"
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point=entry_point)
    if DEGRADING_ENV_ID not in gymnasium.registry:
        gymnasium.register(
            id=DEGRADING_ENV_ID,
            entry_point=entry_point,
            kwargs={
                "suite_config": SuiteConfig(
                    degrade_tools=("web_search", "code_grep"),
                    degrade_at=2000,
                    degraded_success=0.1,
                )
            },
        )


_register()
