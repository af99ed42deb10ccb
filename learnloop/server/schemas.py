"""Request and response bodies of the JSON-RPC server (pydantic: this is a trust boundary).

Every method's ``params`` is one model below; validation errors become JSON-RPC
``-32602`` errors naming the field (:func:`describe_validation_error`). Episodes
sent to ``episodes.record`` are validated with the same models as JSONL import
(:mod:`learnloop.store.jsonl`), then converted to plain dataclasses.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from learnloop.episode import OutcomeStatus
from learnloop.jobs.model import JobStatus
from learnloop.store.jsonl import EpisodeModel, StepModel

__all__ = [
    "BudgetModel",
    "EpisodesRecordParams",
    "EvaluateParams",
    "ExperimentNameParams",
    "ExperimentStartParams",
    "ExperimentStopParams",
    "ExportFilter",
    "ExportParams",
    "GetStatusParams",
    "JobIdParams",
    "ListParams",
    "RegistryGetParams",
    "RegistryListParams",
    "RpcRequest",
    "SetLabelParams",
    "StartParams",
    "StepAppend",
    "describe_validation_error",
]

_ID = Field(min_length=1, max_length=200)
_NAME_PATTERN = r"^[A-Za-z0-9_.@:+-][A-Za-z0-9_.@:+/ -]*$"


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RpcRequest(BaseModel):
    """The JSON-RPC 2.0 envelope of one call (``id`` absent: a notification)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    jsonrpc: Literal["2.0"]
    method: str = Field(min_length=1, max_length=200)
    params: dict[str, Any] | list[Any] | None = None
    id: str | int | None = None


class BudgetModel(_Params):
    """What one job may spend; omitted or null parts are unlimited."""

    max_cost_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max_wall_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max_rollouts: int | None = Field(default=None, ge=0)


class StartParams(_Params):
    """``training.start_*``: the runner's config, the owner and the job's budget."""

    config: dict[str, Any] = Field(default_factory=dict)
    owner: str = Field(default="default", min_length=1, max_length=200, pattern=_NAME_PATTERN)
    budget: BudgetModel | None = None


class JobIdParams(_Params):
    job_id: str = _ID


class GetStatusParams(_Params):
    job_id: str = _ID
    metrics_limit: int = Field(default=0, ge=0, le=1000)
    """How many of the latest metrics rows to include (0: none)."""


class ListParams(_Params):
    status: JobStatus | None = Field(default=None, strict=False)
    owner: str | None = Field(default=None, max_length=200)
    type: str | None = Field(default=None, max_length=50)
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class EvaluateParams(_Params):
    job_id: str = _ID
    checkpoint: Literal["best", "latest"] = "best"


class ExportFilter(_Params):
    """Which episodes to export (every field left out matches all)."""

    agent_id: str | None = None
    kind: str | None = None
    statuses: list[OutcomeStatus] | None = Field(default=None, strict=False)
    task_contains: str | None = None
    started_after: float | None = None
    started_before: float | None = None
    metadata: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class ExportParams(_Params):
    """A job's episodes, or a filter's; one page of at most ``limit`` per call."""

    job_id: str | None = Field(default=None, min_length=1, max_length=200)
    filter: ExportFilter | None = None
    limit: int = Field(default=500, ge=1, le=5000)
    cursor: int = Field(default=0, ge=0)
    """Where the page starts (the ``next_cursor`` of the previous page)."""


class StepAppend(BaseModel):
    """A step to append to an episode already stored."""

    model_config = ConfigDict(extra="forbid")

    episode_id: str = _ID
    step: StepModel


class EpisodesRecordParams(BaseModel):
    """A batch of whole episodes (upserted by id) and/or steps for stored episodes."""

    model_config = ConfigDict(extra="forbid")

    episodes: list[EpisodeModel] = Field(default_factory=list, max_length=10_000)
    steps: list[StepAppend] = Field(default_factory=list, max_length=100_000)


class RegistryListParams(_Params):
    kind: str | None = None


class RegistryGetParams(_Params):
    name: str = _ID
    ref: str | int = "latest"


class SetLabelParams(_Params):
    name: str = _ID
    label: str = Field(min_length=1, max_length=100)
    version: str | int
    force: bool = False
    reason: str | None = None
    actor: str | None = None


class ExperimentStartParams(_Params):
    """An A/B test (``split``) or, with ``rollout``, a staged rollout."""

    name: str = _ID
    resource: str | None = None
    baseline: str | int = "production"
    candidate: str | int = "candidate"
    split: float = Field(default=0.5, gt=0, lt=1, strict=False)
    rollout: bool = False
    config: dict[str, Any] | None = None
    """ExperimentConfig fields (metric, alpha, guardrails, ...)."""
    rollout_policy: dict[str, Any] | None = None
    """RolloutPolicy fields (stages, min_samples_per_stage, min_duration_s)."""
    salt: str | None = None


class ExperimentNameParams(_Params):
    name: str = _ID


class ExperimentStopParams(_Params):
    name: str = _ID
    winner: Literal["baseline", "candidate"] | None = None
    reason: str | None = None


def describe_validation_error(error: ValidationError, prefix: str = "params") -> tuple[str, str]:
    """``(field path, message)`` of the first problem, e.g. ``params.config: ...``."""
    first = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in (prefix, *first["loc"]))
    given = first.get("input")
    shown = f" (got {given!r:.60})" if first["type"] != "missing" else ""
    return location, f"{location}: {first['msg']}{shown}"
