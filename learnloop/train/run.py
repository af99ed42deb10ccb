"""A training run: the loop around a learner, with evaluation, checkpoints and outputs.

The run only orchestrates. Each iteration it calls ``learner.train_iteration``;
every ``eval_every`` iterations it scores the policy on held-out episodes (and
the random baseline once); every ``checkpoint_every`` iterations it saves the
whole training state (policy, optimizer, RNG states, environments, metrics), so
that ``resume=True`` after a crash ends exactly where an uninterrupted run ends.

Output folder: ``checkpoints/``, ``metrics.jsonl`` (one line per iteration),
``evaluations.json``, ``summary.json``, ``curves.png`` and ``policy.pt``.

>>> import tempfile
>>> result = train(
...     "ppo", RunConfig(env="CartPole-v1", iterations=2, output_dir=tempfile.mkdtemp(),
...     eval_episodes=2, record=False), PPOConfig(num_envs=2, num_steps=16))
>>> result.iterations, len(result.history)
(2, 2)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import gymnasium as gym
import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError(
        f"learnloop.train needs torch: pip install 'torch==2.13.0' 'learnloop[train]' ({exc})"
    ) from exc

from learnloop.errors import ConfigError
from learnloop.train.checkpoints import CheckpointManager
from learnloop.train.config import GRPOConfig, PolicyConfig, PPOConfig, RunConfig, check_env_id
from learnloop.train.evaluation import EvalResult, evaluate_policy, heldout_plan, plot_curves
from learnloop.train.grpo import GRPO, suite_task_sampler
from learnloop.train.policies import MLPPolicy, RandomPolicy
from learnloop.train.ppo import PPO
from learnloop.train.rollout import EpisodeRecorder, RolloutCollector

__all__ = ["Learner", "RunResult", "TrainingRun", "make_envs", "train"]

logger = logging.getLogger(__name__)

Algorithm = Literal["ppo", "grpo"]


class Learner(Protocol):
    """What the run drives: PPO and GRPO both fit."""

    policy: MLPPolicy
    env_steps: int

    def train_iteration(self, iteration: int) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@dataclass(slots=True, kw_only=True)
class RunResult:
    """What a finished run reports (also written to ``summary.json``)."""

    algorithm: str
    env: str
    iterations: int
    env_steps: int
    elapsed_s: float
    resumed_from: int | None
    output_dir: str
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    stopped_at: int | None = None
    """Iteration at which ``on_iteration`` stopped the run early (None: it ran to the end)."""

    def summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        return {
            "algorithm": self.algorithm,
            "env": self.env,
            "iterations": self.iterations,
            "env_steps": self.env_steps,
            "elapsed_s": self.elapsed_s,
            "resumed_from": self.resumed_from,
            "output_dir": self.output_dir,
            "return_last100": last.get("rollout/return_last100"),
            "heldout": self.final,
            "baseline": self.baseline,
        }


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class TrainingRun:
    """Drives a learner for ``config.iterations`` with evaluation and checkpoints.

    Args:
        learner: a :class:`PPO` or :class:`GRPO` (anything with the :class:`Learner` methods).
        config: iterations, output folder, cadences, resume.
        evaluator: scores a policy on held-out episodes (None: no evaluation).
        algorithm: name written to the summary.
        settings: the run's configs as plain data, saved with each checkpoint.
    """

    def __init__(
        self,
        learner: Learner,
        config: RunConfig,
        *,
        evaluator: Callable[[Any], EvalResult] | None = None,
        algorithm: str = "ppo",
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.learner = learner
        self.config = config
        self.evaluator = evaluator
        self.algorithm = algorithm
        self.settings = dict(settings or {})
        self.output_dir = Path(config.output_dir)
        self.checkpoints = CheckpointManager(
            self.output_dir / "checkpoints", keep_best=config.keep_best
        )

    def _state(
        self, iteration: int, history: list[dict[str, Any]], evaluations: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "format": 1,
            "iteration": iteration,
            "algorithm": self.algorithm,
            "settings": self.settings,
            "policy": self.learner.policy.describe(),
            "learner": self.learner.state_dict(),
            "history": history,
            "evaluations": evaluations,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
        }

    def _check_resumable(self, state: Mapping[str, Any], path: Path) -> None:
        """Refuse a checkpoint of another algorithm, environment or policy shape."""
        saved_run = state.get("settings", {}).get("run", {})
        theirs = _flatten(
            {
                "algorithm": state.get("algorithm"),
                "env": saved_run.get("env", self.config.env),
                "env_kwargs": saved_run.get("env_kwargs", {}),  # older checkpoints: none
                "policy": state.get("policy"),
            }
        )
        ours = _flatten(
            {
                "algorithm": self.algorithm,
                "env": self.config.env,
                "env_kwargs": self.config.env_kwargs,
                "policy": self.learner.policy.describe(),
            }
        )
        differ = [
            key
            for key in sorted(theirs.keys() | ours.keys())
            if theirs.get(key) != ours.get(key) and key not in _RUNTIME_POLICY_KEYS
        ]
        if differ:
            details = ", ".join(
                f"{key} {theirs.get(key)!r} there, {ours.get(key)!r} here" for key in differ
            )
            raise ConfigError(
                f"cannot resume from {path}: it comes from another run ({details}); resume "
                "with that run's settings, or train into another --output-dir"
            )

    def _write_metrics(self, history: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(_clean(row)) + "\n" for row in history)
        (self.output_dir / "metrics.jsonl").write_text(lines)

    def run(
        self, on_iteration: Callable[[int, Mapping[str, Any]], bool | None] | None = None
    ) -> RunResult:
        """Train from scratch, or from the latest checkpoint with ``resume``.

        ``on_iteration(done, metrics)`` is called after each iteration (and after
        that iteration's checkpoint, if one was due). Returning True stops the run
        there: a checkpoint of that iteration is written if none was due, and the
        result has ``stopped_at`` set and no final outputs (policy, summary, plot);
        ``resume=True`` later continues from that checkpoint.
        """
        config = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        history: list[dict[str, Any]] = []
        evaluations: list[dict[str, Any]] = []
        start, resumed_from = 0, None
        refuse_earlier_run(config)
        if config.resume:
            latest = self.checkpoints.load_latest()
            if latest is None:
                logger.info(
                    "no valid checkpoint in %s: starting from scratch", self.checkpoints.directory
                )
            else:
                state, info = latest
                self._check_resumable(state, info.path)
                self.learner.load_state_dict(state["learner"])
                history, evaluations = list(state["history"]), list(state["evaluations"])
                torch.set_rng_state(state["torch_rng"])
                np.random.set_state(state["numpy_rng"])
                random.setstate(state["python_rng"])
                start = resumed_from = info.iteration
                logger.info("resumed from iteration %d (%s)", start, info.path)
        baseline = evaluations[0]["baseline"] if evaluations else None
        if self.evaluator is not None and baseline is None:
            baseline = self.evaluator(RandomPolicy(self.learner.policy.num_actions)).to_dict()
        for iteration in range(start, config.iterations):
            metrics: dict[str, Any] = {
                "iteration": iteration + 1,
                **self.learner.train_iteration(iteration),
            }
            done = iteration + 1
            last = done == config.iterations
            score = None
            if self.evaluator is not None and (done % config.eval_every == 0 or last):
                result = self.evaluator(self.learner.policy)
                evaluations.append(
                    {"iteration": done, "policy": result.to_dict(), "baseline": baseline}
                )
                score = result.score
                metrics.update({f"eval/{k}": v for k, v in result.to_dict().items()})
            history.append(metrics)
            saved = done % config.checkpoint_every == 0 or last
            if saved:
                self._save(done, history, evaluations, score, metrics)
            if on_iteration is not None and on_iteration(done, metrics) and not last:
                if not saved:
                    self._save(done, history, evaluations, score, metrics)
                logger.info("stopped at iteration %d on request (checkpoint kept)", done)
                return RunResult(
                    algorithm=self.algorithm,
                    env=self.config.env,
                    iterations=len(history),
                    env_steps=self.learner.env_steps,
                    elapsed_s=time.perf_counter() - started,
                    resumed_from=resumed_from,
                    output_dir=str(self.output_dir),
                    history=history,
                    evaluations=evaluations,
                    final=evaluations[-1]["policy"] if evaluations else None,
                    baseline=baseline,
                    stopped_at=done,
                )
        return self._finish(
            history, evaluations, baseline, resumed_from, time.perf_counter() - started
        )

    def _save(
        self,
        done: int,
        history: list[dict[str, Any]],
        evaluations: list[dict[str, Any]],
        score: float | None,
        metrics: Mapping[str, Any],
    ) -> None:
        self.checkpoints.save(
            self._state(done, history, evaluations),
            iteration=done,
            score=score,
            metrics=_clean({k: v for k, v in metrics.items() if not k.startswith("time/")}),
        )
        self._write_metrics(history)

    def _finish(
        self,
        history: list[dict[str, Any]],
        evaluations: list[dict[str, Any]],
        baseline: dict[str, Any] | None,
        resumed_from: int | None,
        elapsed: float,
    ) -> RunResult:
        self._write_metrics(history)
        self.learner.policy.save(self.output_dir / "policy.pt")
        result = RunResult(
            algorithm=self.algorithm,
            env=self.config.env,
            iterations=len(history),
            env_steps=self.learner.env_steps,
            elapsed_s=elapsed,
            resumed_from=resumed_from,
            output_dir=str(self.output_dir),
            history=history,
            evaluations=evaluations,
            final=evaluations[-1]["policy"] if evaluations else None,
            baseline=baseline,
        )
        (self.output_dir / "evaluations.json").write_text(json.dumps(_clean(evaluations), indent=1))
        (self.output_dir / "summary.json").write_text(
            json.dumps(_clean({**result.summary(), "settings": self.settings}), indent=1)
        )
        if evaluations:
            try:
                plot_curves(history, evaluations, self.output_dir / "curves.png")
            except ImportError as exc:
                logger.warning("no plot: %s", exc)
        return result


def refuse_earlier_run(config: RunConfig) -> None:
    """Raise ConfigError if ``config.output_dir`` holds checkpoints and resume is off.

    Starting over there would mix the new run's checkpoints with the earlier
    run's, and a later ``--resume`` could pick up either.
    """
    directory = Path(config.output_dir) / "checkpoints"
    if config.resume or not CheckpointManager.found_in(directory):
        return
    earlier = CheckpointManager(directory).list()
    upto = f" (up to iteration {earlier[-1].iteration})" if earlier else ""
    raise ConfigError(
        f"{config.output_dir} holds checkpoints of an earlier run{upto}; pass --resume to "
        f"continue it, or train into another --output-dir (or delete {directory}) to start over"
    )


# --- building a run from configs -------------------------------------------------------


#: Steps after which episodes of an environment without a limit of its own are cut.
DEFAULT_TIME_LIMIT = 1000
#: Environment ids already warned about having no limit (once per process).
_UNLIMITED_WARNED: set[str] = set()


def make_envs(
    env_id: str,
    num_envs: int,
    *,
    split: Literal["train", "heldout"] = "train",
    time_limit: int | None = None,
    **kwargs: Any,
) -> list[gym.Env[Any, Any]]:
    """``num_envs`` environments of ``env_id``; suite environments share one suite.

    ``split="heldout"`` selects the suite's held-out tasks; other environments
    have no split (held-out episodes use disjoint seeds instead). ``time_limit``
    cuts episodes after that many steps (Gymnasium's ``TimeLimit``); None keeps the
    environment's own limit, or :data:`DEFAULT_TIME_LIMIT` for one that has none,
    since an episode that never ends would stall training and evaluation.
    """
    import learnloop.envs  # registers the suite's ids with Gymnasium

    check_env_id(env_id)
    if time_limit is not None and (
        isinstance(time_limit, bool) or not isinstance(time_limit, int) or time_limit < 1
    ):
        raise ConfigError(f"time_limit must be an int >= 1 or None, got {time_limit!r}")
    suite = _is_suite(env_id)  # its episodes end after at most MAX_SUBTASKS steps
    if time_limit is None and not suite and gym.spec(env_id).max_episode_steps is None:
        time_limit = DEFAULT_TIME_LIMIT
        if env_id not in _UNLIMITED_WARNED:
            _UNLIMITED_WARNED.add(env_id)
            logger.warning(
                "%s has no time limit of its own; its episodes are cut at %d steps "
                "(set another with --time-limit)",
                env_id,
                time_limit,
            )
    options: dict[str, Any] = {"split": split} if suite else {}
    if time_limit is not None:
        options["max_episode_steps"] = time_limit
    try:
        first = gym.make(env_id, **options, **kwargs)
    except TypeError as exc:  # an argument the environment does not take
        raise ConfigError(
            f"{env_id} does not take the arguments {kwargs!r} ({exc}); fix --env-kwargs"
        ) from None
    except (gym.error.DependencyNotInstalled, ImportError) as exc:  # e.g. Box2D, ALE
        raise ConfigError(
            f"{env_id} needs a package that is not installed here: {exc}; install it in "
            "this environment and run again"
        ) from None
    if not isinstance(first.action_space, gym.spaces.Discrete):
        raise ConfigError(
            f"{env_id} has action space {first.action_space}; only Discrete action spaces "
            "train here"
        )
    inner = first.unwrapped
    if isinstance(inner, learnloop.envs.ToolUseEnv):
        envs: list[gym.Env[Any, Any]] = [inner]
        envs += [
            learnloop.envs.ToolUseEnv(inner.suite, split, config=inner.config)
            for _ in range(num_envs - 1)
        ]
        if time_limit is None:
            return envs
        return [gym.wrappers.TimeLimit(env, time_limit) for env in envs]
    return [first, *(gym.make(env_id, **options, **kwargs) for _ in range(num_envs - 1))]


#: Policy settings a resumed run may change: where and how it runs, not what it learns.
_RUNTIME_POLICY_KEYS = frozenset(
    f"policy.config.{name}" for name in ("device", "dtype", "gradient_checkpointing", "seed")
)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {"a.b": leaf}; lists and tuples compare as lists."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): list(value) if isinstance(value, (list, tuple)) else value}


def _is_suite(env_id: str) -> bool:
    return env_id.startswith("learnloop/ToolUse")


def train(
    algorithm: Algorithm,
    run_config: RunConfig,
    algo_config: PPOConfig | GRPOConfig | None = None,
    policy_config: PolicyConfig = PolicyConfig(),
    *,
    recorder: EpisodeRecorder | None = None,
    on_iteration: Callable[[int, Mapping[str, Any]], bool | None] | None = None,
) -> RunResult:
    """Build the environments, policy and learner from configs, and run.

    Episodes are recorded through ``recorder`` when given; ``on_iteration`` may stop
    the run after a checkpoint by returning True (see :meth:`TrainingRun.run`). See
    the module example.
    """
    if algorithm == "ppo":
        config: PPOConfig | GRPOConfig = algo_config if algo_config is not None else PPOConfig()
        if not isinstance(config, PPOConfig):
            raise ConfigError(f"algorithm 'ppo' needs a PPOConfig, got {type(config).__name__}")
        num_envs = config.num_envs
    elif algorithm == "grpo":
        config = algo_config if algo_config is not None else GRPOConfig()
        if not isinstance(config, GRPOConfig):
            raise ConfigError(f"algorithm 'grpo' needs a GRPOConfig, got {type(config).__name__}")
        num_envs = config.num_attempts
    else:
        raise ConfigError(f"unknown algorithm {algorithm!r}; use 'ppo' or 'grpo'")
    torch.set_num_threads(run_config.num_threads)
    seed = run_config.seed
    if run_config.executor == "lockstep":
        collector: Any = RolloutCollector(
            make_envs(
                run_config.env,
                num_envs,
                time_limit=run_config.time_limit,
                **run_config.env_kwargs,
            ),
            seed=seed,
            recorder=recorder,
        )
    elif algorithm == "ppo":
        raise ConfigError(
            f"executor {run_config.executor!r} runs one attempt per task, which PPO's "
            "fixed-length rollouts cannot use; use --executor lockstep with ppo"
        )
    else:
        from learnloop.jobs.ray_launcher import RayConnection
        from learnloop.train.ray_executor import RayConfig, make_collector

        collector = make_collector(
            run_config.env,
            num_envs,
            executor=run_config.executor,
            ray=RayConfig(connection=RayConnection(address=run_config.ray_address)),
            seed=seed,
            recorder=recorder,
            time_limit=run_config.time_limit,
            env_kwargs=run_config.env_kwargs,
        )
    policy = MLPPolicy(
        collector.encoder.dim,
        collector.num_actions,
        policy_config,
        value_head=algorithm == "ppo",
        seed=seed,
    )
    learner: PPO | GRPO
    if isinstance(config, PPOConfig):
        learner = PPO(policy, collector, config, num_iterations=run_config.iterations, seed=seed)
    else:
        learner = GRPO(
            policy,
            collector,
            config,
            num_iterations=run_config.iterations,
            task_sampler=suite_task_sampler(collector.envs[0]),
            seed=seed,
        )
    eval_collector = RolloutCollector(
        make_envs(
            run_config.env,
            8,
            split="heldout",
            time_limit=run_config.time_limit,
            **run_config.env_kwargs,
        ),
        seed=seed,
    )
    plan = heldout_plan(eval_collector.envs[0], run_config.eval_episodes, seed=seed)

    def evaluator(candidate: Any) -> EvalResult:
        return evaluate_policy(candidate, eval_collector, plan, greedy=True, seed=seed)

    settings = {
        "run": dataclasses.asdict(run_config),
        algorithm: dataclasses.asdict(config),
        "policy": dataclasses.asdict(policy_config),
    }
    run = TrainingRun(
        learner, run_config, evaluator=evaluator, algorithm=algorithm, settings=settings
    )
    try:
        return run.run(on_iteration)
    finally:
        collector.close()
        eval_collector.close()
