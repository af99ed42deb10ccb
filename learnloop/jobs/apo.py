"""The ``apo`` job type: prompt optimization (:mod:`learnloop.prompts.optimizer`) as a job.

See :class:`ApoRunner` for what the job reports, charges, writes, and how it
resumes and is evaluated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learnloop.errors import ConfigError, LLMError, NotFoundError
from learnloop.jobs.budget import PriceTable, Spend
from learnloop.jobs.context import JobContext, JobStopped
from learnloop.jobs.model import Job
from learnloop.jobs.runners import (
    PreparedJob,
    Which,
    _check_keys,
    _TaggedRecorder,
    _write_json_atomic,
    config_from_mapping,
)

if TYPE_CHECKING:
    from learnloop.prompts.agent import Evaluation, PromptEvaluator
    from learnloop.prompts.llm import ChatRequest, ChatResponse, LLMClient, LLMEndpointConfig
    from learnloop.prompts.optimizer import APOConfig
    from learnloop.prompts.template import PromptTemplate

__all__ = [
    "APO_CALL_LOG",
    "APO_TOKENS_IN_PER_CALL",
    "APO_TOKENS_OUT_PER_CALL",
    "EMBEDDED_MODEL",
    "ApoRunner",
    "ApoSettings",
    "apo_estimate",
    "open_endpoint",
]

logger = logging.getLogger(__name__)


#: Typical prompt and completion tokens of one model call of the prompt search, for
#: the pre-flight estimate: the full SmolLM2 run of BENCHMARKS.md spent 424k tokens
#: over 1,321 calls (~321 per call; prompts grow as worked examples are added); a
#: small job (2 generations, batch 12) measured 168 + 5 per call, so the estimate errs
#: high. An answer is a tool name (at most 16 tokens).
APO_TOKENS_IN_PER_CALL = 310
APO_TOKENS_OUT_PER_CALL = 10
#: Name the embedded SmolLM2 is charged under (free in every job price table by default).
EMBEDDED_MODEL = "smollm2-135m"
#: The model calls of an apo job, replayed when the job resumes.
APO_CALL_LOG = "llm_calls.jsonl"

_APO_EXTRA = ("llm_base_url", "llm_model", "price_table")

OpenClient = Callable[["LLMEndpointConfig"], AbstractContextManager["LLMClient"]]
"""``LLMEndpointConfig -> context manager of an LLMClient``: how an apo job reaches its model."""


def open_endpoint(endpoint: LLMEndpointConfig) -> AbstractContextManager[LLMClient]:
    """The model of ``endpoint``: the embedded SmolLM2 when its ``base_url`` is empty."""
    from learnloop.prompts.local_model import open_llm_client

    return open_llm_client(endpoint)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApoSettings:
    """A validated ``apo`` job config: the search, and the model it calls."""

    search: APOConfig
    """The prompt search."""
    endpoint: LLMEndpointConfig
    """The model the search calls (an empty URL: the embedded SmolLM2)."""
    price_table: Mapping[str, Any] | None
    """The job's own prices (dollars per million tokens), for the pre-flight estimate."""

    @property
    def model(self) -> str:
        """The name the job's tokens are charged under in the server's price table."""
        return self.endpoint.model or EMBEDDED_MODEL


class _SearchStopped(Exception):
    """Unwinds the search at a generation boundary for a pause, budget or shutdown stop."""

    def __init__(self, generation: int) -> None:
        super().__init__(f"stopped after generation {generation}")
        self.generation = generation


class _ChargedClient:
    """Charges each answered call's tokens to the job; the response carries the job's price."""

    def __init__(self, inner: LLMClient, ctx: JobContext, model: str) -> None:
        self._inner, self._ctx, self._model = inner, ctx, model

    def complete(self, request: ChatRequest) -> ChatResponse:
        response = self._inner.complete(request)
        cost = self._ctx.charge_tokens(self._model, tokens_in=response.usage.prompt_tokens,
                                       tokens_out=response.usage.completion_tokens)
        return dataclasses.replace(response, cost_usd=cost)


class _FailureCount:
    """Passes calls through and keeps their failures (the agent records a failed call as a
    failed attempt, which would read as a score of 0)."""

    def __init__(self, inner: LLMClient) -> None:
        self._inner = inner
        self.failures: list[str] = []

    def complete(self, request: ChatRequest) -> ChatResponse:
        try:
            return self._inner.complete(request)
        except LLMError as exc:
            self.failures.append(str(exc))
            raise


class _WatchedEvaluator:
    """An evaluator that remembers every prompt it scored, by fingerprint."""

    def __init__(self, inner: PromptEvaluator, seen: dict[str, PromptTemplate]) -> None:
        self._inner, self._seen = inner, seen

    def evaluate(self, template: PromptTemplate, subtasks: Sequence[Any]) -> Evaluation:
        self._seen[template.fingerprint()] = template
        return self._inner.evaluate(template, subtasks)


class ApoRunner:
    """Prompt optimization (:func:`~learnloop.prompts.optimizer.optimize_prompt`) as a job.

    Config: :class:`~learnloop.prompts.optimizer.APOConfig` fields, plus
    ``llm_base_url`` and ``llm_model`` (an OpenAI-compatible server; both empty for
    the embedded SmolLM2) and ``price_table`` (``{"model": {"input_per_mtok",
    "output_per_mtok"}}``, used for the pre-flight estimate only).

    * **Progress**: one iteration per generation (metrics ``apo/...``; the score is
      the best training success); pause, cancel, budget and shutdown stops are
      carried out at the next generation boundary. Each generation writes
      ``checkpoints/gen-NNNNNN.json`` with the best prompt so far, so a cancelled
      job keeps it.
    * **Spend**: every answered model call is charged to the job with
      ``ctx.charge_tokens(model, ...)``, priced by the *server's* price table (the
      embedded model is ``smollm2-135m``, free unless the server prices it); a
      model the server cannot price fails the job before any call. Budgets are
      checked at generation boundaries (and the search's own ``budget_*`` limits
      per call).
    * **Resume**: every model call is logged to ``llm_calls.jsonl``; a paused,
      requeued or killed job restarts the search from the start, answering the
      calls already made from that log (no model, no new charge), so it reaches
      where it stopped in seconds and continues with the model. If the store's
      worked examples changed in between, the differing calls go to the model.
      Replayed sub-task attempts are recorded as episodes again.
    * **Outputs**: ``best_prompt.txt``, ``all_variants.json`` and
      ``optimization_summary.json`` in the job's folder; the summary is the job's
      result; a significant held-out gain is registered (by the optimizer) as the
      ``candidate`` of ``prompt_name`` in the server's store.
    * **Evaluate**: re-runs the agent with the final prompt (``best``) or the
      search's best so far (``latest``) on the held-out sub-tasks with the job's
      model (not charged to the job); if the model cannot be reached, returns the
      held-out numbers stored by the job (``"source": "stored"``).

    Args:
        open_client: ``LLMEndpointConfig -> context manager of an LLMClient``; the
            embedded SmolLM2 or the configured server by default (tests pass a
            scripted or replayed client).
    """

    def __init__(self, open_client: OpenClient = open_endpoint) -> None:
        self._open_client = open_client

    # --- config -----------------------------------------------------------------------

    def settings(self, config: Mapping[str, Any]) -> ApoSettings:
        """Validate a job config; raises ConfigError naming the field."""
        from learnloop.prompts.llm import LLMEndpointConfig
        from learnloop.prompts.optimizer import APOConfig

        if not isinstance(config, Mapping):
            raise ConfigError(f"config must be an object of APOConfig fields, got {config!r:.60}")
        search_keys = tuple(f.name for f in dataclasses.fields(APOConfig))
        _check_keys(config, (*search_keys, *_APO_EXTRA), "config")
        search = config_from_mapping(
            APOConfig, {k: v for k, v in config.items() if k not in _APO_EXTRA}, "config"
        )
        url, model = config.get("llm_base_url") or "", config.get("llm_model") or ""
        for name, value in (("llm_base_url", url), ("llm_model", model)):
            if not isinstance(value, str):
                raise ConfigError(f"config.{name} must be a string, got {value!r:.60}")
        if model and not url:
            raise ConfigError(
                f"config.llm_model {model!r} needs config.llm_base_url (the server's URL ending "
                "in /v1); leave both empty for the embedded SmolLM2"
            )
        try:
            endpoint = LLMEndpointConfig(base_url=url, model=model)
        except ConfigError as exc:
            raise ConfigError(f"config.llm_base_url/llm_model: {exc}") from None
        table = config.get("price_table")
        if table is not None:
            if not isinstance(table, Mapping):
                raise ConfigError(
                    "config.price_table must be an object like {\"gpt-4o-mini\": "
                    f"{{\"input_per_mtok\": 0.15, \"output_per_mtok\": 0.6}}}}, got {table!r:.60}"
                )
            try:
                PriceTable.from_dict(table)
            except (ConfigError, TypeError, ValueError) as exc:
                raise ConfigError(f"config.price_table: {exc}") from None
        return ApoSettings(search=search, endpoint=endpoint,
                           price_table=dict(table) if table is not None else None)

    def prepare(self, config: Mapping[str, Any]) -> PreparedJob:
        settings = self.settings(config)
        search = settings.search
        normalized = {
            **dataclasses.asdict(search),
            "llm_base_url": settings.endpoint.base_url,
            "llm_model": settings.endpoint.model,
            "price_table": settings.price_table,
        }
        return PreparedJob(config=normalized, total_iterations=search.generations,
                           estimate=apo_estimate(settings))

    # --- run --------------------------------------------------------------------------

    def run(self, ctx: JobContext) -> Mapping[str, Any]:
        from learnloop.envs import SuiteConfig, ToolUseSuite
        from learnloop.prompts.agent import AgentConfig, LLMToolAgent
        from learnloop.prompts.optimizer import GenerationReport, heldout_subtasks, optimize_prompt
        from learnloop.prompts.replay import RecordReplayClient
        from learnloop.prompts.usage import MeteredClient, UsageMeter

        settings = self.settings(ctx.config)
        search, model = settings.search, settings.model
        _require_price(ctx, model)
        folder = ctx.output_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        suite = ToolUseSuite(SuiteConfig(seed=search.suite_seed))
        resumed_from = ctx.job.iteration  # generations already reported by earlier attempts
        seen: dict[str, PromptTemplate] = {}
        meter = UsageMeter()
        runs = [0]
        if resumed_from:
            logger.info("job %s resumes: replaying the calls of generations 1-%d from %s",
                        ctx.job.id, resumed_from, APO_CALL_LOG)

        def make_evaluator(llm: LLMClient, recorder: Any) -> _WatchedEvaluator:
            agent = LLMToolAgent(llm, suite, AgentConfig(seed=search.seed,
                                                         num_workers=search.num_workers),
                                 recorder=_TaggedRecorder(recorder, ctx.job.id))  # type: ignore[arg-type]
            return _WatchedEvaluator(agent, seen)

        def on_generation(report: GenerationReport) -> None:
            generation = report.generation
            best = seen[report.best_id]
            path = folder / f"gen-{generation:06d}.json"
            _write_json_atomic(path, {"generation": generation, "best_id": report.best_id,
                                      "best_train_success": report.best_train_success,
                                      "template": best.to_dict(), "report": report.to_dict()})
            if generation > resumed_from:
                ctx.add_rollouts(report.agent_runs - runs[0])
                totals = meter.totals
                metrics = {
                    "apo/generation": generation,
                    "apo/best_train_success": report.best_train_success,
                    "apo/children": report.num_children,
                    "apo/agent_runs": report.agent_runs,
                    "apo/llm_calls": report.llm_calls,
                    "apo/tokens": totals.usage.total_tokens,
                    "apo/elapsed_s": report.elapsed_s,
                }
                request = ctx.report(
                    generation, metrics, score=report.best_train_success,
                    checkpoint={"iteration": generation, "path": str(path),
                                "score": report.best_train_success},
                    total_iterations=search.generations,
                )
            else:
                request = ctx.stop_request()
            runs[0] = report.agent_runs
            if request is None:
                return
            if not request.keeps_checkpoint:
                raise JobStopped(request)
            raise _SearchStopped(generation)

        with self._open_client(settings.endpoint) as live:
            logged = RecordReplayClient(_ChargedClient(live, ctx, model),
                                        ctx.output_dir / APO_CALL_LOG, mode="auto")
            try:
                result = optimize_prompt(
                    search, client=MeteredClient(logged, meter=meter), suite=suite,
                    store=ctx.episodes, evaluator_factory=make_evaluator,
                    progress=on_generation,
                )
            except _SearchStopped as stop:
                return {"stopped_at": stop.generation}
        checked = len(heldout_subtasks(suite, search.heldout_size))
        ctx.add_rollouts(result.search.agent_runs - runs[0]
                         + checked * (1 if result.best == result.start else 2))
        result.write(ctx.output_dir, dict(suite.tool_descriptions))
        return {**result.summary(), "prompt_name": search.prompt_name,
                "output_dir": str(ctx.output_dir)}

    # --- evaluate ---------------------------------------------------------------------

    def evaluate(self, job: Job, *, which: Which = "best") -> Mapping[str, Any]:
        """Re-score the final (``best``) or best-so-far (``latest``) prompt on held-out tasks."""
        import numpy as np

        from learnloop.envs import SuiteConfig, ToolUseSuite
        from learnloop.prompts.agent import AgentConfig, LLMToolAgent
        from learnloop.prompts.optimizer import HeldoutScore, heldout_subtasks
        from learnloop.prompts.template import PromptTemplate
        from learnloop.prompts.usage import MeteredClient

        settings = self.settings(job.config)
        search = settings.search
        found = _apo_prompt(Path(job.output_dir), which, job.id)
        template = PromptTemplate.from_dict(found["template"])
        answer: dict[str, Any] = {"which": which, "prompt_id": template.fingerprint(),
                                  "iteration": found["iteration"], "stored": found["stored"]}
        suite = ToolUseSuite(SuiteConfig(seed=search.suite_seed))
        heldout = heldout_subtasks(suite, search.heldout_size)
        try:
            with self._open_client(settings.endpoint) as live:
                watched = _FailureCount(live)
                metered = MeteredClient(watched)
                agent = LLMToolAgent(metered, suite, AgentConfig(seed=search.seed,
                                                                 num_workers=search.num_workers))
                evaluation = agent.evaluate(template, heldout)
        except (ImportError, LLMError) as exc:
            reason = str(exc)
        else:
            if not watched.failures:
                score = HeldoutScore.of(evaluation, np.random.default_rng(search.seed), search)
                return {**answer, "source": "rescored", **score.to_dict(),
                        "num_subtasks": len(heldout), "score": score.success.mean,
                        "llm_calls": metered.meter.totals.num_calls,
                        "llm_tokens": metered.meter.totals.usage.total_tokens}
            reason = f"{len(watched.failures)} model calls failed, e.g. {watched.failures[0]}"
        if found["stored"] is None:
            raise NotFoundError(
                f"job {job.id}: the model is not available ({reason:.300}) and the job has no "
                "stored held-out numbers yet (it has not finished); start the model or wait"
            )
        logger.warning("job %s: model not available (%s); returning the stored held-out numbers",
                       job.id, reason[:300])
        stored = found["stored"]
        return {**answer, "source": "stored", "reason": reason[:500], **stored,
                "num_subtasks": len(heldout), "score": stored["success"]["mean"]}


def apo_estimate(settings: ApoSettings) -> Spend:
    """Pre-flight estimate of an apo job: calls x typical tokens per call, priced by the
    job's ``price_table`` (0 without one).

    Calls: the search's ``budget_calls`` (or, without one, every child of every
    generation on the whole batch plus one critique each), capped by
    ``budget_tokens``, plus the held-out check (both prompts on every held-out
    sub-task). Rollouts count one sub-task attempt per call.
    """
    search = settings.search
    per_call = APO_TOKENS_IN_PER_CALL + APO_TOKENS_OUT_PER_CALL
    if search.budget_calls is not None:
        calls = search.budget_calls
    else:
        calls = search.batch_size + search.generations * search.population * (search.batch_size + 1)
    if search.budget_tokens is not None:
        calls = min(calls, -(-search.budget_tokens // per_call))
    heldout = search.heldout_size
    if heldout == 0:
        from learnloop.envs import SuiteConfig, ToolUseSuite
        from learnloop.prompts.optimizer import heldout_subtasks

        heldout = len(heldout_subtasks(ToolUseSuite(SuiteConfig(seed=search.suite_seed)), 0))
    calls += 2 * heldout
    tokens_in, tokens_out = calls * APO_TOKENS_IN_PER_CALL, calls * APO_TOKENS_OUT_PER_CALL
    cost = 0.0
    if settings.price_table is not None:
        table = PriceTable.from_dict(settings.price_table)
        if settings.model not in table.prices:
            raise ConfigError(
                f"config.price_table has no price for model {settings.model!r}; add "
                f"{{\"{settings.model}\": {{\"input_per_mtok\": ..., \"output_per_mtok\": ...}}}}"
            )
        cost = table.cost(settings.model, tokens_in=tokens_in, tokens_out=tokens_out)
    runs = calls if search.budget_agent_runs is None else min(
        calls, search.budget_agent_runs + 2 * heldout)
    return Spend(cost_usd=cost, tokens_in=tokens_in, tokens_out=tokens_out, rollouts=runs)


def _require_price(ctx: JobContext, model: str) -> None:
    if model not in ctx.budgets.prices.prices:
        raise ConfigError(
            f"model {model!r} has no price in this server's price table, so its use cannot be "
            "charged to the job's budget; the server operator must add it (BudgetPolicy.prices: "
            f"{{\"{model}\": {{\"input_per_mtok\": ..., \"output_per_mtok\": ...}}}})"
        )


def _apo_prompt(output_dir: Path, which: Which, job_id: str) -> dict[str, Any]:
    """The prompt an evaluation scores: ``{"template", "iteration", "stored"}``.

    ``best``: the job's final prompt (the summary's), else the latest best so far;
    ``latest``: the search's best so far at its latest generation. ``stored`` holds the
    final prompt's held-out numbers from the summary, when there are any.
    """
    summary_path = output_dir / "optimization_summary.json"
    if which == "best" and summary_path.exists():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        variants = json.loads((output_dir / "all_variants.json").read_text(encoding="utf-8"))
        final = next(v for v in variants if v["id"] == summary["final_prompt_id"])
        stored = summary["optimized" if summary["significant"] else "baseline"]
        return {"template": final["template"], "iteration": summary["generations"],
                "stored": stored}
    folder = output_dir / "checkpoints"
    found = sorted(folder.glob("gen-*.json")) if folder.is_dir() else []
    if not found:
        raise NotFoundError(
            f"job {job_id} has no prompt yet; wait for its first generation to finish"
        )
    data = json.loads(found[-1].read_text(encoding="utf-8"))
    return {"template": data["template"], "iteration": data["generation"], "stored": None}
