"""The operations on jobs that the server (and anything embedding jobs) offers.

:class:`JobService` validates a submission with the job type's runner, checks
the pre-flight budget, queues the job with its own output folder, and wakes the
worker pool; pause, resume and cancel go through the validated transitions of
:class:`~learnloop.jobs.model.JobStore`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from learnloop.errors import JobError
from learnloop.jobs.budget import Budget, BudgetPolicy, preflight
from learnloop.jobs.model import Job, JobStatus, JobStore, new_job_id
from learnloop.jobs.runners import Runners

__all__ = ["BudgetRefusedError", "JobService"]

logger = logging.getLogger(__name__)


class BudgetRefusedError(JobError):
    """A submission whose pre-flight estimate breaks a budget (nothing was queued)."""


class JobService:
    """Submit and control jobs.

    Args:
        jobs: the job store.
        runners: job type -> runner (validation and estimates).
        jobs_dir: each job's outputs go to ``jobs_dir/<job id>``.
        budgets: owners' allowances and prices.
        on_submit: called after a job is queued or requeued (the pool's ``wake``).
    """

    def __init__(
        self,
        jobs: JobStore,
        runners: Runners,
        *,
        jobs_dir: str | Path,
        budgets: BudgetPolicy = BudgetPolicy(),
        on_submit: Any = None,
    ) -> None:
        self.jobs = jobs
        self.runners = runners
        self.jobs_dir = Path(jobs_dir).absolute()
        self.budgets = budgets
        self._on_submit = on_submit

    def submit(
        self,
        job_type: str,
        config: Mapping[str, Any],
        *,
        owner: str = "default",
        budget: Budget = Budget(),
    ) -> Job:
        """Validate, check the budget before starting, and queue a job.

        Raises:
            JobError: unknown or unavailable type.
            ConfigError: a bad config (the message names the field).
            BudgetRefusedError: the estimate breaks the job's or the owner's budget.
        """
        runner = self.runners.get(job_type)
        prepared = runner.prepare(config)
        reason = preflight(
            prepared.estimate,
            budget,
            owner=owner,
            owner_spent_usd=self.jobs.owner_spent(owner),
            owner_limit_usd=self.budgets.limit_for(owner),
        )
        if reason is not None:
            raise BudgetRefusedError(f"job not started: {reason}")
        job_id = new_job_id(self.jobs.now())
        job = self.jobs.create(
            job_type,
            prepared.config,
            owner=owner,
            output_dir=str(self.jobs_dir / job_id),
            budget=budget,
            total_iterations=prepared.total_iterations,
            job_id=job_id,
        )
        self._wake()
        return job

    def _wake(self) -> None:
        if self._on_submit is not None:
            self._on_submit()

    def pause(self, job_id: str) -> Job:
        return self.jobs.pause(job_id)

    def resume(self, job_id: str) -> Job:
        job = self.jobs.resume(job_id)
        if job.status is JobStatus.QUEUED:
            self._wake()
        return job

    def cancel(self, job_id: str) -> Job:
        return self.jobs.cancel(job_id)
