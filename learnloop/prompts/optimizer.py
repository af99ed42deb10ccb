"""Prompt optimization that re-runs the agent: mutate, evaluate for real, select, check held-out.

Every candidate is scored by really running the agent (a
:class:`~learnloop.prompts.agent.PromptEvaluator`, the LLM agent in real use) on
the same batch of training sub-tasks. One generation:

1. **propose** ``population`` children of the current parents: each is one of the
   spec's five mutation operators (:mod:`learnloop.prompts.mutations`) applied to a
   parent, or, for a share ``rewrite_share``, an LLM critique of the parent's failed
   attempts and its rewrite (:class:`~learnloop.prompts.mutations.CritiqueRewriter`);
   duplicates of a prompt already seen are skipped;
2. **successive halving** (Jamieson and Talwalkar, 2016; Li et al., Hyperband,
   2018): all children run on the first ``batch_size / eta**k`` sub-tasks, the best
   ``1 / eta`` (at least ``survivors``) go on to ``eta`` times more, up to the whole
   batch (at most three rungs, none under 12 sub-tasks); results are cached per
   prompt, so nothing is run twice;
3. **select**: ``beam`` (default) keeps the ``survivors`` best of parents and
   children (``mu + lambda``); ``evolution`` keeps the best children only
   (``mu, lambda``) plus the best prompt ever seen as an elite; ``random`` is the
   baseline without selection pressure: parents are drawn uniformly from every
   prompt evaluated so far and there is no halving.

**Budget.** The search runs through a :class:`~learnloop.prompts.usage.MeteredClient`
with the configured limits on calls, tokens or dollars (and optionally agent runs).
When it is spent the search stops cleanly with the best prompt fully evaluated so
far; a batch of agent runs that would not fit in the remaining calls is not started,
so where a run stops does not depend on thread timing (token and dollar limits are
checked per call, so with several workers a replay may stop one call apart). The
held-out check is **not** part of the search budget: it runs on its own meter
(reported separately), so a spent budget never skips it.

**Held-out check.** The starting prompt and the search's best are run on the same
held-out sub-tasks; the paired difference of their scores gets a bootstrap
confidence interval (:mod:`learnloop.prompts.significance`). The best prompt is
reported and registered as better only when the interval's lower bound is above
0; otherwise the starting prompt is kept, and the result says so.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from learnloop.envs import SubTask, SuiteConfig, ToolUseSuite
from learnloop.errors import BudgetExceededError, ConfigError
from learnloop.prompts.agent import (
    AgentConfig,
    Attempt,
    Evaluation,
    LLMToolAgent,
    PromptEvaluator,
    explore_tools,
)
from learnloop.prompts.llm import LLMClient
from learnloop.prompts.mutations import (
    OPERATORS,
    CritiqueRewriter,
    Mutation,
    MutationContext,
    examples_from_store,
)
from learnloop.prompts.significance import Interval, PairedDifference, bootstrap_mean
from learnloop.prompts.significance import paired_difference as paired
from learnloop.prompts.template import PromptTemplate, WorkedExample
from learnloop.prompts.usage import Budget, MeteredClient, UsageMeter
from learnloop.recorder import Recorder
from learnloop.store.base import EpisodeStore

__all__ = [
    "APOConfig",
    "APOResult",
    "GenerationReport",
    "HeldoutScore",
    "Variant",
    "example_pool",
    "heldout_subtasks",
    "optimize_prompt",
    "search_prompts",
    "train_batch",
]

logger = logging.getLogger(__name__)

Selection = Literal["beam", "evolution", "random"]


@dataclass(frozen=True, slots=True, kw_only=True)
class APOConfig:
    """How the prompt search runs (flags of ``learnloop train apo``)."""

    generations: int = 5
    """Rounds of propose, evaluate, select."""
    population: int = 8
    """Children proposed per generation."""
    survivors: int = 3
    """Prompts kept as parents of the next generation (the spec's top 3)."""
    selection: Selection = "beam"
    """beam (best of parents and children), evolution (best children plus an elite) or random."""
    batch_size: int = 36
    """Training sub-tasks every candidate is compared on (the same ones for all)."""
    halving_eta: int = 2
    """Successive halving: the best 1/eta of the children go on to the next, doubled, slice."""
    rewrite_share: float = 0.15
    """Share of the children written by the LLM critique of failures (0: operators only)."""
    max_new_examples: int = 14
    """Most worked examples add_example adds at once (14: one per tool of the suite)."""
    heldout_size: int = 160
    """Held-out sub-tasks of the final check (0: all of them)."""
    budget_calls: int | None = 1000
    """Most LLM calls of the search (the held-out check is metered apart); none: no limit."""
    budget_tokens: int | None = None
    """Most LLM tokens of the search."""
    budget_usd: float | None = None
    """Most dollars of the search (priced by the client's PriceTable)."""
    budget_agent_runs: int | None = None
    """Most sub-task attempts of the search (for evaluators without a model)."""
    seed: int = 0
    """Seed of the batch, the operators' choices and the tool executions."""
    suite_seed: int = 0
    """Seed of the built-in suite."""
    confidence: float = 0.95
    """Coverage of the held-out confidence intervals."""
    num_resamples: int = 2000
    """Bootstrap resamples of those intervals."""
    num_workers: int = 2
    """Model calls in flight at once."""
    explore_tasks: int = 80
    """Training sub-tasks explored (every tool tried) when the store holds too few examples."""
    explore_trials: int = 6
    """Calls of every tool on each explored sub-task (more: fewer wrong examples)."""
    prompt_name: str = "llm-agent"
    """Registry name the improved prompt is registered under."""

    def __post_init__(self) -> None:
        for name in ("generations", "population", "survivors", "batch_size", "num_workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.halving_eta < 2:
            raise ConfigError(f"halving_eta must be >= 2, got {self.halving_eta!r}; e.g. 3")
        if self.selection not in ("beam", "evolution", "random"):
            raise ConfigError(
                f"selection must be 'beam', 'evolution' or 'random', got {self.selection!r}"
            )
        if not 0.0 <= self.rewrite_share <= 1.0:
            raise ConfigError(f"rewrite_share must lie in [0, 1], got {self.rewrite_share!r}")
        if self.explore_trials < 1:
            raise ConfigError(f"explore_trials must be >= 1, got {self.explore_trials!r}")
        for name in ("heldout_size", "explore_tasks", "max_new_examples"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("budget_calls", "budget_tokens", "budget_usd", "budget_agent_runs"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be >= 0 or None, got {value!r}")

    @property
    def budget(self) -> Budget:
        """The LLM budget of the search."""
        return Budget(
            max_calls=self.budget_calls,
            max_tokens=self.budget_tokens,
            max_cost_usd=self.budget_usd,
        )


@dataclass(slots=True, eq=False)
class Variant:
    """One candidate prompt, where it came from, and its attempts on the batch so far."""

    template: PromptTemplate
    parent: str | None
    """Fingerprint of the parent (None for the starting prompt)."""
    operator: str
    """The operator or ``critique_rewrite`` that made it (``start`` for the first)."""
    detail: str
    generation: int
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.template.fingerprint()

    @property
    def num_evaluated(self) -> int:
        return len(self.attempts)

    def score(self, num_items: int | None = None) -> float:
        """Mean score over the first ``num_items`` attempts (all by default)."""
        chosen = self.attempts[:num_items] if num_items is not None else self.attempts
        return float(np.mean([a.success_probability for a in chosen])) if chosen else -1.0

    def to_dict(self) -> dict[str, Any]:
        evaluation = Evaluation(tuple(self.attempts))
        return {
            "id": self.id,
            "parent": self.parent,
            "operator": self.operator,
            "detail": self.detail,
            "generation": self.generation,
            "scores": {
                "train_items": self.num_evaluated,
                "train_success": evaluation.success,
                "train_accuracy": evaluation.accuracy,
                "train_mean_reward": evaluation.mean_reward,
            },
            "template": self.template.to_dict(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationReport:
    """What one generation did (also passed to the progress callback)."""

    generation: int
    num_children: int
    best_id: str
    best_train_success: float
    best_operator: str
    agent_runs: int
    llm_calls: int
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult:
    """The search's variants, its best prompt, and why it stopped."""

    best: Variant
    variants: tuple[Variant, ...]
    generations: tuple[GenerationReport, ...]
    agent_runs: int
    stopped_by_budget: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldoutScore:
    """A prompt's held-out numbers, with confidence intervals."""

    success: Interval
    """Mean expected success of the chosen tools."""
    accuracy: Interval
    """Share of sub-tasks where the best tool was chosen."""
    sampled_success: float
    """Share of executed calls that succeeded."""
    mean_reward: float
    """Mean tool reward."""

    @classmethod
    def of(
        cls, evaluation: Evaluation, rng: np.random.Generator, config: APOConfig
    ) -> HeldoutScore:
        """Scores with percentile-bootstrap intervals (``config.confidence``)."""
        level, resamples = config.confidence, config.num_resamples
        correct = np.array([a.correct for a in evaluation.attempts], dtype=np.float64)
        return cls(
            success=bootstrap_mean(
                evaluation.scores, rng=rng, confidence=level, num_resamples=resamples
            ),
            accuracy=bootstrap_mean(correct, rng=rng, confidence=level, num_resamples=resamples),
            sampled_success=evaluation.sampled_success,
            mean_reward=evaluation.mean_reward,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success.to_dict(),
            "accuracy": self.accuracy.to_dict(),
            "sampled_success": self.sampled_success,
            "mean_reward": self.mean_reward,
        }


def _unique_subtasks(tasks: Sequence[Any]) -> list[SubTask]:
    seen: set[str] = set()
    unique = []
    for task in tasks:
        for sub in task.subtasks:
            if sub.text not in seen:
                seen.add(sub.text)
                unique.append(sub)
    return unique


def train_batch(suite: ToolUseSuite, size: int, seed: int) -> list[SubTask]:
    """``size`` distinct training sub-tasks in a seeded random order."""
    subtasks = _unique_subtasks(suite.train_tasks)
    order = np.random.default_rng(seed).permutation(len(subtasks))
    return [subtasks[int(i)] for i in order[:size]]


def heldout_subtasks(suite: ToolUseSuite, size: int) -> list[SubTask]:
    """The first ``size`` distinct held-out sub-tasks (all for 0), in suite order."""
    subtasks = _unique_subtasks(suite.heldout_tasks)
    return subtasks[:size] if size else subtasks


def _rungs(batch_size: int, eta: int, halving: bool) -> list[int]:
    """Batch prefixes of successive halving, smallest first, e.g. 48, eta 3 -> [16, 48].

    Rungs under 12 sub-tasks are skipped: too few to tell prompts apart.
    """
    rungs = [batch_size]
    while halving and rungs[0] // eta >= 12 and len(rungs) < 3:
        rungs.insert(0, rungs[0] // eta)
    return rungs


def search_prompts(
    config: APOConfig,
    evaluator: PromptEvaluator,
    batch: Sequence[SubTask],
    start: PromptTemplate,
    context: MutationContext,
    *,
    rewriter: CritiqueRewriter | None = None,
    calls: Callable[[], int] = lambda: 0,
    progress: Callable[[GenerationReport], None] | None = None,
) -> SearchResult:
    """The search of the module docstring on ``batch``; stops cleanly on a spent budget.

    Args:
        calls: Returns the LLM calls made so far (for the reports).
        progress: Called after each generation.
    """
    rng, started = context.rng, time.perf_counter()
    runs = 0

    def evaluate(variant: Variant, num_items: int) -> None:
        nonlocal runs
        todo = batch[variant.num_evaluated : num_items]
        if not todo:
            return
        limit = config.budget_agent_runs
        if limit is not None and runs + len(todo) > limit:
            raise BudgetExceededError(f"agent-run budget: {runs} of {limit} used")
        # A batch that cannot finish within the call budget is not started: parallel
        # calls racing for the last few calls would make replays stop elsewhere.
        made, most = calls(), config.budget_calls
        if made and most is not None and made + len(todo) > most:
            raise BudgetExceededError(f"call budget: {made} of {most} used")
        variant.attempts.extend(evaluator.evaluate(variant.template, todo).attempts)
        runs += len(todo)

    def ranked(variants: Sequence[Variant], num_items: int) -> list[Variant]:
        return sorted(variants, key=lambda v: -v.score(num_items))  # stable: older wins ties

    first = Variant(template=start, parent=None, operator="start", detail="", generation=0)
    variants, seen = [first], {first.id}
    parents, stopped, reports = [first], False, []
    try:
        evaluate(first, len(batch))
    except BudgetExceededError as exc:
        logger.warning("budget spent while evaluating the starting prompt: %s", exc)
        stopped = True
    rungs = _rungs(len(batch), config.halving_eta, config.selection != "random")
    names = list(OPERATORS)
    for generation in range(1, config.generations + 1):
        if stopped:
            break
        children: list[Variant] = []
        try:
            for attempt in range(config.population * 10):
                if len(children) >= config.population:
                    break
                if config.selection == "random":
                    done = [v for v in variants if v.num_evaluated == len(batch)]
                    parent = done[int(rng.integers(len(done)))]
                else:
                    parent = parents[attempt % len(parents)]
                mutation: Mutation | None
                if rewriter is not None and rng.random() < config.rewrite_share:
                    failures = [a for a in parent.attempts if not a.success]
                    mutation = rewriter.propose(parent.template, failures, context.tools)
                else:
                    operator = OPERATORS[names[int(rng.integers(len(names)))]]
                    mutation = operator(parent.template, context)
                if mutation is None or mutation.template.fingerprint() in seen:
                    continue
                child = Variant(
                    template=mutation.template,
                    parent=parent.id,
                    operator=mutation.operator,
                    detail=mutation.detail,
                    generation=generation,
                )
                seen.add(child.id)
                children.append(child)
                variants.append(child)
            alive = list(children)
            for position, size in enumerate(rungs):
                for child in alive:
                    evaluate(child, size)
                if position < len(rungs) - 1:
                    keep = max(config.survivors, math.ceil(len(alive) / config.halving_eta))
                    alive = ranked(alive, size)[:keep]
        except BudgetExceededError as exc:
            logger.info("search budget spent in generation %d: %s", generation, exc)
            stopped = True
        complete = [v for v in children if v.num_evaluated == len(batch)]
        best_ever = ranked([v for v in variants if v.num_evaluated == len(batch)], len(batch))[0]
        if config.selection == "evolution":
            elite = ranked(complete, len(batch))[: config.survivors]
            if best_ever not in elite:  # the elite: the best prompt ever seen lives on
                elite = [best_ever, *elite][: config.survivors]
            parents = elite
        elif config.selection == "beam":
            parents = ranked([*parents, *complete], len(batch))[: config.survivors]
        report = GenerationReport(
            generation=generation,
            num_children=len(children),
            best_id=best_ever.id,
            best_train_success=best_ever.score(),
            best_operator=best_ever.operator,
            agent_runs=runs,
            llm_calls=calls(),
            elapsed_s=time.perf_counter() - started,
        )
        reports.append(report)
        logger.info(
            "generation %d: %d children, best %s train success %.3f (%s)",
            generation,
            len(children),
            best_ever.id,
            best_ever.score(),
            best_ever.template.describe(),
        )
        if progress is not None:
            progress(report)
    done = [v for v in variants if v.num_evaluated == len(batch)] or [first]
    return SearchResult(
        best=ranked(done, len(batch))[0],
        variants=tuple(variants),
        generations=tuple(reports),
        agent_runs=runs,
        stopped_by_budget=stopped,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class APOResult:
    """What :func:`optimize_prompt` found, checked on held-out sub-tasks."""

    start: PromptTemplate
    """The starting prompt."""
    best: PromptTemplate
    """The search's best prompt on the training batch."""
    final: PromptTemplate
    """``best`` if its held-out gain is significant, else ``start``."""
    significant: bool
    """Whether the held-out gain's confidence interval lies above 0."""
    baseline: HeldoutScore
    """Held-out numbers of the starting prompt."""
    optimized: HeldoutScore
    """Held-out numbers of the search's best prompt."""
    difference: PairedDifference
    """Paired held-out difference of success, best minus start."""
    accuracy_difference: PairedDifference
    """Paired held-out difference of tool accuracy, best minus start."""
    search: SearchResult
    """The search itself (variants, generations)."""
    llm_calls: int
    """Model calls, search plus held-out check."""
    llm_tokens: int
    """Model tokens, search plus held-out check."""
    search_llm_calls: int
    """Model calls of the search alone (what the budget limits)."""
    num_examples_available: int
    """Worked examples the operators could draw from."""
    elapsed_s: float
    """Wall time of the whole run."""
    registered_version: int | None = None
    """Registry version of the improved prompt, when one was registered."""

    @property
    def improvement_points(self) -> float:
        """Held-out success gain in percentage points (best minus start)."""
        return 100.0 * self.difference.difference

    @property
    def improvement_pct(self) -> float:
        """Held-out success gain relative to the start, in percent."""
        base = self.baseline.success.mean
        return 100.0 * self.difference.difference / base if base > 0 else float("inf")

    def summary(self) -> dict[str, Any]:
        """The content of ``optimization_summary.json``."""
        verdict = (
            "the optimized prompt is significantly better on held-out tasks"
            if self.significant
            else "no significant held-out gain: kept the starting prompt"
        )
        return {
            "verdict": verdict,
            "significant": self.significant,
            "baseline": self.baseline.to_dict(),
            "optimized": self.optimized.to_dict(),
            "difference": self.difference.to_dict(),
            "accuracy_difference": self.accuracy_difference.to_dict(),
            "improvement_points": self.improvement_points,
            "improvement_pct": self.improvement_pct,
            "generations": len(self.search.generations),
            "per_generation": [g.to_dict() for g in self.search.generations],
            "population": len(self.search.variants),
            "agent_runs": self.search.agent_runs,
            "stopped_by_budget": self.search.stopped_by_budget,
            "llm_calls": self.llm_calls,
            "search_llm_calls": self.search_llm_calls,
            "llm_tokens": self.llm_tokens,
            "num_examples_available": self.num_examples_available,
            "best_prompt_id": self.best.fingerprint(),
            "final_prompt_id": self.final.fingerprint(),
            "registered_version": self.registered_version,
            "elapsed_s": self.elapsed_s,
        }

    def write(self, output_dir: str | Path, tools: dict[str, str]) -> list[Path]:
        """Write best_prompt.txt, all_variants.json and optimization_summary.json."""
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        files = {
            "best_prompt.txt": self.final.render_text(tools),
            "all_variants.json": json.dumps([v.to_dict() for v in self.search.variants], indent=2),
            "optimization_summary.json": json.dumps(self.summary(), indent=2),
        }
        paths = []
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
            paths.append(folder / name)
        return paths


def optimize_prompt(
    config: APOConfig,
    *,
    client: LLMClient,
    start: PromptTemplate | None = None,
    suite: ToolUseSuite | None = None,
    store: Any = None,
    evaluator_factory: Callable[[LLMClient, Any], PromptEvaluator] | None = None,
    progress: Callable[[GenerationReport], None] | None = None,
) -> APOResult:
    """Search for a better prompt of the LLM agent and check it on held-out sub-tasks.

    Args:
        config: The search.
        client: The model the agent (and the critique) calls; wrap it in a
            :class:`~learnloop.prompts.replay.RecordReplayClient` to reproduce a run.
        start: The starting prompt; ``PromptTemplate()`` by default.
        suite: The tool-use suite; ``ToolUseSuite(SuiteConfig(seed=config.suite_seed))``.
        store: Where attempts are recorded, examples are drawn from and the improved
            prompt is registered; a temporary SQLite store when None (nothing registered).
        evaluator_factory: ``(client, recorder) -> PromptEvaluator``; the LLM agent by default.
        progress: Called after each generation.
    """
    from learnloop.registry import Registry
    from learnloop.store import SqliteStore

    started = time.perf_counter()
    suite = suite if suite is not None else ToolUseSuite(SuiteConfig(seed=config.suite_seed))
    start = start if start is not None else PromptTemplate()
    scratch = None
    if store is None:
        scratch = tempfile.TemporaryDirectory(prefix="learnloop-apo-")
        store = SqliteStore(Path(scratch.name) / "episodes.db")
    search_meter, heldout_meter = UsageMeter(), UsageMeter()
    search_client = MeteredClient(client, meter=search_meter, budget=config.budget)
    heldout_client = MeteredClient(client, meter=heldout_meter)
    recorder = Recorder(store)
    agent_config = AgentConfig(seed=config.seed, num_workers=config.num_workers)

    def make(llm: LLMClient) -> PromptEvaluator:
        if evaluator_factory is not None:
            return evaluator_factory(llm, recorder)
        return LLMToolAgent(llm, suite, agent_config, recorder=recorder)

    try:
        batch = train_batch(suite, config.batch_size, config.seed)
        heldout = heldout_subtasks(suite, config.heldout_size)
        examples = example_pool(config, suite, store, recorder, batch, heldout)
        context = MutationContext(
            rng=np.random.default_rng(config.seed),
            tools=dict(suite.tool_descriptions),
            examples=examples,
            max_new_examples=max(1, config.max_new_examples),
        )
        rewriter = CritiqueRewriter(search_client) if config.rewrite_share > 0 else None
        search = search_prompts(
            config,
            make(search_client),
            batch,
            start,
            context,
            rewriter=rewriter,
            calls=lambda: search_meter.totals.num_calls,
            progress=progress,
        )
        checker = make(heldout_client)
        base_eval = checker.evaluate(start, heldout)
        best = search.best.template
        best_eval = base_eval if best == start else checker.evaluate(best, heldout)
        recorder.flush()
        rng = np.random.default_rng(config.seed)
        level, resamples = config.confidence, config.num_resamples
        difference = paired(
            base_eval.scores, best_eval.scores, rng=rng, confidence=level, num_resamples=resamples
        )
        base_correct, best_correct = (
            np.array([a.correct for a in e.attempts], dtype=np.float64)
            for e in (base_eval, best_eval)
        )
        accuracy_difference = paired(
            base_correct, best_correct, rng=rng, confidence=level, num_resamples=resamples
        )
        significant = best != start and difference.significant
        version = None
        if significant and scratch is None and hasattr(store, "put_document"):
            version = (
                Registry(store)
                .register_candidate(
                    config.prompt_name,
                    best.to_dict(),
                    source=f"apo:seed={config.seed}",
                    kind="prompt",
                    metadata={
                        "heldout_success": best_eval.success,
                        "baseline_success": base_eval.success,
                        "ci_low": difference.low,
                    },
                    reason=f"held-out success +{100 * difference.difference:.1f} points",
                )
                .version
            )
        totals = [search_meter.totals, heldout_meter.totals]
        return APOResult(
            start=start,
            best=best,
            final=best if significant else start,
            significant=significant,
            baseline=HeldoutScore.of(base_eval, rng, config),
            optimized=HeldoutScore.of(best_eval, rng, config),
            difference=difference,
            accuracy_difference=accuracy_difference,
            search=search,
            llm_calls=sum(t.num_calls for t in totals),
            llm_tokens=sum(t.usage.total_tokens for t in totals),
            search_llm_calls=totals[0].num_calls,
            num_examples_available=len(examples),
            elapsed_s=time.perf_counter() - started,
            registered_version=version,
        )
    finally:
        recorder.close()
        if scratch is not None:
            store.close()
            scratch.cleanup()


def example_pool(
    config: APOConfig,
    suite: ToolUseSuite,
    store: EpisodeStore,
    recorder: Recorder,
    batch: Sequence[SubTask],
    heldout: Sequence[SubTask],
) -> list[WorkedExample]:
    """Worked examples from the store; explores tools first if it has fewer than two per tool."""
    excluded = {sub.text for sub in (*batch, *heldout)}
    examples = examples_from_store(store, suite.tools, exclude_tasks=excluded)
    if len(examples) < 2 * len(suite.tools) and config.explore_tasks > 0:
        others = [s for s in train_batch(suite, 10**9, config.seed + 1) if s.text not in excluded]
        count = explore_tools(
            suite,
            others[: config.explore_tasks],
            recorder,
            trials_per_tool=config.explore_trials,
            seed=config.seed,
        )
        recorder.flush()
        logger.info("store had %d examples; recorded %d exploration episodes", len(examples), count)
        examples = examples_from_store(store, suite.tools, exclude_tasks=excluded)
    return examples
