"""The JSON-RPC methods: one :class:`Method` per name, thin over the library.

``training.*`` go through :class:`~learnloop.jobs.JobService` and
:class:`~learnloop.jobs.JobStore`; ``episodes.record`` writes through the store
before it answers (durable when acknowledged); ``registry.*`` and
``experiments.*`` are the operations of :class:`~learnloop.registry.Registry` and
:class:`~learnloop.experiments.Experiments`, as on the command line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import orjson
from pydantic import BaseModel

from learnloop.episode import Episode, Step
from learnloop.errors import ConfigError, JobError, NotFoundError
from learnloop.jobs.budget import Budget
from learnloop.jobs.model import Job, JobStore
from learnloop.jobs.service import JobService
from learnloop.server import schemas
from learnloop.server.metrics import ServerMetrics
from learnloop.store.base import EpisodeQuery, Store
from learnloop.store.sqlite import episode_row

__all__ = ["ERROR_CODES", "Method", "RpcError", "RpcMethods"]

logger = logging.getLogger(__name__)

#: JSON-RPC error codes: the standard ones, then ours (-32000 to -32099).
ERROR_CODES: Mapping[str, int] = {
    "parse_error": -32700,
    "invalid_request": -32600,
    "method_not_found": -32601,
    "invalid_params": -32602,
    "internal_error": -32603,
    "unauthorized": -32001,
    "not_found": -32002,
    "conflict": -32003,
    "not_available": -32004,
    "budget_refused": -32005,
    "store_error": -32006,
}


class RpcError(Exception):
    """A JSON-RPC error to answer with (code, message naming the field, optional data)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True, slots=True)
class Method:
    """One JSON-RPC method."""

    name: str
    params: type[BaseModel]
    handler: Callable[[Any], Any]
    summary: str
    is_async: bool = False
    """The handler is a coroutine function run on the event loop (else: a worker thread)."""
    inline: bool = False
    """Run the (sync, sub-millisecond) handler on the event loop, skipping the thread hop."""


def _summary(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "type": job.type,
        "owner": job.owner,
        "status": job.status.value,
        "requested": job.requested.value if job.requested else None,
        "iteration": job.iteration,
        "total_iterations": job.total_iterations,
        "best_score": job.best_score,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


class RpcMethods:
    """Builds the method table over the server's collaborators.

    Args:
        store: episodes and documents.
        service: job submission and control.
        metrics: counters for ingested episodes.
        evaluate_command: ``(job_id, which) -> argv`` of an evaluation process, or
            None to evaluate in a worker thread of this process.
    """

    def __init__(
        self,
        store: Store,
        service: JobService,
        metrics: ServerMetrics,
        *,
        evaluate_command: Callable[[str, str], list[str]] | None = None,
        openrpc: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.store = store
        self.service = service
        self.jobs: JobStore = service.jobs
        self.metrics = metrics
        self._evaluate_command = evaluate_command
        self._openrpc = openrpc
        self.table: dict[str, Method] = {m.name: m for m in self._methods()}

    def _methods(self) -> list[Method]:
        s = schemas
        methods = [
            Method(f"training.start_{t}", s.StartParams, self._starter(t),
                   f"Queue a {t} training job; returns its id (pre-flight budget check first).")
            for t in ("grpo", "ppo", "apo", "bandit")
        ]
        methods += [
            Method("training.get_status", s.GetStatusParams, self.get_status,
                   "A job's status, progress, spend, checkpoints and error (and latest metrics).",
                   inline=True),
            Method("training.list", s.ListParams, self.list_jobs,
                   "Jobs, oldest first, filtered by status, owner or type; paginated."),
            Method("training.cancel", s.JobIdParams, self.cancel,
                   "Cancel a job: at once if queued or paused, at the next iteration boundary "
                   "if running (what was saved is kept)."),
            Method("training.pause", s.JobIdParams, self.pause,
                   "Pause a job: a running one stops at its next iteration boundary after a "
                   "checkpoint."),
            Method("training.resume", s.JobIdParams, self.resume,
                   "Requeue a paused job; it continues from its latest checkpoint."),
            Method("training.evaluate", s.EvaluateParams, self.evaluate,
                   "Evaluate a job's best or latest checkpoint on held-out tasks now.",
                   is_async=True),
            Method("training.export_trajectories", s.ExportParams, self.export,
                   "One page of a job's (or a filter's) episodes as JSONL; follow next_cursor."),
            Method("episodes.record", s.EpisodesRecordParams, self.record,
                   "Store a batch of episodes and/or steps; durable when acknowledged."),
            Method("registry.list", s.RegistryListParams, self.registry_list,
                   "Registry resources with their version counts and labels."),
            Method("registry.get", s.RegistryGetParams, self.registry_get,
                   "One version of a resource, by number or label."),
            Method("registry.set_label", s.SetLabelParams, self.registry_set_label,
                   "Point a label at a version (protected labels need force)."),
            Method("experiments.start", s.ExperimentStartParams, self.experiments_start,
                   "Start an A/B test or a staged rollout of two versions of a resource."),
            Method("experiments.status", s.ExperimentNameParams, self.experiments_status,
                   "Per-arm metrics, sequential tests and the sample-ratio check."),
            Method("experiments.stop", s.ExperimentStopParams, self.experiments_stop,
                   "End an experiment; a winner gets the experiment's label."),
            Method("experiments.step_rollout", s.ExperimentNameParams, self.experiments_step,
                   "Look at a rollout once: advance, hold, roll back or complete it."),
        ]
        if self._openrpc is not None:
            methods.append(Method("rpc.discover", _NoParams, lambda _: self._openrpc(),  # type: ignore[misc]
                                  "This server's OpenRPC document."))
        return methods

    # --- training ---------------------------------------------------------------------

    def _starter(self, job_type: str) -> Callable[[schemas.StartParams], dict[str, Any]]:
        def start(params: schemas.StartParams) -> dict[str, Any]:
            reason = self.service.runners.unavailable_reason(job_type)
            if reason is not None:
                raise RpcError(ERROR_CODES["not_available"],
                               f"training.start_{job_type} is not available in this build: "
                               f"{reason}", {"type": job_type})
            budget = Budget(**params.budget.model_dump()) if params.budget else Budget()
            job = self.service.submit(job_type, params.config, owner=params.owner, budget=budget)
            return {"job_id": job.id, "status": job.status.value, "output_dir": job.output_dir,
                    "total_iterations": job.total_iterations}

        return start

    def get_status(self, params: schemas.GetStatusParams) -> dict[str, Any]:
        # One read by key: a single indexed SQLite lookup, fast enough for the event loop.
        out = dict(self.jobs.get_data(params.job_id))
        if params.metrics_limit:
            out["metrics"] = self.jobs.metrics(params.job_id, limit=params.metrics_limit)
        return out

    def list_jobs(self, params: schemas.ListParams) -> dict[str, Any]:
        found = self.jobs.list_jobs(status=params.status, owner=params.owner, job_type=params.type)
        page = found[params.offset : params.offset + params.limit]
        end = params.offset + len(page)
        return {"jobs": [_summary(j) for j in page], "total": len(found),
                "next_offset": end if end < len(found) else None}

    def cancel(self, params: schemas.JobIdParams) -> dict[str, Any]:
        job = self.service.cancel(params.job_id)
        note = ("cancel requested: the job stops at its next iteration boundary"
                if job.requested else "cancelled")
        return {**_summary(job), "message": note}

    def pause(self, params: schemas.JobIdParams) -> dict[str, Any]:
        job = self.service.pause(params.job_id)
        note = ("pause requested: the job stops after a checkpoint at its next iteration "
                "boundary" if job.requested else "paused")
        return {**_summary(job), "message": note}

    def resume(self, params: schemas.JobIdParams) -> dict[str, Any]:
        job = self.service.resume(params.job_id)
        return {**_summary(job), "message": "requeued: it continues from its latest checkpoint"
                if job.status.value == "queued" else "pause request withdrawn"}

    async def evaluate(self, params: schemas.EvaluateParams) -> dict[str, Any]:
        job = await anyio.to_thread.run_sync(self.jobs.get, params.job_id)
        reason = self.service.runners.unavailable_reason(job.type)
        if reason is not None:
            raise RpcError(ERROR_CODES["not_available"], f"cannot evaluate a {job.type} job: "
                           f"{reason}")
        if self._evaluate_command is None:
            runner = self.service.runners.get(job.type)

            def run() -> dict[str, Any]:
                result = dict(runner.evaluate(job, which=params.checkpoint))
                self.jobs.add_evaluation(job.id, {**result, "source": "training.evaluate"})
                return result

            return await anyio.to_thread.run_sync(run)
        argv = self._evaluate_command(job.id, params.checkpoint)
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        out, err = await process.communicate()
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if not lines:
            logger.error("evaluation of %s printed no result: %s", job.id, err.decode()[-2000:])
            raise RpcError(ERROR_CODES["internal_error"],
                           f"the evaluation of job {job.id} failed (exit code "
                           f"{process.returncode}); see the server log")
        answer = json.loads(lines[-1])
        if "error" in answer:
            kind = answer["error"]["type"]
            code = ERROR_CODES["not_found"] if kind == "NotFoundError" else ERROR_CODES[
                "invalid_params" if kind == "ConfigError" else "internal_error"]
            raise RpcError(code, answer["error"]["message"])
        result: dict[str, Any] = answer["result"]
        return result

    def export(self, params: schemas.ExportParams) -> dict[str, Any]:
        query = export_query(self.jobs, params.job_id, params.filter)
        page = dataclasses.replace(query, limit=params.limit, offset=params.cursor)
        episodes = self.store.query_episodes(page)
        body = b"".join(orjson.dumps(e.to_dict()) + b"\n" for e in episodes)
        more = len(episodes) == params.limit
        return {"format": "jsonl", "count": len(episodes), "jsonl": body.decode(),
                "next_cursor": params.cursor + len(episodes) if more else None}

    def record(self, params: schemas.EpisodesRecordParams) -> dict[str, Any]:
        if not params.episodes and not params.steps:
            raise RpcError(ERROR_CODES["invalid_params"],
                           "params: nothing to record; send episodes (params.episodes) and/or "
                           "steps (params.steps)", {"field": "params.episodes"})
        dumped = [m.model_dump() for m in params.episodes]
        episodes = {d["id"]: Episode.from_dict(d) for d in dumped}
        bodies = {d["id"]: d for d in dumped}
        appended = 0
        for item in params.steps:
            episode = episodes.get(item.episode_id)
            if episode is None:
                try:
                    episode = self.store.get_episode(item.episode_id)
                except NotFoundError:
                    raise RpcError(
                        ERROR_CODES["not_found"],
                        f"params.steps: no episode with id {item.episode_id!r}; send the episode "
                        "first (params.episodes) or fix the id", {"episode_id": item.episode_id},
                    ) from None
            data = item.step.model_dump()
            data["index"] = len(episode.steps) + len(episode.observations)
            episodes[episode.id] = episode.replace(steps=(*episode.steps, Step.from_dict(data)))
            bodies.pop(episode.id, None)  # changed: serialize it from the episode
            appended += 1
        batch = list(episodes.values())
        add_rows = getattr(self.store, "add_episode_rows", None)
        if add_rows is not None:
            # SQL fast path: the validated dicts are the stored bodies (orjson, no round trip)
            add_rows([episode_row(e, orjson.dumps(bodies[e.id]).decode()) if e.id in bodies
                      else episode_row(e) for e in batch])
        else:
            self.store.add_episodes(batch)  # one transaction, committed before we answer
        num_steps = sum(len(m.steps) for m in params.episodes) + appended
        self.metrics.episodes.inc(len(params.episodes))
        self.metrics.steps.inc(num_steps)
        return {"episodes": len(params.episodes), "steps": num_steps, "stored": len(batch)}

    # --- registry and experiments -----------------------------------------------------

    def _registry(self) -> Any:
        from learnloop.registry import Registry

        return Registry(self.store)

    def _experiments(self) -> Any:
        from learnloop.experiments import Experiments

        return Experiments(self.store)

    def registry_list(self, params: schemas.RegistryListParams) -> dict[str, Any]:
        resources = self._registry().resources(kind=params.kind)
        return {"resources": [dataclasses.asdict(r) for r in resources]}

    def registry_get(self, params: schemas.RegistryGetParams) -> dict[str, Any]:
        registry = self._registry()
        version = registry.get(params.name, params.ref)
        return {**version.to_dict(), "labels": registry.labels(params.name)}

    def registry_set_label(self, params: schemas.SetLabelParams) -> dict[str, Any]:
        label = self._registry().set_label(params.name, params.label, params.version,
                                           force=params.force, actor=params.actor,
                                           reason=params.reason)
        return {"name": label.name, "label": label.label, "version": label.version,
                "moves": [m.to_dict() for m in label.moves[-5:]]}

    def experiments_start(self, params: schemas.ExperimentStartParams) -> dict[str, Any]:
        from learnloop.experiments import ExperimentConfig, RolloutPolicy
        from learnloop.jobs.runners import config_from_mapping

        try:
            config = ExperimentConfig.from_dict(params.config or {})
        except TypeError as exc:
            raise ConfigError(f"params.config: {exc}; see ExperimentConfig's fields") from None
        experiments = self._experiments()
        if params.rollout:
            policy = config_from_mapping(RolloutPolicy, params.rollout_policy,
                                         "params.rollout_policy")
            experiments.start_rollout(params.name, params.baseline, params.candidate,
                                      resource=params.resource, policy=policy, config=config,
                                      salt=params.salt)
        else:
            experiments.start_ab_test(params.name, params.baseline, params.candidate,
                                      params.split, resource=params.resource, config=config,
                                      salt=params.salt)
        result: dict[str, Any] = experiments.status(params.name).to_dict()
        return result

    def experiments_status(self, params: schemas.ExperimentNameParams) -> dict[str, Any]:
        result: dict[str, Any] = self._experiments().status(params.name).to_dict()
        return result

    def experiments_stop(self, params: schemas.ExperimentStopParams) -> dict[str, Any]:
        experiments = self._experiments()
        experiments.stop_ab_test(params.name, winner=params.winner, reason=params.reason)
        result: dict[str, Any] = experiments.status(params.name).to_dict()
        return result

    def experiments_step(self, params: schemas.ExperimentNameParams) -> dict[str, Any]:
        result: dict[str, Any] = self._experiments().step_rollout(params.name).to_dict()
        return result


class _NoParams(BaseModel):
    model_config = {"extra": "forbid"}


def export_query(
    jobs: JobStore, job_id: str | None, filter_: schemas.ExportFilter | None
) -> EpisodeQuery:
    """The episode query of an export: a job's episodes, a filter's, or all."""
    if job_id is not None and filter_ is not None:
        raise ConfigError("params: pass job_id or filter, not both")
    if job_id is not None:
        jobs.get(job_id)  # NotFoundError names the id
        return EpisodeQuery(metadata={"job_id": job_id})
    if filter_ is None:
        return EpisodeQuery()
    fields = filter_.model_dump()
    statuses = fields.pop("statuses")
    return EpisodeQuery(**fields, statuses=tuple(statuses) if statuses is not None else None)


def evaluation_argv(store_url: str) -> Callable[[str, str], list[str]]:
    """``(job_id, which) -> argv`` of ``python -m learnloop.jobs evaluate`` on ``store_url``."""

    def argv(job_id: str, which: str) -> list[str]:
        return [sys.executable, "-m", "learnloop.jobs", "evaluate", "--store", store_url,
                "--job", job_id, "--which", which]

    return argv


def job_error_code(exc: JobError) -> int:
    """Budget refusals have their own code; other job errors are state conflicts."""
    from learnloop.jobs.service import BudgetRefusedError

    if isinstance(exc, BudgetRefusedError):
        return ERROR_CODES["budget_refused"]
    if "not available in this build" in str(exc):
        return ERROR_CODES["not_available"]
    return ERROR_CODES["conflict"]


AsyncHandler = Callable[[Any], Awaitable[Any]]
