"""Tests of learnloop.envs.gym_env: Gymnasium API, rewards, history features, recording."""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from learnloop.envs import (
    DEGRADING_ENV_ID,
    ENV_ID,
    EnvConfig,
    SuiteConfig,
    ToolUseEnv,
    ToolUseSuite,
)
from learnloop.errors import InvalidInputError
from learnloop.recorder import Recorder
from learnloop.store import open_store


@pytest.fixture(scope="module")
def suite() -> ToolUseSuite:
    return ToolUseSuite(SuiteConfig(seed=0, num_tasks=200))


def _multi_step_index(env: ToolUseEnv, length: int) -> int:
    return next(i for i, t in enumerate(env.suite.tasks(env.split)) if len(t.subtasks) == length)


def test_check_env_passes() -> None:
    # through gymnasium.make so the checker can also try the other render modes
    check_env(gymnasium.make(ENV_ID, suite_config=SuiteConfig(num_tasks=100)).unwrapped)
    check_env(
        gymnasium.make(ENV_ID, split="heldout", render_mode="ansi").unwrapped,
        skip_render_check=False,
    )


def test_registered_ids_make_envs() -> None:
    env = gymnasium.make(ENV_ID, split="heldout")
    assert isinstance(env.unwrapped, ToolUseEnv) and env.unwrapped.split == "heldout"
    observation, info = env.reset(seed=0)
    assert env.observation_space.contains(observation)
    assert info["split"] == "heldout"
    degrading = gymnasium.make(DEGRADING_ENV_ID).unwrapped
    assert isinstance(degrading, ToolUseEnv)
    assert degrading.suite.config.degrade_tools == ("web_search", "code_grep")
    import learnloop.envs

    learnloop.envs._register()  # registering twice is harmless


def test_oracle_episode_rewards_and_info(suite: ToolUseSuite) -> None:
    env = ToolUseEnv(suite)
    index = _multi_step_index(env, 3)
    observation, info = env.reset(seed=4, options={"task_index": index})
    task = env.task
    assert task is not None and info["task_text"] == task.text and info["num_subtasks"] == 3
    assert info["action_mask"].dtype == np.int8 and info["action_mask"].sum() == len(suite.tools)
    assert info["tools"] == suite.tools and info["reward_components"] == {}
    np.testing.assert_array_equal(
        observation[: suite.feature_dim], suite.featurize(task.subtasks[0].text)
    )
    assert not observation[suite.feature_dim :].any()  # no history at the first sub-task
    steps = 0
    terminated = False
    while not terminated:
        assert info["best_tool"] == task.subtasks[steps].best_tool
        action = suite.tools.index(info["best_tool"])
        observation, reward, terminated, truncated, info = env.step(action)
        steps += 1
        assert not truncated
        components = info["reward_components"]
        assert set(components) == {"success", "efficiency", "quality", "feedback"}
        assert reward == pytest.approx(math.fsum(components.values()))
        assert components["success"] == (1.0 if info["success"] else -1.0)
        assert components["quality"] == (0.5 if info["success"] else 0.0)
        if not terminated:
            # history block: one-hot of the tool just used, success flag, position / 4
            history = observation[suite.feature_dim :]
            assert history[action] == 1.0 and history[: len(suite.tools)].sum() == 1.0
            assert history[-2] == 1.0 and history[-1] == pytest.approx(steps / 4)
    assert info["task_success"] is (steps == 3 and info["success"])
    with pytest.raises(InvalidInputError, match="reset"):
        env.step(0)


def test_failure_stops_the_chain_unless_configured(suite: ToolUseSuite) -> None:
    worst = {
        name: int(np.argmin(row))
        for name, row in zip(suite.task_types, suite.success_matrix(), strict=True)
    }
    for stop, expected_steps in ((True, 1), (False, 4)):
        env = ToolUseEnv(suite, config=EnvConfig(stop_on_failure=stop))
        index = _multi_step_index(env, 4)
        _, info = env.reset(seed=0, options={"task_index": index})
        steps, terminated = 0, False
        # the worst tool succeeds with p <= 0.2: seed 0 makes the first call fail
        while not terminated:
            _, _, terminated, _, info = env.step(worst[info["subtask_type"]])
            steps += 1
        assert steps == expected_steps and info["task_success"] is False


def test_invalid_action_and_options(suite: ToolUseSuite) -> None:
    env = ToolUseEnv(suite)
    env.reset(seed=0)
    for action in (-1, len(suite.tools), 1.5, True, np.array([1])):
        with pytest.raises(InvalidInputError, match=r"suite\.tools"):
            env.step(action)  # type: ignore[arg-type]
    env.step(np.array(2))  # a 0-d integer array is an action
    with pytest.raises(InvalidInputError, match="task_index"):
        env.reset(options={"task_index": 10_000})


def test_sequential_walks_the_split_in_order(suite: ToolUseSuite) -> None:
    env = ToolUseEnv(suite, "heldout", config=EnvConfig(sequential=True))
    ids = [env.reset()[1]["task_id"] for _ in range(len(suite.heldout_tasks) + 1)]
    assert ids[:-1] == [task.id for task in suite.heldout_tasks] and ids[-1] == ids[0]


def test_decision_index_drives_degradation() -> None:
    suite = ToolUseSuite(
        SuiteConfig(seed=0, num_tasks=100, degrade_tools=("web_search",), degrade_at=3)
    )
    env = ToolUseEnv(suite, config=EnvConfig(stop_on_failure=False))
    env.reset(seed=0)
    probabilities = []
    for _ in range(6):
        _, _, terminated, _, info = env.step(0)
        probabilities.append(info["success_probability"])
        if terminated:
            env.reset()
    assert env.decision_index == 6
    assert all(p <= 0.1 for p in probabilities[3:])
    env.reset(options={"decision_index": 0})
    assert env.decision_index == 0


def test_episodes_are_recorded_with_reward_components(tmp_path, suite: ToolUseSuite) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'episodes.db'}")
    recorder = Recorder(store)
    env = ToolUseEnv(suite, recorder=recorder)
    index = _multi_step_index(env, 2)
    _, info = env.reset(seed=1, options={"task_index": index})
    episode_id = env.episode_id
    terminated = False
    while not terminated:
        _, _, terminated, _, info = env.step(suite.tools.index(info["best_tool"]))
    assert env.episode_id is None
    env.reset(seed=2)  # left open, then closed: recorded as aborted
    aborted_id = env.episode_id
    env.close()
    recorder.close()
    episode = store.get_episode(episode_id)
    task = suite.train_tasks[index]
    assert episode.task == task.text
    assert episode.metadata["task_id"] == task.id and episode.metadata["split"] == "train"
    assert episode.metadata["task_type"] == "multi_step"
    assert episode.expected_outcome == {"success": True}
    assert episode.status.value == ("success" if info["task_success"] else "failure")
    assert 1 <= len(episode.steps) <= 2
    for step in episode.steps:
        assert set(step.reward_components) == {"success", "efficiency", "quality", "feedback"}
        assert step.reward == pytest.approx(math.fsum(step.reward_components.values()))
        assert step.tool in suite.tools and step.duration_s is not None and step.duration_s > 0
    assert store.get_episode(aborted_id).status.value == "aborted"
    store.close()


def test_seeded_resets_repeat_streams_and_refuse_bad_seeds(suite: ToolUseSuite) -> None:
    env = ToolUseEnv(suite)

    def draws(seed: int) -> list[float]:
        env.reset(seed=seed)
        return env.np_random.random(4).tolist()

    generator = env.np_random  # reseeding keeps the generator object, replaces its state
    assert draws(5) == draws(5) and env.np_random is generator and env.np_random_seed == 5
    big = (2**64, 2**64 + 1, 2**64 + 2, 2**65 + 1, 3 * 2**64 + 3, 2**200)
    streams = {tuple(draws(seed)) for seed in (0, 1, 2, 2**64 - 1, *big)}
    assert len(streams) == 10  # seeds beyond 64 bits count whole: no two collide
    assert draws(np.int64(7)) == draws(7)  # numpy integers are ints too
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(InvalidInputError, match=r"seed must be an int >= 0"):
            env.reset(seed=bad)  # type: ignore[arg-type]
