"""The built-in tool-use task suite: tasks generated from a seed, tools that succeed stochastically.

:class:`ToolUseSuite` builds, from :class:`SuiteConfig` and its seed alone:

* the ground truth: for every (task type, tool) a success probability (best tool
  0.85-0.95, a plausible second 0.4-0.6, the others 0.02-0.2) and a mean latency;
* a train / held-out split of :class:`Task` s (held-out 20% by default). Each task
  type's phrasings are split so that some are used by held-out tasks only, and each
  vocabulary (file names, topics, URLs, ...) is split so that held-out tasks use
  slot values never seen in training: no held-out text occurs in the train split;
* single-step tasks (one :class:`SubTask`) next to multi-step ones (2-4 sub-tasks
  in a chain such as find → read → transform → write; one tool decision each).

A task succeeds when every sub-task's tool call succeeded. :meth:`ToolUseSuite.execute`
draws one call's outcome, latency and JSON output with a generator you pass in.

Non-stationary option: with ``SuiteConfig(degrade_tools=("web_search",),
degrade_at=500, degraded_success=0.1)`` the listed tools succeed with probability
at most 0.1 at every decision whose index (the ``decision_index`` argument of
:meth:`~ToolUseSuite.execute` and :meth:`~ToolUseSuite.success_probability`; the
count of tool calls made so far) is ``>= 500``. Without a decision index the suite
answers for the stationary start.

    >>> suite = ToolUseSuite(SuiteConfig(seed=0, num_tasks=200))
    >>> len(suite.tools), len(suite.task_types), len(suite.train_tasks), len(suite.heldout_tasks)
    (14, 19, 160, 40)
    >>> sub = suite.train_tasks[0].subtasks[0]
    >>> result = suite.execute(sub, sub.best_tool, np.random.default_rng(0))
    >>> isinstance(result.success, bool) and result.duration_s > 0
    True
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from learnloop.envs.catalog import (
    CHAIN_CONNECTORS,
    CHAINS,
    SLOT_VOCABULARY,
    TASK_TYPES,
    TOOLS,
    VOCABULARIES,
    TaskTypeSpec,
)
from learnloop.envs.featurize import TextFeaturizer
from learnloop.envs.outputs import QUALITY_CHECKS, tool_output
from learnloop.errors import ConfigError, ToolError

__all__ = [
    "MULTI_STEP",
    "Split",
    "SubTask",
    "SuiteConfig",
    "Task",
    "ToolResult",
    "ToolUseSuite",
]

Split = Literal["train", "heldout"]

#: ``Task.task_type`` of a multi-step task (its sub-tasks carry the real types).
MULTI_STEP = "multi_step"

_SLOT = re.compile(r"\{(\w+)\}")
_MAX_ATTEMPTS = 200


#: Texts whose features ToolUseSuite.featurize keeps (the suite has a few thousand).
_FEATURE_CACHE_SIZE = 100_000


def _check_range(name: str, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if not 0.0 <= low <= high <= 1.0:
        raise ConfigError(
            f"{name} must be (low, high) with 0 <= low <= high <= 1, got {bounds!r}; "
            "e.g. (0.85, 0.95)"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SuiteConfig:
    """How the suite is generated; the same config always gives the same suite."""

    seed: int = 0
    """Seed of everything: probabilities, latencies, the split and the task texts."""
    num_tasks: int = 1000
    """Number of tasks over both splits."""
    heldout_fraction: float = 0.2
    """Share of the tasks in the held-out split."""
    multi_step_fraction: float = 0.3
    """Share of the tasks that chain 2-4 sub-tasks."""
    heldout_template_fraction: float = 0.25
    """Share of each task type's phrasings used by held-out tasks only (at least one)."""
    heldout_value_fraction: float = 0.2
    """Share of each slot vocabulary used by held-out tasks only (at least one value)."""
    best_success: tuple[float, float] = (0.85, 0.95)
    """Range of the best tool's success probability for a task type."""
    second_success: tuple[float, float] = (0.4, 0.6)
    """Range of the second-best tool's success probability."""
    other_success: tuple[float, float] = (0.02, 0.2)
    """Range of every other tool's success probability."""
    latency_spread: tuple[float, float] = (0.7, 1.4)
    """Range of the factor on a tool's mean latency for one task type."""
    latency_sigma: float = 0.5
    """Standard deviation of the log of a call's latency (lognormal around the mean)."""
    feature_dim: int = 1024
    """Length of the hashed text features (:meth:`ToolUseSuite.featurize`)."""
    degrade_tools: tuple[str, ...] = ()
    """Tools that degrade mid-run (non-stationary option); empty for none."""
    degrade_at: int | None = None
    """Decision index from which the tools in ``degrade_tools`` degrade."""
    degraded_success: float = 0.1
    """Success probability cap of a degraded tool."""

    def __post_init__(self) -> None:
        if self.num_tasks < 10:
            raise ConfigError(f"num_tasks must be >= 10, got {self.num_tasks!r}")
        for name in (
            "heldout_fraction",
            "multi_step_fraction",
            "heldout_template_fraction",
            "heldout_value_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must lie in [0, 1), got {value!r}; e.g. 0.2")
        if not 0.0 < self.heldout_fraction:
            raise ConfigError("heldout_fraction must be > 0 so held-out success can be reported")
        for name in ("best_success", "second_success", "other_success"):
            _check_range(name, getattr(self, name))
        low, high = self.latency_spread
        if not 0.0 < low <= high:
            raise ConfigError(
                f"latency_spread must be (low, high) with 0 < low <= high, got "
                f"{self.latency_spread!r}; e.g. (0.7, 1.4)"
            )
        if self.latency_sigma < 0:
            raise ConfigError(f"latency_sigma must be >= 0, got {self.latency_sigma!r}")
        if self.feature_dim < 8:
            raise ConfigError(f"feature_dim must be >= 8, got {self.feature_dim!r}; e.g. 1024")
        known = {tool.name for tool in TOOLS}
        unknown = [tool for tool in self.degrade_tools if tool not in known]
        if unknown:
            raise ConfigError(
                f"degrade_tools names unknown tools {unknown!r}; choose from {sorted(known)}"
            )
        if self.degrade_tools and self.degrade_at is None:
            raise ConfigError(
                f"degrade_tools={self.degrade_tools!r} needs degrade_at (the decision index "
                "from which they degrade), e.g. degrade_at=500"
            )
        if self.degrade_at is not None and self.degrade_at < 0:
            raise ConfigError(f"degrade_at must be >= 0, got {self.degrade_at!r}")
        if not 0.0 <= self.degraded_success <= 1.0:
            raise ConfigError(
                f"degraded_success must lie in [0, 1], got {self.degraded_success!r}; e.g. 0.1"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class SubTask:
    """One tool decision of a task."""

    text: str
    """What to do, in words (a whole sentence, or one clause of a multi-step task)."""
    task_type: str
    """The sub-task's type, one of ``ToolUseSuite.task_types``."""
    best_tool: str
    """The tool with the highest success probability for this type (before degradation)."""
    template_id: str = ""
    """Which phrasing produced the text, ``"<task_type>/<n>"``."""
    slots: tuple[tuple[str, str], ...] = ()
    """The slot values filled into the phrasing, as ``(name, value)`` pairs."""

    @property
    def slot_values(self) -> Mapping[str, str]:
        """The slots as a mapping."""
        return dict(self.slots)


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """One task of the suite: a text and the sub-tasks (tool decisions) it needs."""

    id: str
    """Stable identifier, ``"s<seed>-<split>-<n>"``."""
    text: str
    """The task as the agent reads it."""
    task_type: str
    """The type of a single-step task, or :data:`MULTI_STEP`."""
    subtasks: tuple[SubTask, ...]
    """The tool decisions, in order; a single-step task has one."""
    split: Split = "train"
    """Which split the task belongs to."""

    @property
    def is_multi_step(self) -> bool:
        """Whether the task chains more than one sub-task."""
        return len(self.subtasks) > 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    """What one tool call returned."""

    success: bool
    """Whether the call succeeded."""
    duration_s: float
    """Simulated latency of the call in seconds."""
    output: Any
    """The tool's JSON output (an empty or error-shaped value when it failed)."""
    error: str | None = None
    """Why the call failed; None on success."""
    probability: float = field(default=float("nan"), repr=False)
    """The success probability the outcome was drawn with (ground truth, for analysis)."""


class ToolUseSuite:
    """The seeded tool-use suite (see the module docstring).

    Args:
        config: How to generate the suite; ``SuiteConfig()`` by default.
    """

    def __init__(self, config: SuiteConfig | None = None) -> None:
        self.config = config if config is not None else SuiteConfig()
        self.tools: tuple[str, ...] = tuple(tool.name for tool in TOOLS)
        self.task_types: tuple[str, ...] = tuple(spec.name for spec in TASK_TYPES)
        self.tool_descriptions: Mapping[str, str] = MappingProxyType(
            {tool.name: tool.description for tool in TOOLS}
        )
        self._tool_index = {tool: i for i, tool in enumerate(self.tools)}
        self._type_index = {name: i for i, name in enumerate(self.task_types)}
        self._specs = {spec.name: spec for spec in TASK_TYPES}
        self._mean_duration = np.array([tool.expected_duration_s for tool in TOOLS])
        self._featurizer = TextFeaturizer(self.config.feature_dim)
        self._feature_cache: dict[str, np.ndarray] = {}
        # id(subtask) -> (subtask, its slots as a dict) for execute; the subtask is
        # kept so that a recycled id is never mistaken for it.
        self._slot_cache: dict[int, tuple[SubTask, dict[str, str]]] = {}

        rng = np.random.default_rng(self.config.seed)
        self._success = self._draw_success(rng)
        self._duration = self._mean_duration[None, :] * rng.uniform(
            *self.config.latency_spread, size=self._success.shape
        )
        self._success.setflags(write=False)
        self._duration.setflags(write=False)
        # The same numbers as Python floats: execute reads one per call, and indexing
        # nested lists costs a fraction of indexing a 2-d array.
        self._success_rows: list[list[float]] = self._success.tolist()
        self._duration_rows: list[list[float]] = self._duration.tolist()
        self._heldout_templates = self._split_templates(rng)
        self._heldout_values = self._split_values(rng)
        self.train_tasks, self.heldout_tasks = self._generate_tasks(rng)

    # --- ground truth ------------------------------------------------------------

    def _draw_success(self, rng: np.random.Generator) -> np.ndarray:
        config = self.config
        success = rng.uniform(*config.other_success, size=(len(TASK_TYPES), len(TOOLS)))
        for row, spec in enumerate(TASK_TYPES):
            success[row, self._tool_index[spec.best_tool]] = rng.uniform(*config.best_success)
            success[row, self._tool_index[spec.second_tool]] = rng.uniform(*config.second_success)
        return success

    @property
    def feature_dim(self) -> int:
        """Length of :meth:`featurize`'s vectors."""
        return self.config.feature_dim

    @property
    def quality_checks(self) -> Mapping[str, Callable[[Any], bool]]:
        """tool -> predicate on the tool's output (True when the output is usable)."""
        return QUALITY_CHECKS

    def tool_index(self, tool: str) -> int:
        """Position of ``tool`` in :attr:`tools` (the env's action)."""
        try:
            return self._tool_index[tool]
        except KeyError:
            raise ToolError(
                f"unknown tool {tool!r}; the suite's tools are {list(self.tools)}"
            ) from None

    def _type_row(self, task_type: str) -> int:
        try:
            return self._type_index[task_type]
        except KeyError:
            raise ConfigError(
                f"unknown task type {task_type!r}; the suite's types are {list(self.task_types)}"
            ) from None

    def is_degraded(self, tool: str, decision_index: int | None) -> bool:
        """Whether ``tool`` is degraded at decision ``decision_index``."""
        at = self.config.degrade_at
        return (
            decision_index is not None
            and at is not None
            and decision_index >= at
            and tool in self.config.degrade_tools
        )

    def success_matrix(self, decision_index: int | None = None) -> np.ndarray:
        """Success probabilities, shape ``(len(task_types), len(tools))``, at a decision.

        A fresh array; rows follow :attr:`task_types`, columns :attr:`tools`.
        """
        matrix = self._success.copy()
        for tool in self.config.degrade_tools:
            if self.is_degraded(tool, decision_index):
                column = self._tool_index[tool]
                matrix[:, column] = np.minimum(matrix[:, column], self.config.degraded_success)
        return matrix

    def success_probability(
        self, subtask: SubTask, tool: str, decision_index: int | None = None
    ) -> float:
        """Probability that ``tool`` succeeds on ``subtask`` (ground truth, for regret).

        Args:
            subtask: The decision's sub-task.
            tool: A tool of the suite.
            decision_index: Index of the decision in the run, for degradation; None
                answers for the start of the run.
        """
        probability = float(self._success[self._type_row(subtask.task_type), self.tool_index(tool)])
        if self.is_degraded(tool, decision_index):
            probability = min(probability, self.config.degraded_success)
        return probability

    def best_tool(self, task_type: str, decision_index: int | None = None) -> str:
        """The tool most likely to succeed on ``task_type`` at a decision (the oracle's pick)."""
        row = self.success_matrix(decision_index)[self._type_row(task_type)]
        return self.tools[int(np.argmax(row))]

    def expected_duration(self, tool: str, task_type: str | None = None) -> float:
        """Mean latency in seconds of ``tool`` overall, or on one task type."""
        column = self.tool_index(tool)
        if task_type is None:
            return float(self._mean_duration[column])
        return float(self._duration[self._type_row(task_type), column])

    def execute(
        self,
        subtask: SubTask,
        tool: str,
        rng: np.random.Generator,
        decision_index: int | None = None,
    ) -> ToolResult:
        """Call ``tool`` on ``subtask``: draw success, latency and output from ``rng``.

        Latency is lognormal with mean :meth:`expected_duration` ``(tool, type)``
        and log-standard deviation ``latency_sigma``.

        Raises:
            ToolError: ``tool`` is not one of :attr:`tools`.
        """
        # success_probability and expected_duration, inlined: this runs once per step
        row = self._type_row(subtask.task_type)
        column = self._tool_index.get(tool)
        if column is None:
            column = self.tool_index(tool)  # raises ToolError naming the tools
        probability = self._success_rows[row][column]
        if self.config.degrade_tools and self.is_degraded(tool, decision_index):
            probability = min(probability, self.config.degraded_success)
        success = bool(rng.random() < probability)
        sigma = self.config.latency_sigma
        mean = self._duration_rows[row][column]
        duration = float(mean * math.exp(sigma * rng.standard_normal() - 0.5 * sigma * sigma))
        output, error = tool_output(tool, self._slots_of(subtask), subtask.text, success, rng)
        return ToolResult(
            success=success,
            duration_s=duration,
            output=output,
            error=error,
            probability=probability,
        )

    def _slots_of(self, subtask: SubTask) -> Mapping[str, str]:
        """``dict(subtask.slots)``, built once per sub-task (the tool outputs only read it)."""
        entry = self._slot_cache.get(id(subtask))
        if entry is None or entry[0] is not subtask:
            entry = (subtask, dict(subtask.slots))
            if len(self._slot_cache) < _FEATURE_CACHE_SIZE:
                self._slot_cache[id(subtask)] = entry
        return entry[1]

    def __getstate__(self) -> dict[str, Any]:
        # The caches are rebuilt on demand; pickled environments (training
        # checkpoints) would otherwise carry megabytes of features.
        state = dict(self.__dict__)
        for derived in ("_feature_cache", "_slot_cache", "_success_rows", "_duration_rows"):
            state.pop(derived, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._feature_cache = {}
        self._slot_cache = {}
        self._success_rows = self._success.tolist()
        self._duration_rows = self._duration.tolist()

    def featurize(self, text: str) -> np.ndarray:
        """Hashed bag-of-words + bigram features of ``text`` (float32, ``(feature_dim,)``).

        The suite's texts repeat (every attempt at a task re-reads it), so features
        are cached per text, up to ``_FEATURE_CACHE_SIZE`` texts; a copy is returned.
        """
        return self._features(text).copy()

    def _features(self, text: str) -> np.ndarray:
        """:meth:`featurize` without the copy: the cached array, read-only; do not keep it."""
        features = self._feature_cache.get(text)
        if features is None:
            features = self._featurizer(text)
            features.setflags(write=False)
            if len(self._feature_cache) < _FEATURE_CACHE_SIZE:
                self._feature_cache[text] = features
        return features

    def tasks(self, split: Split) -> tuple[Task, ...]:
        """The tasks of one split."""
        if split == "train":
            return self.train_tasks
        if split == "heldout":
            return self.heldout_tasks
        raise ConfigError(f"split must be 'train' or 'heldout', got {split!r}")

    def heldout_templates(self, task_type: str) -> frozenset[str]:
        """Template ids of ``task_type`` used by held-out tasks only."""
        self._type_row(task_type)
        return self._heldout_templates[task_type]

    # --- generation ----------------------------------------------------------------

    def _split_templates(self, rng: np.random.Generator) -> dict[str, frozenset[str]]:
        heldout: dict[str, frozenset[str]] = {}
        for spec in TASK_TYPES:
            count = max(1, round(len(spec.templates) * self.config.heldout_template_fraction))
            chosen = rng.choice(len(spec.templates), size=count, replace=False)
            heldout[spec.name] = frozenset(f"{spec.name}/{int(i)}" for i in chosen)
        return heldout

    def _split_values(self, rng: np.random.Generator) -> dict[str, frozenset[str]]:
        heldout: dict[str, frozenset[str]] = {}
        for name, values in VOCABULARIES.items():
            count = max(1, round(len(values) * self.config.heldout_value_fraction))
            chosen = rng.choice(len(values), size=count, replace=False)
            heldout[name] = frozenset(values[int(i)] for i in chosen)
        return heldout

    def _values(self, vocabulary: str, split: Split) -> list[str]:
        held = self._heldout_values[vocabulary]
        values = VOCABULARIES[vocabulary]
        if split == "heldout":
            return [value for value in values if value in held]
        return [value for value in values if value not in held]

    def _templates(self, spec: TaskTypeSpec, split: Split, *, clause: bool) -> list[str]:
        held = self._heldout_templates[spec.name]
        ids = [f"{spec.name}/{i}" for i in range(len(spec.templates))]
        if split == "train":
            ids = [tid for tid in ids if tid not in held]
        if clause:
            ids = [tid for tid in ids if not self._template(tid).endswith("?")]
        return ids

    def _template(self, template_id: str) -> str:
        name, index = template_id.split("/")
        return self._specs[name].templates[int(index)]

    def _pick_template(
        self, spec: TaskTypeSpec, split: Split, rng: np.random.Generator, *, clause: bool
    ) -> str:
        candidates = self._templates(spec, split, clause=clause)
        if split == "heldout":
            # Half the held-out phrasings come from templates training never saw; the
            # other half reuse a training template with unseen slot values.
            held = [tid for tid in candidates if tid in self._heldout_templates[spec.name]]
            if held and rng.random() < 0.5:
                candidates = held
            else:
                candidates = [tid for tid in candidates if tid not in held] or held
        return candidates[int(rng.integers(len(candidates)))]

    def _fill(
        self, template_id: str, slots: dict[str, str], split: Split, rng: np.random.Generator
    ) -> str:
        template = self._template(template_id)
        for name in _SLOT.findall(template):
            if name in slots:
                continue
            vocabulary = SLOT_VOCABULARY[name]
            taken = {v for k, v in slots.items() if SLOT_VOCABULARY[k] == vocabulary}
            values = [v for v in self._values(vocabulary, split) if v not in taken]
            slots[name] = values[int(rng.integers(len(values)))]
        return template.format(**slots)

    def _make_subtasks(
        self, types: Sequence[str], split: Split, rng: np.random.Generator
    ) -> tuple[SubTask, ...]:
        slots: dict[str, str] = {}
        clause = len(types) > 1
        subtasks = []
        for task_type in types:
            spec = self._specs[task_type]
            template_id = self._pick_template(spec, split, rng, clause=clause)
            text = self._fill(template_id, slots, split, rng)
            used = _SLOT.findall(self._template(template_id))
            subtasks.append(
                SubTask(
                    text=text,
                    task_type=task_type,
                    best_tool=spec.best_tool,
                    template_id=template_id,
                    slots=tuple((name, slots[name]) for name in used),
                )
            )
        return tuple(subtasks)

    @staticmethod
    def _sentence(subtasks: Sequence[SubTask], rng: np.random.Generator) -> str:
        text = subtasks[0].text
        for position, subtask in enumerate(subtasks[1:], start=2):
            last = position == len(subtasks)
            connectors = CHAIN_CONNECTORS if last else CHAIN_CONNECTORS[:-1]
            text += connectors[int(rng.integers(len(connectors)))] + subtask.text
        text = text[0].upper() + text[1:]
        return text if text.endswith(("?", ".")) else text + "."

    def _generate_split(
        self, split: Split, count: int, rng: np.random.Generator, seen: set[str]
    ) -> tuple[Task, ...]:
        tasks: list[Task] = []
        for number in range(count):
            for _ in range(_MAX_ATTEMPTS):
                if rng.random() < self.config.multi_step_fraction:
                    types: Sequence[str] = CHAINS[int(rng.integers(len(CHAINS)))]
                else:
                    types = (self.task_types[int(rng.integers(len(self.task_types)))],)
                subtasks = self._make_subtasks(types, split, rng)
                text = self._sentence(subtasks, rng)
                if text not in seen:
                    break
            else:  # pragma: no cover - the phrase space is far larger than num_tasks
                raise ConfigError(
                    f"could not generate {count} distinct {split} tasks; lower num_tasks "
                    f"(got {self.config.num_tasks})"
                )
            seen.add(text)
            tasks.append(
                Task(
                    id=f"s{self.config.seed}-{split}-{number:05d}",
                    text=text,
                    task_type=subtasks[0].task_type if len(subtasks) == 1 else MULTI_STEP,
                    subtasks=subtasks,
                    split=split,
                )
            )
        return tuple(tasks)

    def _generate_tasks(
        self, rng: np.random.Generator
    ) -> tuple[tuple[Task, ...], tuple[Task, ...]]:
        num_heldout = max(1, round(self.config.num_tasks * self.config.heldout_fraction))
        seen: set[str] = set()
        train = self._generate_split("train", self.config.num_tasks - num_heldout, rng, seen)
        heldout = self._generate_split("heldout", num_heldout, rng, seen)
        return train, heldout

    def __repr__(self) -> str:
        return (
            f"ToolUseSuite(seed={self.config.seed}, tools={len(self.tools)}, "
            f"task_types={len(self.task_types)}, train={len(self.train_tasks)}, "
            f"heldout={len(self.heldout_tasks)})"
        )
