"""The offline demo: the whole loop improving an agent on the built-in suite.

Stages, each printing what it did and what it measured:

1. **record** — a scripted agent (the best fixed tool per keyword category) works
   through training tasks; every attempt is recorded as an episode with per-step
   reward components, secrets redacted, into the SQLite store.
2. **bandit** — a contextual bandit learns which tool to call from the recorded
   stream of decisions; held-out success before and after.
3. **apo** — the prompt of an LLM agent (the embedded SmolLM2-135M-Instruct, served
   on 127.0.0.1) is optimized by re-running the agent; held-out success of the
   starting and the optimized prompt, with confidence intervals (needs the
   ``local`` extra and the model wheel).
4. **rl** — a small policy is trained with PPO on the suite (needs the ``train``
   extra: torch); held-out success before and after.
5. **ab** — the learned tool selector is tried against the scripted agent in a
   simulated A/B test with staged rollout; the result table.

Everything runs offline on embedded defaults. Stages whose optional dependency is
missing are skipped with a message naming the extra to install.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from learnloop.errors import ConfigError

__all__ = ["DEMO_STAGES", "DemoConfig", "DemoReport", "run_demo"]

logger = logging.getLogger(__name__)

DEMO_STAGES = ("record", "bandit", "apo", "rl", "ab")


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoConfig:
    """What the demo runs and where it writes."""

    output_dir: Path = Path("runs/demo")
    """Folder for the store, the learned policy and the reports."""
    store_url: str | None = None
    """Store URL; default: a fresh SQLite file in ``output_dir``."""
    seed: int = 0
    """Seed of the suite, the agents and the learners."""
    record_episodes: int = 300
    """Training tasks the scripted agent attempts in the record stage."""
    bandit_decisions: int = 3000
    """Tool decisions the bandit stage learns from."""
    rl_iterations: int = 40
    """PPO iterations of the rl stage."""
    apo_budget_calls: int = 400
    """Model calls the apo stage's search may make (the held-out check is extra)."""
    stages: tuple[str, ...] = DEMO_STAGES
    """Which stages to run, in order."""

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in DEMO_STAGES]
        if unknown:
            raise ConfigError(f"unknown demo stage(s) {unknown}; choose from {list(DEMO_STAGES)}")
        if self.record_episodes < 1:
            raise ConfigError(f"record_episodes must be >= 1, got {self.record_episodes}")
        if self.apo_budget_calls < 1:
            raise ConfigError(f"apo_budget_calls must be >= 1, got {self.apo_budget_calls}")
        if self.rl_iterations < 1:
            raise ConfigError(f"rl_iterations must be >= 1, got {self.rl_iterations}")
        if self.bandit_decisions < 1:
            raise ConfigError(f"bandit_decisions must be >= 1, got {self.bandit_decisions}")


@dataclass(slots=True)
class DemoReport:
    """What each stage measured, keyed by stage name."""

    store_url: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class _DemoState:
    """What stages hand on to later stages."""

    config: DemoConfig
    store: Any
    report: DemoReport
    say: Callable[[str], None]
    suite: Any = None
    baseline: Any = None  # the scripted agent's policy: (subtask, rng) -> tool
    selector: Any = None  # the tool selector the bandit stage learned
    policy_versions: dict[str, int] = field(default_factory=dict)


def _suite(state: _DemoState) -> Any:
    if state.suite is None:
        from learnloop.envs import SuiteConfig, ToolUseSuite
        from learnloop.envs.baselines import keyword_policy

        state.suite = ToolUseSuite(SuiteConfig(seed=state.config.seed))
        state.baseline = keyword_policy(state.suite)
    return state.suite


def _expected_task_success(suite: Any, choose: Callable[[Any], str]) -> float:
    """Mean over held-out tasks of the product of the chosen tools' success probabilities."""
    total = 0.0
    for task in suite.heldout_tasks:
        p = 1.0
        for sub in task.subtasks:
            p *= suite.success_probability(sub, choose(sub))
        total += p
    return total / len(suite.heldout_tasks)


def _record_stage(state: _DemoState) -> None:
    from learnloop.envs import EnvConfig, ToolUseEnv
    from learnloop.recorder import Recorder
    from learnloop.store import EpisodeQuery

    config, store, say = state.config, state.store, state.say
    suite = _suite(state)
    rng = np.random.default_rng(config.seed)
    with Recorder(store) as recorder:
        env = ToolUseEnv(suite, "train", config=EnvConfig(agent_id="scripted"), recorder=recorder)
        for i in range(config.record_episodes):
            _, info = env.reset(
                seed=config.seed + i, options={"task_index": i % len(suite.train_tasks)}
            )
            done = False
            while not done:
                assert env.task is not None
                subtask = env.task.subtasks[info["subtask_index"]]
                action = suite.tool_index(state.baseline(subtask, rng))
                _, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
        env.close()
    episodes = store.query_episodes(EpisodeQuery(agent_id="scripted"))
    successes = sum(e.is_success for e in episodes)
    steps = sum(len(e.steps) for e in episodes)
    mean_reward = float(np.mean([e.total_reward for e in episodes])) if episodes else 0.0
    state.report.stages["record"] = {
        "episodes": len(episodes),
        "steps": steps,
        "success_rate": successes / max(1, len(episodes)),
        "mean_reward": mean_reward,
    }
    say(
        f"[record] scripted agent (best fixed tool per keyword category): {len(episodes)} "
        f"episodes, {steps} steps stored in {store.url}; success "
        f"{successes / max(1, len(episodes)):.1%}, mean reward {mean_reward:.2f}"
    )
    example = episodes[0]
    first = example.steps[0]
    say(
        f"[record] e.g. task {example.task!r}: tool {first.tool}, success {first.success}, "
        f"reward {first.reward:.2f} = {dict(first.reward_components)}"
    )


def _bandit_stage(state: _DemoState) -> None:
    import json

    from learnloop.agent import ToolAgent, ToolAgentConfig
    from learnloop.bandits import ToolSelector, make_policy
    from learnloop.bandits.selector import default_featurizer
    from learnloop.recorder import Recorder
    from learnloop.registry import Registry

    config, say = state.config, state.say
    suite = _suite(state)
    subtasks = {s.text: s for t in (*suite.train_tasks, *suite.heldout_tasks) for s in t.subtasks}
    rng = np.random.default_rng(config.seed + 1)

    def make_tool(tool: str) -> Callable[[str], Any]:
        def run(text: str) -> Any:
            result = suite.execute(subtasks[text], tool, rng)
            if not result.success:
                raise RuntimeError(result.error)
            return result.output

        return run

    policy_name = "linear_thompson"
    featurizer = default_featurizer(policy_name)
    selector = ToolSelector(
        make_policy(policy_name, dim=featurizer.dim, seed=config.seed),
        featurizer=featurizer,
        seed=config.seed,
        name=policy_name,
    )
    baseline_success = _expected_task_success(suite, lambda sub: state.baseline(sub, rng))
    oracle_success = _expected_task_success(suite, lambda sub: sub.best_tool)
    with Recorder(state.store) as recorder:
        agent = ToolAgent(selector, recorder=recorder, config=ToolAgentConfig(agent_id="bandit"))
        for tool in suite.tools:
            agent.register_tool(
                tool,
                make_tool(tool),
                expected_duration_s=suite.expected_duration(tool),
                quality_check=suite.quality_checks[tool],
            )
        before = _expected_task_success(suite, lambda sub: _greedy(selector, sub.text))
        decisions = 0
        while decisions < config.bandit_decisions:
            task = suite.train_tasks[int(rng.integers(len(suite.train_tasks)))]
            for sub in task.subtasks:
                agent.execute_with_learning(sub.text, context=sub.task_type)
                decisions += 1
        agent.close()
    after = _expected_task_success(suite, lambda sub: _greedy(selector, sub.text))
    state.selector = selector
    path = config.output_dir / "learned_policy.json"
    path.write_text(json.dumps(selector.to_dict()), encoding="utf-8")
    registry = Registry(state.store)
    baseline_version = registry.register(
        "tool-policy",
        {"kind": "keyword", "description": "best fixed tool per keyword category"},
        kind="policy",
        source="demo:scripted",
    )
    registry.set_label("tool-policy", "production", baseline_version.version, force=True)
    candidate = registry.register_candidate(
        "tool-policy", selector.to_dict(), kind="policy", source="demo:bandit"
    )
    state.policy_versions = {"baseline": baseline_version.version, "candidate": candidate.version}
    state.report.stages["bandit"] = {
        "policy": policy_name,
        "decisions": decisions,
        "heldout_task_success_untrained": before,
        "heldout_task_success_learned": after,
        "heldout_task_success_scripted": baseline_success,
        "heldout_task_success_oracle": oracle_success,
        "learned_policy": str(path),
        "registered_version": candidate.version,
    }
    say(
        f"[bandit] {policy_name} learned tool choice from {decisions} recorded decisions; "
        f"held-out task success (expected): untrained {before:.1%} -> learned {after:.1%} "
        f"(scripted agent {baseline_success:.1%}, oracle {oracle_success:.1%})"
    )
    say(f"[bandit] wrote {path}; registered tool-policy v{candidate.version} as candidate")


def _rl_stage(state: _DemoState) -> None:
    import importlib.util

    config, say = state.config, state.say
    if importlib.util.find_spec("torch") is None:
        say("[rl] needs torch: pip install 'torch==2.13.0' 'learnloop[train]'; skipped")
        return
    from learnloop.recorder import Recorder
    from learnloop.registry import Registry
    from learnloop.train import PPOConfig, RunConfig, train

    output = config.output_dir / "rl"
    shutil.rmtree(output / "checkpoints", ignore_errors=True)  # the demo starts over each time
    with Recorder(state.store) as recorder:
        result = train(
            "ppo",
            RunConfig(
                env="learnloop/ToolUse-v0",
                iterations=config.rl_iterations,
                output_dir=str(output),
                seed=config.seed,
                eval_every=max(1, config.rl_iterations // 4),
                checkpoint_every=max(1, config.rl_iterations // 4),
                eval_episodes=200,
            ),
            PPOConfig(),
            recorder=recorder,
        )
    final = result.final or {}
    baseline = result.baseline or {}
    checkpoint = output / "policy.pt"
    version = Registry(state.store).register_candidate(
        "suite-policy",
        str(checkpoint),
        kind="checkpoint",
        source="demo:ppo",
        metadata={"heldout_success": final.get("success_rate")},
    )
    state.report.stages["rl"] = {
        "algorithm": "ppo",
        "iterations": result.iterations,
        "env_steps": result.env_steps,
        "elapsed_s": result.elapsed_s,
        "heldout_success_random": baseline.get("success_rate"),
        "heldout_success_trained": final.get("success_rate"),
        "heldout_tool_accuracy_trained": final.get("tool_accuracy"),
        "output_dir": str(output),
        "registered_version": version.version,
    }
    say(
        f"[rl] PPO trained an MLP policy over text features for {result.iterations} iterations "
        f"({result.env_steps} env steps, {result.elapsed_s:.0f} s); held-out task success: random "
        f"{_percent(baseline.get('success_rate'))} -> trained {_percent(final.get('success_rate'))}"
    )
    say(
        f"[rl] curves and checkpoints in {output}; registered suite-policy "
        f"v{version.version} as candidate"
    )


def _apo_stage(state: _DemoState) -> None:
    import importlib.util

    config, say = state.config, state.say
    missing = [m for m in ("openai", "xllamacpp") if importlib.util.find_spec(m) is None]
    if missing:
        say(f"[apo] needs {', '.join(missing)}: pip install 'learnloop[local]'; skipped")
        return
    from learnloop.prompts import LLMEndpointConfig, open_llm_client
    from learnloop.prompts.optimizer import APOConfig, optimize_prompt

    suite = _suite(state)
    apo_config = APOConfig(
        generations=3,
        population=6,
        batch_size=24,
        heldout_size=80,
        budget_calls=config.apo_budget_calls,
        seed=config.seed,
        suite_seed=config.seed,
    )
    say(
        "[apo] optimizing the LLM agent's prompt with the embedded SmolLM2-135M-Instruct "
        f"(budget {config.apo_budget_calls} model calls; a few minutes)..."
    )
    try:
        with open_llm_client(LLMEndpointConfig()) as client:
            result = optimize_prompt(apo_config, client=client, suite=suite, store=state.store)
    except FileNotFoundError as exc:  # the model wheel is not installed
        say(f"[apo] {exc}; skipped")
        return
    result.write(config.output_dir / "apo", dict(suite.tool_descriptions))
    summary = result.summary()
    state.report.stages["apo"] = summary
    base, best, diff = result.baseline.success, result.optimized.success, result.difference
    say(
        f"[apo] held-out success (expected, 95% CI): starting prompt {base.mean:.1%} "
        f"[{base.low:.1%}, {base.high:.1%}] -> optimized {best.mean:.1%} "
        f"[{best.low:.1%}, {best.high:.1%}]; difference {100 * diff.difference:+.1f} points "
        f"[{100 * diff.low:+.1f}, {100 * diff.high:+.1f}]"
    )
    say(f"[apo] {summary['verdict']}; {result.llm_calls} model calls, {result.elapsed_s:.0f} s")
    say(
        "[apo] best_prompt.txt, all_variants.json, optimization_summary.json in "
        f"{config.output_dir / 'apo'}"
    )


def _percent(value: Any) -> str:
    return "-" if value is None else f"{value:.1%}"


def _greedy(selector: Any, text: str) -> str:
    probabilities: dict[str, float] = selector.probabilities(text)
    return max(probabilities, key=lambda tool: probabilities[tool])


def _ab_stage(state: _DemoState) -> None:
    from learnloop.experiments import Arm, ExperimentConfig, Experiments, RolloutPolicy
    from learnloop.registry import Registry

    config, say = state.config, state.say
    if state.selector is None or not state.policy_versions:
        say("[ab] needs the bandit stage (a learned policy to roll out); skipped")
        return
    suite = _suite(state)
    registry = Registry(state.store)
    experiments = Experiments(state.store, registry)
    name = f"tool-policy-rollout-{config.seed}"
    experiments.start_rollout(
        name,
        state.policy_versions["baseline"],
        state.policy_versions["candidate"],
        resource="tool-policy",
        policy=RolloutPolicy(
            stages=(0.1, 0.25, 0.5, 1.0), min_samples_per_stage=150, min_duration_s=0.0
        ),
        config=ExperimentConfig(min_samples=50),
    )
    rng = np.random.default_rng(config.seed + 2)
    agents: dict[Arm, Callable[[Any], str]] = {
        Arm.BASELINE: lambda sub: state.baseline(sub, rng),
        Arm.CANDIDATE: lambda sub: _greedy(state.selector, sub.text),
    }
    tasks = suite.heldout_tasks
    unit = 0
    decision = None
    for _round in range(200):  # each round: a batch of users, then one look at the rollout
        assigner = experiments.assigner(name)
        outcomes: dict[Arm, list[bool]] = {Arm.BASELINE: [], Arm.CANDIDATE: []}
        for _ in range(200):
            assignment = assigner(f"user-{unit}")
            task = tasks[unit % len(tasks)]
            unit += 1
            choose = agents[assignment.arm]
            success = all(suite.execute(sub, choose(sub), rng).success for sub in task.subtasks)
            outcomes[assignment.arm].append(success)
        for arm, successes in outcomes.items():
            if successes:
                experiments.record_outcomes(name, arm, successes=successes)
        decision = experiments.step_rollout(name)
        if decision.action.value in ("complete", "rollback"):
            break
    report = experiments.status(name)
    production = registry.resolve("tool-policy", "production")
    arms = {
        arm.value: {"n": r.num_outcomes, "success": r.metrics["success"].mean}
        for arm, r in report.arms.items()
        if "success" in r.metrics
    }
    state.report.stages["ab"] = {
        "experiment": name,
        "status": report.experiment.status.value,
        "decisions": [d.action.value for d in report.experiment.decisions],
        "arms": arms,
        "production_version": production,
        "units": unit,
    }
    say(
        f"[ab] staged rollout 10% -> 25% -> 50% -> 100% over {unit} simulated users: "
        f"{report.experiment.status.value}; production is now tool-policy v{production}"
    )
    for arm_name, values in arms.items():
        say(f"[ab]   {arm_name:9s} n={values['n']:5d} success {values['success']:.1%}")
    if decision is not None:
        say(f"[ab] last decision: {decision.action.value}: {decision.reason}")


_STAGES: dict[str, Callable[[_DemoState], None]] = {
    "record": _record_stage,
    "bandit": _bandit_stage,
    "apo": _apo_stage,
    "rl": _rl_stage,
    "ab": _ab_stage,
}


def run_demo(config: DemoConfig, say: Callable[[str], None] = print) -> DemoReport:
    """Run the demo's stages in order and return what they measured."""
    from learnloop.store import open_store

    config.output_dir.mkdir(parents=True, exist_ok=True)
    url = config.store_url or f"sqlite:///{config.output_dir / 'learnloop.db'}"
    if config.store_url is None:
        for suffix in ("", "-wal", "-shm"):  # a fresh store each run
            (config.output_dir / f"learnloop.db{suffix}").unlink(missing_ok=True)
    store = open_store(url)
    report = DemoReport(store_url=store.url)
    state = _DemoState(config=config, store=store, report=report, say=say)
    try:
        for stage in config.stages:
            runner = _STAGES.get(stage)
            if runner is None:
                say(f"[{stage}] not available in this build; skipped")
                continue
            runner(state)
        _summary(state)
    finally:
        store.close()
    return report


def _summary(state: _DemoState) -> None:
    """One line per agent: held-out task success, worst to best."""
    stages = state.report.stages
    rows: list[tuple[str, float]] = []
    if "bandit" in stages:
        b = stages["bandit"]
        rows += [
            ("untrained tool selector", b["heldout_task_success_untrained"]),
            ("scripted agent (keyword rules)", b["heldout_task_success_scripted"]),
            ("bandit-learned tool selector", b["heldout_task_success_learned"]),
        ]
    if "apo" in stages:
        apo = stages["apo"]
        rows.append(("LLM agent, starting prompt (SmolLM2)", apo["baseline"]["success"]["mean"]))
        final = apo["optimized"] if apo["significant"] else apo["baseline"]
        rows.append(("LLM agent, optimized prompt (SmolLM2)", final["success"]["mean"]))
    if "rl" in stages and stages["rl"].get("heldout_success_trained") is not None:
        rows.append(("PPO-trained policy", stages["rl"]["heldout_success_trained"]))
    if "bandit" in stages:
        rows.append(
            (
                "oracle (knows each task's best tool)",
                stages["bandit"]["heldout_task_success_oracle"],
            )
        )
    if not rows:
        return
    state.say("held-out task success:")
    for name, value in rows:
        state.say(f"  {name:38s} {value:6.1%}")
    if "ab" in stages:
        state.say(
            f"  rollout of the learned selector: {stages['ab']['status']}; production is "
            f"tool-policy v{stages['ab']['production_version']}"
        )
