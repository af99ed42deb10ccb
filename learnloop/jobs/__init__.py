"""Training jobs: a queue in the store, workers, checkpoints, budgets, evaluation.

* :mod:`~learnloop.jobs.model`: :class:`Job`, :class:`JobStatus`, validated
  transitions, and :class:`JobStore` (jobs are documents; a claim is a
  compare-and-set from ``queued`` to ``running``).
* :mod:`~learnloop.jobs.budget`: prices, budgets, spend and the checks.
* :mod:`~learnloop.jobs.context`: :class:`JobContext`, what a running job reports
  through and learns from that it must stop.
* :mod:`~learnloop.jobs.runners`: job type -> runner (``ppo``, ``grpo``,
  ``bandit``, and ``apo`` from :mod:`~learnloop.jobs.apo`: prompt optimization).
* :mod:`~learnloop.jobs.worker`: :class:`WorkerPool`, claiming, heartbeats,
  recovery of jobs whose worker died, worker processes.
* :mod:`~learnloop.jobs.service`: :class:`JobService`, submit and control.

Nothing here imports torch; the PPO/GRPO runners import it inside the worker.

>>> import os, tempfile
>>> from learnloop.store import open_store
>>> store = open_store(os.path.join(tempfile.mkdtemp(), "jobs.db"))
>>> jobs = JobStore(store)
>>> service = JobService(jobs, default_runners(), jobs_dir=tempfile.mkdtemp())
>>> job = service.submit("bandit", {"decisions": 200, "iterations": 2}, owner="ana")
>>> job.status.value
'queued'
>>> jobs.claim(job.id, "w1").status.value
'running'
>>> jobs.claim(job.id, "w2") is None   # two workers never run one job
True
>>> store.close()
"""

from __future__ import annotations

from learnloop.jobs.budget import (
    DEFAULT_OWNER_MONTHLY_USD,
    Budget,
    BudgetPolicy,
    Price,
    PriceTable,
    Spend,
)
from learnloop.jobs.context import JobContext, StopKind, StopRequest
from learnloop.jobs.model import (
    JOB_TYPES,
    Job,
    JobId,
    JobStatus,
    JobStore,
    Request,
    check_transition,
)
from learnloop.jobs.runners import (
    BanditRunner,
    PreparedJob,
    RLRunner,
    Runner,
    Runners,
    default_runners,
)
from learnloop.jobs.service import BudgetRefusedError, JobService
from learnloop.jobs.worker import (
    PoolConfig,
    ProcessLauncher,
    ThreadLauncher,
    WorkerPool,
    run_job,
)

__all__ = [
    "DEFAULT_OWNER_MONTHLY_USD",
    "JOB_TYPES",
    "BanditRunner",
    "Budget",
    "BudgetPolicy",
    "BudgetRefusedError",
    "Job",
    "JobContext",
    "JobId",
    "JobService",
    "JobStatus",
    "JobStore",
    "PoolConfig",
    "PreparedJob",
    "Price",
    "PriceTable",
    "ProcessLauncher",
    "RLRunner",
    "Request",
    "Runner",
    "Runners",
    "Spend",
    "StopKind",
    "StopRequest",
    "ThreadLauncher",
    "WorkerPool",
    "check_transition",
    "default_runners",
    "run_job",
]
