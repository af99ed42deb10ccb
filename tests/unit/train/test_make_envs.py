"""``make_envs``: the environments a run trains and evaluates on, and their time limits."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("torch")

from learnloop.errors import ConfigError
from learnloop.train import run as run_module
from learnloop.train.run import DEFAULT_TIME_LIMIT, make_envs


def _steps_until_done(env: object, action: int, *, cap: int = 5000) -> tuple[int, bool]:
    """Steps taken with a constant action until the episode ends, and whether it was cut."""
    env.reset(seed=0)  # type: ignore[attr-defined]
    for step in range(1, cap + 1):
        _, _, terminated, truncated, _ = env.step(action)  # type: ignore[attr-defined]
        if terminated or truncated:
            return step, bool(truncated and not terminated)
    raise AssertionError(f"the episode did not end within {cap} steps")


def test_an_environment_without_a_limit_gets_the_default_one_and_a_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_module, "_UNLIMITED_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="learnloop.train.run"):
        envs = make_envs("CliffWalking-v1", 2)
        make_envs("CliffWalking-v1", 8, split="heldout")  # warned once per environment id
    assert caplog.text.count("CliffWalking-v1 has no time limit of its own") == 1
    assert "--time-limit" in caplog.text
    # action 0 (up) from the start cell bumps into the wall: -1 per step, forever
    assert [_steps_until_done(env, 0) for env in envs] == [(DEFAULT_TIME_LIMIT, True)] * 2


def test_a_time_limit_overrides_the_environments_own() -> None:
    # CartPole's own limit is 500; alternating pushes keep the pole up for 12 steps
    env = make_envs("CartPole-v1", 1, time_limit=12)[0]
    env.reset(seed=0)
    flags = [env.step(k % 2)[2:4] for k in range(12)]
    assert flags[:-1] == [(False, False)] * 11 and flags[-1] == (False, True)


def test_suite_environments_keep_no_limit_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="learnloop.train.run"):
        plain = make_envs("learnloop/ToolUse-v0", 2)
    assert caplog.text == "" and all(type(env).__name__ == "ToolUseEnv" for env in plain)
    cut = make_envs("learnloop/ToolUse-v0", 2, time_limit=1)
    long_task = next(
        i for i, task in enumerate(cut[0].unwrapped.suite.train_tasks) if len(task.subtasks) >= 2
    )
    env = cut[0]
    outcomes = set()
    for seed in range(20):  # the best tool succeeds most of the time, fails now and then
        _, info = env.reset(seed=seed, options={"task_index": long_task})
        action = env.unwrapped.suite.tool_index(info["best_tool"])
        _, _, terminated, truncated, info = env.step(action)
        # a successful call is cut after 1 step; a failed one ends the chain (terminated,
        # and TimeLimit flags the step as truncated as well)
        assert (terminated, truncated) == (not info["success"], True)
        outcomes.add(info["success"])
    assert outcomes == {True, False}


@pytest.mark.parametrize("bad", [0, -3, True])
def test_bad_time_limits_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="time_limit must be an int >= 1 or None"):
        make_envs("CartPole-v1", 1, time_limit=bad)  # type: ignore[arg-type]


def test_run_config_checks_env_kwargs_and_time_limit() -> None:
    from learnloop.train.config import RunConfig

    assert RunConfig(env_kwargs={"map_name": "8x8"}).env_kwargs == {"map_name": "8x8"}
    with pytest.raises(ConfigError, match="may not set \\['split'\\]"):
        RunConfig(env_kwargs={"split": "heldout"})
    with pytest.raises(ConfigError, match="must hold JSON values"):
        RunConfig(env_kwargs={"f": object()})
    with pytest.raises(ConfigError, match=r"must be an object of gymnasium\.make arguments"):
        RunConfig(env_kwargs=[("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="time_limit must be an int >= 1"):
        RunConfig(time_limit="100")  # type: ignore[arg-type]  # a job's JSON config, say


def test_resume_check_names_what_differs_and_ignores_where_it_runs(tmp_path: object) -> None:
    from pathlib import Path
    from types import SimpleNamespace

    from learnloop.train.config import RunConfig
    from learnloop.train.run import TrainingRun

    described = {"kind": "lm", "model": "tiny", "config": {"device": "cpu", "lora_rank": 16}}
    learner = SimpleNamespace(policy=SimpleNamespace(describe=lambda: described))
    config = RunConfig(
        env="FrozenLake-v1", env_kwargs={"map_name": "8x8"}, output_dir=str(tmp_path)
    )
    run = TrainingRun(learner, config, algorithm="grpo")  # type: ignore[arg-type]
    saved = {"device": "cuda", "lora_rank": 16}  # another device: the same policy
    state = {
        "algorithm": "grpo",
        "settings": {"run": {"env": "FrozenLake-v1", "env_kwargs": {"map_name": "8x8"}}},
        "policy": {**described, "config": saved},
    }
    run._check_resumable(state, Path("ckpt"))
    state["policy"] = {**described, "config": {**saved, "lora_rank": 8}}
    state["settings"]["run"]["env_kwargs"] = {"map_name": "4x4"}
    with pytest.raises(ConfigError) as caught:
        run._check_resumable(state, Path("ckpt"))
    assert "env_kwargs.map_name '4x4' there, '8x8' here" in str(caught.value)
    assert "policy.config.lora_rank 8 there, 16 here" in str(caught.value)
    assert "device" not in str(caught.value)
