"""Rollout collector: lockstep batches, failures recorded not fatal, recording, truncation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from learnloop.episode import OutcomeStatus  # noqa: E402
from learnloop.errors import ConfigError, InvalidInputError  # noqa: E402
from learnloop.recorder import Recorder  # noqa: E402
from learnloop.store import open_store  # noqa: E402
from learnloop.train.policies import MLPPolicy, RandomPolicy  # noqa: E402
from learnloop.train.rollout import RolloutCollector  # noqa: E402


class CountingEnv(gym.Env[np.ndarray, int]):
    """Reward 1 per step; terminates after `length` steps; action 2 is masked; may raise."""

    def __init__(self, length: int = 3, fail_at: int | None = None) -> None:
        self.observation_space = gym.spaces.Box(0.0, 10.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.length, self.fail_at, self.t = length, fail_at, 0

    def _info(self) -> dict[str, Any]:
        return {
            "action_mask": np.array([1, 1, 0], np.int8),
            "tools": ("a", "b", "c"),
            "best_tool": "a",
            "task_text": "count",
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0, 1.0], np.float32), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert action != 2, "masked action taken"
        self.t += 1
        if self.fail_at is not None and self.t == self.fail_at:
            raise RuntimeError("tool crashed")
        done = self.t >= self.length
        info = {**self._info(), "reward_components": {"success": 1.0}, "task_success": done}
        return np.array([self.t, 1.0], np.float32), 1.0, done, False, info


def test_collect_steps_shapes_dones_and_masks() -> None:
    collector = RolloutCollector([CountingEnv(3) for _ in range(4)], seed=0)
    batch = collector.collect_steps(RandomPolicy(3), 7, generator=torch.Generator().manual_seed(0))
    assert batch.obs.shape == (7, 4, 2) and batch.actions.shape == (7, 4)
    assert not np.isin(batch.actions, [2]).any()
    # episodes of 3 steps: done after steps 3 and 6 (t = 2, 5)
    assert batch.dones[:, 0].tolist() == [0, 0, 1, 0, 0, 1, 0]
    assert batch.terminated.sum() == batch.dones.sum() and batch.truncated_values.sum() == 0
    assert len(batch.episodes) == 8 and all(
        e.total_reward == 3.0 and e.success for e in batch.episodes
    )
    assert batch.reward_components["success"].sum() == 28
    assert all(e.tool_accuracy is not None for e in batch.episodes)
    # episodes continue across calls: 7 + 2 = 9 steps closes the third episode
    assert collector.collect_steps(RandomPolicy(3), 2).dones[1, 0] == 1


def test_failing_attempt_is_recorded_as_failed_and_collection_goes_on(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/e.db")
    recorder = Recorder(store)
    envs = [CountingEnv(3, fail_at=2), CountingEnv(3)]
    collector = RolloutCollector(envs, seed=0, recorder=recorder)
    batch = collector.collect_episodes(RandomPolicy(3), seeds=[1, 2], max_steps=10)
    failed, ok = batch.episodes
    assert failed.error is not None and "tool crashed" in failed.error and failed.success is False
    assert failed.length == 2 and ok.length == 3 and ok.success is True
    assert batch.valid[:, 0].tolist() == [True, True, False] and batch.valid[:, 1].all()
    recorder.close()
    episodes = {e.id: e for e in store.query_episodes()}
    assert episodes[failed.episode_id].status is OutcomeStatus.FAILURE
    assert episodes[failed.episode_id].steps[-1].error is not None
    assert episodes[ok.episode_id].status is OutcomeStatus.SUCCESS
    assert [s.tool for s in episodes[ok.episode_id].steps] != [] and len(
        episodes[ok.episode_id].steps
    ) == 3
    store.close()


def test_truncated_episodes_report_the_bootstrap_value() -> None:
    env = gym.wrappers.TimeLimit(CountingEnv(100), max_episode_steps=4)
    collector = RolloutCollector([env], seed=0)
    policy = MLPPolicy(2, 3, seed=0)
    with torch.no_grad():
        policy.critic[-1].bias.fill_(5.0)
    batch = collector.collect_steps(policy, 5)
    assert batch.dones[:, 0].tolist() == [0, 0, 0, 1, 0]
    assert batch.terminated[:, 0].sum() == 0
    with torch.no_grad():
        expected = policy.predict_values(torch.tensor([[4.0, 1.0]]))[0].item()
    assert batch.truncated_values[3, 0] == pytest.approx(expected)
    assert batch.truncated_values[[0, 1, 2, 4], 0].tolist() == [0, 0, 0, 0]


def test_collect_episodes_runs_one_episode_per_env_with_options() -> None:
    collector = RolloutCollector([CountingEnv(2), CountingEnv(4)], seed=0)
    batch = collector.collect_episodes(RandomPolicy(3), seeds=[0, 0], options=[None, {"x": 1}])
    assert [e.length for e in batch.episodes] == [2, 4]
    assert batch.num_steps == 6 and batch.obs.shape[0] == 4


class CountingPolicy(RandomPolicy):
    """The random policy, counting its batched forward passes."""

    def __init__(self, num_actions: int) -> None:
        super().__init__(num_actions)
        self.calls = 0
        self.rows = 0

    def act(self, obs: Any, action_mask: Any = None, **kwargs: Any) -> Any:
        self.calls += 1
        self.rows += obs.shape[0]
        return super().act(obs, action_mask, **kwargs)


def test_suite_attempts_are_collected_in_lockstep() -> None:
    from learnloop.train.run import make_envs

    envs = make_envs("learnloop/ToolUse-v0", 8)
    collector = RolloutCollector(envs, seed=0)
    policy = CountingPolicy(collector.num_actions)
    options = [{"task_index": 3}] * 8
    batch = collector.collect_episodes(policy, seeds=list(range(8)), options=options)
    assert len(batch.episodes) == 8 and len({e.task for e in batch.episodes}) == 1
    # one forward pass per tick for all 8 attempts: ticks = the longest attempt
    assert policy.calls == max(e.length for e in batch.episodes)
    assert policy.rows == 8 * policy.calls
    assert batch.num_steps == sum(e.length for e in batch.episodes)


def test_episodes_longer_than_the_first_allocation_keep_every_step() -> None:
    # 20 steps runs past the first buffer (8 ticks) twice; the 3-step env stops early.
    collector = RolloutCollector([CountingEnv(20), CountingEnv(3)], seed=0)
    batch = collector.collect_episodes(RandomPolicy(3), seeds=[0, 1], max_steps=100)
    assert batch.obs.shape == (20, 2, 2) and batch.num_steps == 23
    # CountingEnv's observation before step t is (t, 1)
    assert batch.obs[:, 0, 0].tolist() == list(range(20))
    assert batch.obs[:3, 1, 0].tolist() == [0, 1, 2]
    assert batch.valid[:, 0].all() and batch.valid[:, 1].tolist() == [True] * 3 + [False] * 17
    assert batch.dones[:, 0].tolist() == [0] * 19 + [1]
    assert batch.rewards[:, 0].sum() == 20 and batch.rewards[3:, 1].sum() == 0
    assert batch.reward_components["success"].sum() == 23
    assert [e.length for e in batch.episodes] == [20, 3]


def test_episodes_cut_by_max_steps_end_truncated_without_success() -> None:
    collector = RolloutCollector([CountingEnv(20)], seed=0)
    batch = collector.collect_episodes(RandomPolicy(3), max_steps=12)
    (episode,) = batch.episodes
    assert episode.length == 12 and episode.success is None and episode.total_reward == 12
    assert batch.dones[:, 0].tolist() == [0] * 11 + [1] and batch.terminated.sum() == 0


class BadMaskEnv(CountingEnv):
    def _info(self) -> dict[str, Any]:
        return {**super()._info(), "action_mask": np.array([1, 1], np.int8)}


def test_an_action_mask_of_the_wrong_length_is_rejected() -> None:
    collector = RolloutCollector([BadMaskEnv()], seed=0)
    with pytest.raises(InvalidInputError, match="2 entries for 3 actions"):
        collector.collect_episodes(RandomPolicy(3))


def test_collector_state_resumes_mid_episode_exactly() -> None:
    straight = RolloutCollector([CountingEnv(3), CountingEnv(5)], seed=0)
    straight.collect_steps(RandomPolicy(3), 2, generator=torch.Generator().manual_seed(0))
    state = straight.state_dict()
    resumed = RolloutCollector([CountingEnv(3), CountingEnv(5)], seed=0)
    resumed.load_state_dict(state)
    a = straight.collect_steps(RandomPolicy(3), 4, generator=torch.Generator().manual_seed(1))
    b = resumed.collect_steps(RandomPolicy(3), 4, generator=torch.Generator().manual_seed(1))
    # env 0 is at its third step, env 1 at its third of five
    assert a.obs[:, 0, 0].tolist() == [2, 0, 1, 2] and a.obs[:, 1, 0].tolist() == [2, 3, 4, 0]
    for name in ("obs", "actions", "rewards", "dones", "action_masks"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert [(e.env_index, e.length) for e in a.episodes] == [(0, 3), (1, 5), (0, 3)]
    assert [(e.env_index, e.length) for e in b.episodes] == [(0, 3), (1, 5), (0, 3)]


def test_stepping_on_threads_gives_the_same_batch_as_inline() -> None:
    batches = []
    for workers in (0, 3):
        collector = RolloutCollector(
            [CountingEnv(2), CountingEnv(5), CountingEnv(3, fail_at=2)],
            seed=0,
            step_workers=workers,
        )
        batches.append(
            collector.collect_episodes(
                RandomPolicy(3), seeds=[0, 1, 2], generator=torch.Generator().manual_seed(0)
            )
        )
        collector.close()
    inline, threaded = batches
    for name in ("obs", "actions", "rewards", "dones", "terminated", "valid"):
        assert np.array_equal(getattr(inline, name), getattr(threaded, name)), name
    assert [(e.length, e.error is None) for e in threaded.episodes] == [
        (2, True),
        (5, True),
        (2, False),
    ]
    assert threaded.episodes == inline.episodes


def test_fewer_episodes_than_environments_run_on_the_first_ones() -> None:
    collector = RolloutCollector([CountingEnv(2), CountingEnv(4), CountingEnv(6)], seed=0)
    batch = collector.collect_episodes(RandomPolicy(3), seeds=[0, 1])
    assert batch.obs.shape == (4, 2, 2) and [e.length for e in batch.episodes] == [2, 4]
    with pytest.raises(ConfigError, match="1 to 3 episodes"):
        collector.collect_episodes(RandomPolicy(3), seeds=[0, 1, 2, 3])
    with pytest.raises(ConfigError, match="2 seeds and 1 options"):
        collector.collect_episodes(RandomPolicy(3), seeds=[0, 1], options=[None])


def _batch_digest(batch: Any) -> str:
    """Hash of every array, component and episode summary of a batch."""
    import hashlib

    parts = []
    for name in (
        "obs",
        "actions",
        "log_probs",
        "values",
        "rewards",
        "dones",
        "terminated",
        "truncated_values",
        "action_masks",
        "valid",
        "last_values",
    ):
        array = getattr(batch, name)
        parts.append(f"{name} {array.dtype} {array.shape} {array.tobytes().hex()}")
    for name, array in batch.reward_components.items():
        parts.append(f"component {name} {array.dtype} {array.tobytes().hex()}")
    parts += [repr(episode) for episode in batch.episodes]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def test_suite_batches_are_pinned() -> None:
    """The same seeds, options and generator give bit-identical batches."""
    from learnloop.envs import SuiteConfig, ToolUseEnv, ToolUseSuite

    suite = ToolUseSuite(SuiteConfig(seed=2, num_tasks=100))
    envs = [ToolUseEnv(suite) for _ in range(4)]
    collector = RolloutCollector(envs, seed=3)
    # a uniform policy: an MLP's outputs change in the last bits with torch's thread count
    policy = RandomPolicy(collector.num_actions)
    generator = torch.Generator().manual_seed(5)
    digests = [
        _batch_digest(
            collector.collect_episodes(
                policy,
                seeds=[k, k, k + 1, 7],
                options=[{"task_index": 3 * k}] * 4,
                generator=generator,
            )
        )
        for k in range(3)
    ]
    digests += [_batch_digest(collector.collect_steps(policy, 6, generator=generator))]
    digests += [_batch_digest(collector.collect_steps(policy, 5, generator=generator))]
    assert digests == [
        "6cedd8d6c720216a",
        "ddd4e23ac13c3382",
        "9358d8fab4578642",
        "e470ba2012558cf9",
        "b102e102cb27837e",
    ]
