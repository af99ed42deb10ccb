"""A test-only runner: counts iterations, spends tokens, checkpoints to JSON, resumes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from learnloop.errors import ConfigError, NotFoundError
from learnloop.jobs import BudgetPolicy, Job, JobContext, PreparedJob, Runners, Spend
from learnloop.jobs.budget import Price, PriceTable
from learnloop.jobs.context import JobStopped, StopKind

PRICES = PriceTable({"test-model": Price(input_per_mtok=1.0, output_per_mtok=3.0)})
BUDGETS = BudgetPolicy(prices=PRICES)


class Gate:
    """Lets one iteration through per ``set()``; sets are counted, never lost."""

    def __init__(self) -> None:
        self._semaphore = threading.Semaphore(0)

    def set(self) -> None:
        self._semaphore.release()

    def wait(self, timeout: float) -> bool:
        return self._semaphore.acquire(timeout=timeout)


class CountingRunner:
    """Config: iterations, tokens_in / tokens_out per iteration, sleep_s, fail_at, gate.

    ``gate`` names a :class:`Gate` in ``events`` that each iteration waits for
    (tests step a job one iteration at a time).
    """

    def __init__(self) -> None:
        self.events: dict[str, Gate] = {}
        self.started: list[tuple[str, int]] = []  # (job id, iteration resumed from)

    def prepare(self, config: Mapping[str, Any]) -> PreparedJob:
        iterations = config.get("iterations", 3)
        if not isinstance(iterations, int) or iterations < 1:
            raise ConfigError(f"config.iterations must be an integer >= 1, got {iterations!r}")
        per = PRICES.cost("test-model", tokens_in=config.get("tokens_in", 0),
                          tokens_out=config.get("tokens_out", 0))
        return PreparedJob(config=dict(config), total_iterations=iterations,
                           estimate=Spend(cost_usd=per * iterations))

    def run(self, ctx: JobContext) -> Mapping[str, Any]:
        config = ctx.config
        folder = ctx.output_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        existing = sorted(folder.glob("ckpt-*.json"))
        start = json.loads(existing[-1].read_text())["iteration"] if existing else 0
        self.started.append((ctx.job.id, start))
        for iteration in range(start, config.get("iterations", 3)):
            gate = config.get("gate")
            if gate:
                self.events[gate].wait(10)
            if config.get("fail_at") == iteration + 1:
                raise RuntimeError(f"boom at iteration {iteration + 1}")
            time.sleep(config.get("sleep_s", 0.0))
            if config.get("tokens_in") or config.get("tokens_out"):
                ctx.charge_tokens("test-model", tokens_in=config.get("tokens_in", 0),
                                  tokens_out=config.get("tokens_out", 0))
            ctx.add_rollouts(1)
            done = iteration + 1
            path = folder / f"ckpt-{done:06d}.json"
            path.write_text(json.dumps({"iteration": done}))
            request = ctx.report(done, {"iteration": done, "reward": float(done)},
                                 score=float(done), total_iterations=config.get("iterations", 3),
                                 checkpoint={"iteration": done, "path": str(path),
                                             "score": float(done)})
            if request is not None and done < config.get("iterations", 3):
                if request.kind is StopKind.CANCEL:
                    raise JobStopped(request)
                return {"stopped_at": done}
        return {"checkpoint": str(folder / f"ckpt-{config.get('iterations', 3):06d}.json"),
                "register_as": config.get("register_as", "counting-policy")}

    def evaluate(self, job: Job, *, which: str = "best") -> Mapping[str, Any]:
        folder = Path(job.output_dir) / "checkpoints"
        found = sorted(folder.glob("ckpt-*.json")) if folder.is_dir() else []
        if not found:
            raise NotFoundError(f"job {job.id} has no checkpoint yet")
        iteration = json.loads(found[-1].read_text())["iteration"]
        return {"iteration": iteration, "which": which, "score": float(iteration)}


def runners_with(counting: CountingRunner) -> Runners:
    from learnloop.jobs import default_runners

    return default_runners().with_runner("count", counting)
