"""Job workers as Ray actors (extra ``ray``): one machine's pool runs jobs across a cluster.

:class:`RayLauncher` is a :class:`~learnloop.jobs.worker.Launcher`: for each job
the :class:`~learnloop.jobs.worker.WorkerPool` claims, it starts one Ray actor,
which opens the store from its URL and calls the same
:func:`~learnloop.jobs.worker.run_job` a worker process runs. Ray places the
actor on any node with a free CPU, so the pool's ``max_workers`` can exceed the
cores of the machine it runs on. Everything else is as with worker processes:

* liveness is the store heartbeat (a node that dies stops the heartbeat; its job
  is requeued after ``stale_after_s`` and resumes from its latest checkpoint);
* :meth:`~learnloop.jobs.worker.WorkerHandle.terminate` asks the job to
  checkpoint and requeue at its next iteration boundary (the actor runs two
  threads, so the request reaches it while the job runs);
  :meth:`~learnloop.jobs.worker.WorkerHandle.kill` kills the actor;
* the actors share the fate of the process that started them (Ray's ownership):
  a killed server leaves no job running.

The store must be reachable from every node: PostgreSQL
(``postgresql://...``) on a cluster; a SQLite file only on one machine.

This module imports no torch. :class:`RayConnection` and :func:`connect_ray`
also serve the rollout executor (:mod:`learnloop.train.ray_executor`).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from learnloop.errors import ConfigError
from learnloop.jobs.budget import BudgetPolicy
from learnloop.jobs.model import Job
from learnloop.jobs.worker import DEFAULT_RUNNERS_FACTORY, WorkerHandle, load_factory, run_job

__all__ = [
    "JobActor",
    "RayConnection",
    "RayLauncher",
    "connect_ray",
    "import_ray",
]

logger = logging.getLogger(__name__)


def import_ray() -> Any:
    """The ``ray`` module; raises ImportError naming the extra when it is missing."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise ImportError(
            f"running on Ray needs the 'ray' extra: pip install 'learnloop[ray]' ({exc})"
        ) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class RayConnection:
    """Which Ray to use: a cluster to join, or one started in this process."""

    address: str | None = None
    """Cluster to join ("auto": the `ray start` here, or "ray://host:10001"); None: start one."""
    num_cpus: int | None = None
    """CPUs of a Ray started here (None: every core); ignored when joining a cluster."""
    node_ip_address: str = "127.0.0.1"
    """Address a Ray started here listens on (loopback: unreachable from other machines)."""
    include_dashboard: bool = False
    """Start the dashboard with a Ray started here."""
    log_to_driver: bool = True
    """Copy the workers' output to this process's stderr."""

    def __post_init__(self) -> None:
        if self.address is not None and not self.address:
            raise ConfigError(
                "RayConnection.address is empty; pass 'auto', 'ray://host:port' or None"
            )
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"RayConnection.num_cpus must be >= 1 or None, got {self.num_cpus}")


def connect_ray(connection: RayConnection) -> bool:
    """Join or start Ray unless this process already did; True if this call started it.

    Whoever gets True owns the connection and calls ``ray.shutdown()`` when done.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    if connection.address is not None:
        logger.info("joining the Ray cluster at %s", connection.address)
        ray.init(address=connection.address, log_to_driver=connection.log_to_driver)
    else:
        logger.info("starting Ray on %s", connection.node_ip_address)
        ray.init(
            num_cpus=connection.num_cpus,
            include_dashboard=connection.include_dashboard,
            log_to_driver=connection.log_to_driver,
            _node_ip_address=connection.node_ip_address,
        )
    return True


class JobActor:
    """The body of one job's Ray actor: :func:`run_job` with a shutdown flag."""

    def __init__(self) -> None:
        self._shutdown = threading.Event()

    def run(
        self,
        store_url: str,
        job_id: str,
        worker_id: str,
        runners_factory: str,
        budgets: Mapping[str, Any],
        heartbeat_s: float,
    ) -> str | None:
        """Run the claimed job; its next status, or None if it was not ours to run."""
        from learnloop.store import open_store

        runners = load_factory(runners_factory)()
        store = open_store(store_url)
        try:
            status = run_job(
                store,
                job_id,
                worker_id,
                runners,
                budgets=BudgetPolicy.from_dict(budgets),
                heartbeat_s=heartbeat_s,
                shutdown=self._shutdown,
            )
        finally:
            store.close()
        return None if status is None else status.value

    def stop(self) -> None:
        """Ask the job to checkpoint and requeue at its next iteration boundary."""
        self._shutdown.set()


class _RayHandle:
    """A :class:`WorkerHandle` over one job actor and its ``run`` call."""

    def __init__(self, ray: Any, actor: Any, result: Any) -> None:
        self._ray = ray
        self._actor = actor
        self._result = result
        self._exit_code: int | None = None

    def _settle(self) -> bool:
        """True once ``run`` has returned or failed; the actor is then released."""
        if self._exit_code is not None:
            return True
        ready, _ = self._ray.wait([self._result], timeout=0)
        if not ready:
            return False
        try:
            self._ray.get(self._result)
            self._exit_code = 0
        except Exception as exc:  # the actor died or run raised: the pool requeues the job
            logger.warning("job actor ended with %s", type(exc).__name__)
            self._exit_code = 1
        self._ray.kill(self._actor, no_restart=True)
        return True

    def alive(self) -> bool:
        return not self._settle()

    def exit_code(self) -> int | None:
        return self._exit_code if self._settle() else None

    def terminate(self) -> None:
        if self.alive():
            self._actor.stop.remote()

    def kill(self) -> None:
        if self._exit_code is None:
            self._ray.kill(self._actor, no_restart=True)
            try:
                self._ray.get(self._result)
                self._exit_code = 0
            except Exception:  # killed: RayActorError, as intended
                self._exit_code = 1


def _check_store_url(url: str) -> None:
    """Actors may open the store on other machines: no relative SQLite paths."""
    path = url[len("sqlite://") :] if url.startswith("sqlite://") else url
    if "://" in path:
        return
    if path.startswith("//") or (not url.startswith("sqlite://") and os.path.isabs(path)):
        return
    raise ConfigError(
        f"store {url!r} is a relative SQLite path, which actors on other machines cannot "
        "reach; pass postgresql://... (a cluster) or sqlite:////absolute/path.db (one machine)"
    )


class RayLauncher:
    """Runs each job in its own Ray actor (see the module docstring).

    Args:
        store_url: the store every actor opens (reachable from every node).
        connection: the Ray to join or start (started here only if this process
            has not already connected; :meth:`close` then shuts it down).
        budgets: owners' allowances and prices, passed to each job.
        heartbeat_s: seconds between a running job's heartbeats.
        runners_factory: ``module:function`` returning the runners (imported in the actor).
        cpus_per_job: CPUs Ray reserves for each job's actor.
    """

    def __init__(
        self,
        store_url: str,
        *,
        connection: RayConnection = RayConnection(),
        budgets: BudgetPolicy = BudgetPolicy(),
        heartbeat_s: float = 2.0,
        runners_factory: str = DEFAULT_RUNNERS_FACTORY,
        cpus_per_job: float = 1.0,
    ) -> None:
        if not cpus_per_job > 0:
            raise ConfigError(f"cpus_per_job must be > 0, got {cpus_per_job!r}; e.g. 1")
        _check_store_url(store_url)
        self._store_url = store_url
        self._budgets = budgets.to_dict()
        self._heartbeat_s = heartbeat_s
        self._runners_factory = runners_factory
        self._ray = import_ray()
        self._owns_ray = connect_ray(connection)
        # Two threads: ``stop`` must reach the actor while ``run`` is busy.
        self._remote = self._ray.remote(JobActor).options(
            num_cpus=cpus_per_job, max_concurrency=2, max_restarts=0
        )

    def launch(self, job: Job, worker_id: str) -> WorkerHandle:
        actor = self._remote.remote()
        result = actor.run.remote(
            self._store_url,
            job.id,
            worker_id,
            self._runners_factory,
            self._budgets,
            self._heartbeat_s,
        )
        logger.info("job %s started in a Ray actor as %s", job.id, worker_id)
        return _RayHandle(self._ray, actor, result)

    def close(self) -> None:
        """Shut Ray down if this launcher started it (stop the pool first)."""
        if self._owns_ray:
            self._owns_ray = False
            self._ray.shutdown()
