"""Job type -> runner: what actually trains, for ``ppo``, ``grpo``, ``bandit`` and ``apo``.

A :class:`Runner` does three things:

* :meth:`~Runner.prepare` validates a submitted config (without heavy imports:
  the server calls it) and returns the normalized config, the number of
  iterations and a pre-flight :class:`~learnloop.jobs.budget.Spend` estimate;
* :meth:`~Runner.run` trains in a worker, reporting each iteration through the
  :class:`~learnloop.jobs.context.JobContext` and stopping when told to; it
  always resumes from the job's latest checkpoint if there is one;
* :meth:`~Runner.evaluate` scores the job's best or latest checkpoint on the
  held-out tasks.

:class:`Runners` maps job types to runners; :func:`default_runners` is the
shipped set. A type can be *known but unavailable* (a build without one of the
runners): submitting it is refused with a clear message.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from learnloop.errors import ConfigError, JobError, NotFoundError, StoreError
from learnloop.jobs.budget import Spend
from learnloop.jobs.context import JobContext, JobStopped, StopKind, StopRequest
from learnloop.jobs.model import Job

__all__ = [
    "BanditRunner",
    "PreparedJob",
    "RLRunner",
    "Runner",
    "Runners",
    "config_from_mapping",
    "default_runners",
]

logger = logging.getLogger(__name__)

Which = Literal["best", "latest"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedJob:
    """A validated submission."""

    config: Mapping[str, Any]
    """The normalized config stored with the job."""
    total_iterations: int | None
    """Iterations the job will run, if known."""
    estimate: Spend
    """Pre-flight estimate of what the job will spend."""


class Runner(Protocol):
    """Trains one job type (see the module docstring)."""

    def prepare(self, config: Mapping[str, Any]) -> PreparedJob: ...

    def run(self, ctx: JobContext) -> Mapping[str, Any]: ...

    def evaluate(self, job: Job, *, which: Which = "best") -> Mapping[str, Any]: ...


class Runners:
    """Job type -> runner, plus types that are known but not available in this build.

    Args:
        runners: the available runners.
        unavailable: type -> why it cannot run (shown to whoever submits it).
    """

    def __init__(
        self, runners: Mapping[str, Runner], unavailable: Mapping[str, str] | None = None
    ) -> None:
        self._runners = dict(runners)
        self._unavailable = {k: v for k, v in (unavailable or {}).items() if k not in runners}

    @property
    def types(self) -> tuple[str, ...]:
        """Every known type, available or not."""
        return tuple(sorted({*self._runners, *self._unavailable}))

    def unavailable_reason(self, job_type: str) -> str | None:
        """Why ``job_type`` cannot run here, or None if it can (or is unknown)."""
        return self._unavailable.get(job_type)

    def get(self, job_type: str) -> Runner:
        """The runner of ``job_type``; raises JobError if it is unavailable or unknown."""
        runner = self._runners.get(job_type)
        if runner is not None:
            return runner
        reason = self._unavailable.get(job_type)
        if reason is not None:
            raise JobError(f"job type {job_type!r} is not available in this build: {reason}")
        raise JobError(f"unknown job type {job_type!r}; use one of {list(self.types)}")

    def with_runner(self, job_type: str, runner: Runner) -> Runners:
        """A copy with ``runner`` added for ``job_type`` (e.g. ``apo`` once it exists)."""
        return Runners({**self._runners, job_type: runner}, self._unavailable)


def default_runners() -> Runners:
    """The shipped runners: ``ppo``, ``grpo``, ``bandit`` and ``apo``."""
    from learnloop.jobs.apo import ApoRunner  # it builds on this module

    return Runners(
        {"ppo": RLRunner("ppo"), "grpo": RLRunner("grpo"), "bandit": BanditRunner(),
         "apo": ApoRunner()}
    )


# --- config helpers -------------------------------------------------------------------


def config_from_mapping(
    cls: type[Any], data: Any, where: str, *, exclude: tuple[str, ...] = ()
) -> Any:
    """Build frozen config ``cls`` from a JSON object, naming the field on any error.

    JSON lists become tuples. Fields in ``exclude`` are set by the job system and
    refused here.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be an object of {cls.__name__} fields, got {data!r:.60}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in data.items():
        if name in exclude:
            raise ConfigError(f"{where}.{name} is set by the job server; remove it")
        if name not in fields:
            known = sorted(n for n in fields if n not in exclude)
            raise ConfigError(f"unknown field {where}.{name}; known fields: {known}")
        if value is None and "None" in str(fields[name].type):
            continue  # an optional field: None is its "not set"
        default = fields[name].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{where}.{name} must be true or false, got {value!r:.60}")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and (
            isinstance(value, bool) or not isinstance(value, (int, float))
        ):
            raise ConfigError(f"{where}.{name} must be a number, got {value!r:.60}")
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{where}.{name} must be a whole number, got {value!r}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}; check the field types") from None


def _check_keys(config: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in config:
        if key not in allowed:
            raise ConfigError(f"unknown field {where}.{key}; known fields: {list(allowed)}")


def _register_as(config: Mapping[str, Any], default: str) -> str:
    name = config.get("register_as", default)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"config.register_as must be a non-empty string, got {name!r}")
    return name


# --- PPO and GRPO ---------------------------------------------------------------------


class _TaggedRecorder:
    """A recorder that adds ``metadata.job_id`` to every episode a job records."""

    def __init__(self, recorder: Any, job_id: str) -> None:
        self._recorder = recorder
        self._job_id = job_id

    def begin(self, task: str, **fields: Any) -> Any:
        metadata = {**(fields.pop("metadata", None) or {}), "job_id": self._job_id}
        return self._recorder.begin(task, metadata=metadata, **fields)

    def step(self, episode_id: Any, action: str, **fields: Any) -> Any:
        return self._recorder.step(episode_id, action, **fields)

    def complete(self, episode_id: Any, **fields: Any) -> Any:
        return self._recorder.complete(episode_id, **fields)


class RLRunner:
    """PPO or GRPO on a Gymnasium environment or the built-in suite (extra ``train``).

    Config: ``{"run": RunConfig fields, "algo": PPOConfig or GRPOConfig fields,
    "policy": PolicyConfig fields, "register_as": registry name}``; ``run.output_dir``,
    ``run.resume`` and ``run.store`` are set by the job system. Episodes are recorded
    into the server's store with ``metadata.job_id`` unless ``run.record`` is false.
    """

    _KEYS = ("run", "algo", "policy", "register_as")
    _EXCLUDED = ("output_dir", "resume", "store")

    def __init__(self, algorithm: Literal["ppo", "grpo"]) -> None:
        if algorithm not in ("ppo", "grpo"):
            raise ConfigError(f"RLRunner algorithm must be 'ppo' or 'grpo', got {algorithm!r}")
        self.algorithm = algorithm

    def _configs(self, config: Mapping[str, Any]) -> tuple[Any, Any, Any]:
        from learnloop.train.config import GRPOConfig, PolicyConfig, PPOConfig, RunConfig

        _check_keys(config, self._KEYS, "config")
        algo_cls = PPOConfig if self.algorithm == "ppo" else GRPOConfig
        run = config_from_mapping(RunConfig, config.get("run"), "config.run",
                                  exclude=self._EXCLUDED)
        algo = config_from_mapping(algo_cls, config.get("algo"), "config.algo")
        policy = config_from_mapping(PolicyConfig, config.get("policy"), "config.policy")
        return run, algo, policy

    def prepare(self, config: Mapping[str, Any]) -> PreparedJob:
        from learnloop.train.config import check_env_id

        run, algo, policy = self._configs(config)
        check_env_id(run.env)  # a mistyped id is refused now, not when the job runs
        register_as = _register_as(config, f"{self.algorithm}-policy")
        per_iteration = algo.num_envs if self.algorithm == "ppo" else algo.num_attempts
        normalized = {
            "run": {k: v for k, v in dataclasses.asdict(run).items() if k not in self._EXCLUDED},
            "algo": dataclasses.asdict(algo),
            "policy": dataclasses.asdict(policy),
            "register_as": register_as,
        }
        # PPO: at least one episode per environment per iteration is a floor, not a bound.
        estimate = Spend(rollouts=run.iterations * per_iteration)
        return PreparedJob(config=normalized, total_iterations=run.iterations, estimate=estimate)

    def run(self, ctx: JobContext) -> Mapping[str, Any]:
        from learnloop.train import require_torch

        require_torch()
        from learnloop.train.checkpoints import CheckpointManager
        from learnloop.train.run import train

        run_config, algo, policy = self._configs(
            {k: v for k, v in ctx.config.items()}
        )
        run_config = dataclasses.replace(run_config, output_dir=str(ctx.output_dir), resume=True)
        recorder = None
        if run_config.record:
            from learnloop.recorder import Recorder

            recorder = Recorder(ctx.episodes)
        checkpoints_dir = ctx.output_dir / "checkpoints"
        stop: list[StopRequest] = []

        def on_iteration(done: int, metrics: Mapping[str, Any]) -> bool | None:
            ctx.add_rollouts(int(metrics.get("rollout/episodes", 0) or 0))
            score = _eval_score(metrics)
            path = checkpoints_dir / f"ckpt-{done:06d}.pt"
            checkpoint = (
                {"iteration": done, "path": str(path), "score": score} if path.exists() else None
            )
            request = ctx.report(done, metrics, score=score, checkpoint=checkpoint,
                                 total_iterations=run_config.iterations)
            if request is None:
                return None
            stop.append(request)
            if not request.keeps_checkpoint:
                raise JobStopped(request)
            return True

        try:
            result = train(
                self.algorithm, run_config, algo, policy,
                recorder=_TaggedRecorder(recorder, ctx.job.id) if recorder else None,
                on_iteration=on_iteration,
            )
        finally:
            if recorder is not None:
                recorder.close()
        manager = CheckpointManager(checkpoints_dir, keep_best=run_config.keep_best)
        listed = manager.list()
        best = manager.best() or (listed[-1] if listed else None)
        latest = listed[-1] if listed else None
        return {
            "summary": result.summary(),
            "stopped_at": result.stopped_at,
            "checkpoint": str(best.path) if best else None,
            "latest_checkpoint": (
                {"iteration": latest.iteration, "path": str(latest.path), "score": latest.score}
                if latest else None
            ),
            "register_as": ctx.config.get("register_as"),
        }

    def evaluate(self, job: Job, *, which: Which = "best") -> Mapping[str, Any]:
        from learnloop.train import require_torch

        require_torch()
        from learnloop.train.checkpoints import CheckpointManager
        from learnloop.train.evaluation import evaluate_policy, heldout_plan
        from learnloop.train.policies import MLPPolicy
        from learnloop.train.rollout import RolloutCollector
        from learnloop.train.run import make_envs

        run_config, _, _ = self._configs(job.config)
        manager = CheckpointManager(Path(job.output_dir) / "checkpoints")
        listed = manager.list()
        info = (manager.best() if which == "best" else None) or (listed[-1] if listed else None)
        if info is None:
            raise NotFoundError(
                f"job {job.id} has no checkpoint yet; wait for its first one (every "
                f"{run_config.checkpoint_every} iterations)"
            )
        state = manager.load(info)
        if state is None:
            raise StoreError(f"checkpoint {info.path} of job {job.id} is corrupt; try 'latest'")
        policy = MLPPolicy.from_description(state["policy"])
        policy.load_state_dict(state["learner"]["policy_state"])
        collector = RolloutCollector(
            make_envs(
                run_config.env,
                8,
                split="heldout",
                time_limit=run_config.time_limit,
                **run_config.env_kwargs,
            ),
            seed=run_config.seed,
        )
        try:
            plan = heldout_plan(collector.envs[0], run_config.eval_episodes, seed=run_config.seed)
            result = evaluate_policy(policy, collector, plan, greedy=True, seed=run_config.seed)
        finally:
            collector.close()
        return {"checkpoint": str(info.path), "iteration": info.iteration, "which": which,
                **result.to_dict(), "score": result.score}


def _eval_score(metrics: Mapping[str, Any]) -> float | None:
    success = metrics.get("eval/success_rate")
    if success is not None:
        return float(success)
    reward = metrics.get("eval/avg_reward")
    return None if reward is None else float(reward)


# --- bandit ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BanditJobConfig:
    """A tool-selection bandit trained on the built-in suite, as a job."""

    policy: str = "linear_thompson"
    """Learner: epsilon_greedy_keyword, epsilon_greedy, ucb1, thompson, linucb, ..."""
    decisions: int = 5000
    """Tool decisions to learn from in total."""
    iterations: int = 10
    """Iterations the decisions are split into (a report and checkpoint after each)."""
    eval_every: int = 10
    """Evaluate held-out success every this many iterations (and at the end)."""
    checkpoint_every: int = 1
    """Save a checkpoint every this many iterations (and at the end)."""
    seed: int = 0
    """Seed of the suite and the learner."""
    record: bool = False
    """Record every decision as an episode (with ``metadata.job_id``)."""

    def __post_init__(self) -> None:
        for name in ("decisions", "iterations", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.iterations > self.decisions:
            raise ConfigError(
                f"iterations ({self.iterations}) cannot exceed decisions ({self.decisions})"
            )


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BanditRunner:
    """Contextual-bandit tool selection on the suite; checkpoints are JSON selector states.

    Config: :class:`BanditJobConfig` fields plus ``register_as``. The score is the
    expected held-out success of the learned selector.
    """

    def _config(self, config: Mapping[str, Any]) -> BanditJobConfig:
        fields = {k: v for k, v in config.items() if k != "register_as"}
        parsed: BanditJobConfig = config_from_mapping(BanditJobConfig, fields, "config")
        from learnloop.cli.train_bandit import POLICY_CHOICES

        if parsed.policy not in POLICY_CHOICES:
            raise ConfigError(f"config.policy {parsed.policy!r} is unknown; use one of "
                              f"{list(POLICY_CHOICES)}")
        return parsed

    def prepare(self, config: Mapping[str, Any]) -> PreparedJob:
        parsed = self._config(config)
        normalized = {**dataclasses.asdict(parsed),
                      "register_as": _register_as(config, "bandit-policy")}
        return PreparedJob(config=normalized, total_iterations=parsed.iterations,
                           estimate=Spend(rollouts=parsed.decisions))

    def _checkpoints(self, output_dir: Path) -> list[Path]:
        folder = output_dir / "checkpoints"
        return sorted(folder.glob("ckpt-*.json")) if folder.is_dir() else []

    def _load(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("skipping unreadable bandit checkpoint %s: %r", path, exc)
            return None
        return data if isinstance(data, dict) else None

    def run(self, ctx: JobContext) -> Mapping[str, Any]:
        import numpy as np

        from learnloop.bandits import ToolSelector, make_policy
        from learnloop.bandits.selector import default_featurizer, heldout_success
        from learnloop.envs import SuiteConfig, ToolUseSuite

        config = self._config(ctx.config)
        suite = ToolUseSuite(SuiteConfig(seed=config.seed))
        featurizer = default_featurizer(config.policy)
        folder = ctx.output_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        start, best, state = 0, None, None
        for path in reversed(self._checkpoints(ctx.output_dir)):
            state = self._load(path)
            if state is not None:
                break
        if state is not None:
            selector = ToolSelector.from_dict(state["selector"], featurizer=featurizer)
            rng = np.random.default_rng()
            rng.bit_generator.state = state["rng"]
            start, best = int(state["iteration"]), state.get("best_score")
        else:
            policy = make_policy(config.policy, dim=featurizer.dim, seed=config.seed)
            selector = ToolSelector(policy, featurizer=featurizer, tools=suite.tools,
                                    seed=config.seed, name=config.policy)
            rng = np.random.default_rng(config.seed + 1)
        recorder = None
        if config.record:
            from learnloop.recorder import Recorder

            recorder = Recorder(ctx.episodes)
        per_iteration = config.decisions // config.iterations
        try:
            for iteration in range(start, config.iterations):
                todo = per_iteration + (config.decisions % config.iterations
                                        if iteration == config.iterations - 1 else 0)
                rewards = self._decide(selector, suite, rng, todo, recorder, ctx.job.id)
                ctx.add_rollouts(todo)
                done = iteration + 1
                last = done == config.iterations
                metrics: dict[str, Any] = {"iteration": done, "bandit/reward_mean":
                                           float(np.mean(rewards)), "bandit/decisions": todo}
                score = None
                if done % config.eval_every == 0 or last:
                    score = heldout_success(selector, suite)
                    metrics["eval/heldout_success"] = score
                    best = score if best is None else max(best, score)
                path = folder / f"ckpt-{done:06d}.json"
                request = ctx.stop_request()
                if done % config.checkpoint_every == 0 or last or (
                    request is not None and request.keeps_checkpoint
                ):
                    _write_json_atomic(path, {"iteration": done, "score": score,
                                              "best_score": best, "selector": selector.to_dict(),
                                              "rng": rng.bit_generator.state})
                checkpoint = ({"iteration": done, "path": str(path), "score": score}
                              if path.exists() else None)
                request = ctx.report(done, metrics, score=score, checkpoint=checkpoint,
                                     total_iterations=config.iterations)
                if request is not None and not last:
                    if request.keeps_checkpoint and not path.exists():
                        _write_json_atomic(path, {"iteration": done, "score": score,
                                                  "best_score": best,
                                                  "selector": selector.to_dict(),
                                                  "rng": rng.bit_generator.state})
                    if request.kind is StopKind.CANCEL:
                        raise JobStopped(request)
                    return {"stopped_at": done, "checkpoint": str(path)}
        finally:
            if recorder is not None:
                recorder.close()
        final = self._checkpoints(ctx.output_dir)[-1]
        return {"heldout_success": best, "decisions": config.decisions,
                "checkpoint": str(final), "register_as": ctx.config.get("register_as")}

    @staticmethod
    def _decide(selector: Any, suite: Any, rng: Any, count: int, recorder: Any,
                job_id: str) -> list[float]:
        rewards: list[float] = []
        while len(rewards) < count:
            task = suite.train_tasks[int(rng.integers(len(suite.train_tasks)))]
            for sub in task.subtasks[: count - len(rewards)]:
                choice = selector.choose(sub.text)
                result = suite.execute(sub, choice.tool, rng)
                reward = 1.0 if result.success else 0.0
                selector.update(choice, reward)
                rewards.append(reward)
                if recorder is not None:
                    eid = recorder.begin(sub.text, agent_id=f"bandit-{selector.name}",
                                         kind="tool_call", metadata={"job_id": job_id})
                    recorder.step(eid, f"call {choice.tool}", tool=choice.tool, reward=reward,
                                  success=result.success, duration_s=result.duration_s)
                    recorder.complete(eid, status="success" if result.success else "failure")
        return rewards

    def evaluate(self, job: Job, *, which: Which = "best") -> Mapping[str, Any]:
        from learnloop.bandits import ToolSelector
        from learnloop.bandits.selector import default_featurizer, heldout_success
        from learnloop.envs import SuiteConfig, ToolUseSuite

        config = self._config(job.config)
        states = [(p, s) for p in self._checkpoints(Path(job.output_dir))
                  if (s := self._load(p)) is not None]
        if not states:
            raise NotFoundError(f"job {job.id} has no checkpoint yet; wait for its first one")
        path, state = states[-1]
        if which == "best":
            scored = [(p, s) for p, s in states if s.get("score") is not None]
            if scored:
                path, state = max(scored, key=lambda ps: (ps[1]["score"], ps[1]["iteration"]))
        selector = ToolSelector.from_dict(state["selector"],
                                          featurizer=default_featurizer(config.policy))
        score = heldout_success(selector, ToolUseSuite(SuiteConfig(seed=config.seed)))
        return {"checkpoint": str(path), "iteration": state["iteration"], "which": which,
                "heldout_success": score, "score": score}


