"""Per-attempt rollouts: seeds, batch layout, recording, and Ray giving the local episodes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from learnloop.errors import ClosedError, ConfigError  # noqa: E402
from learnloop.recorder import Recorder  # noqa: E402
from learnloop.store import SqliteStore  # noqa: E402
from learnloop.train.config import GRPOConfig  # noqa: E402
from learnloop.train.grpo import GRPO, suite_task_sampler  # noqa: E402
from learnloop.train.policies import MLPPolicy  # noqa: E402
from learnloop.train.ray_executor import (  # noqa: E402
    Attempt,
    AttemptCollector,
    AttemptResult,
    AttemptRunner,
    GymEnvFactory,
    LocalExecutor,
    attempt_seed,
    make_collector,
    merge_attempts,
    plan_attempts,
)
from learnloop.train.rollout import EpisodeSummary  # noqa: E402

SUITE = "learnloop/ToolUse-v0"
FIELDS = ("obs", "actions", "log_probs", "values", "rewards", "dones", "terminated",
          "truncated_values", "action_masks", "valid", "last_values")


def assert_same_batch(a, b, *, ignore_episode_ids: bool = False) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y), name
    assert sorted(a.reward_components) == sorted(b.reward_components)
    for name, column in a.reward_components.items():
        assert np.array_equal(column, b.reward_components[name]), name
    if ignore_episode_ids:
        strip = [ep.__class__(**{**_fields(ep), "episode_id": None}) for ep in a.episodes]
        assert strip == [ep.__class__(**{**_fields(ep), "episode_id": None}) for ep in b.episodes]
    else:
        assert a.episodes == b.episodes


def _fields(summary: EpisodeSummary) -> dict:
    return {name: getattr(summary, name) for name in summary.__dataclass_fields__}


def suite_plan(collector, n: int, first_seed: int = 100) -> tuple[list[int], list[dict]]:
    num_tasks = len(collector.envs[0].unwrapped.suite.tasks("train"))
    return list(range(first_seed, first_seed + n)), [{"task_index": i % num_tasks} for i in range(n)]


@pytest.fixture(scope="module")
def factory() -> GymEnvFactory:
    return GymEnvFactory(SUITE)


@pytest.fixture
def policy(factory: GymEnvFactory) -> MLPPolicy:
    env = factory()
    from learnloop.train.rollout import ObservationEncoder

    return MLPPolicy(ObservationEncoder(env.observation_space).dim, int(env.action_space.n),
                     value_head=False, seed=3)


# --- seeds and plans -----------------------------------------------------------------------


def test_attempt_seeds_are_fixed_per_pair_and_differ_between_attempts() -> None:
    seeds = [attempt_seed(11, i) for i in range(1000)]
    assert seeds == [attempt_seed(11, i) for i in range(1000)]
    assert len(set(seeds)) == 1000 and all(0 <= s < 2**63 for s in seeds)
    assert attempt_seed(12, 0) != attempt_seed(11, 0)
    with pytest.raises(ConfigError, match="index >= 0"):
        attempt_seed(1, -1)


def test_plan_keeps_given_seeds_and_derives_missing_ones() -> None:
    plan = plan_attempts([7, None], [{"task_index": 2}, None], base_seed=5)
    assert plan[0] == Attempt(0, 7, {"task_index": 2}, attempt_seed(5, 0))
    assert plan[1] == Attempt(1, attempt_seed(5, 1), None, attempt_seed(5, 1))
    with pytest.raises(ConfigError, match="2 seeds and 1 options"):
        plan_attempts([1, 2], [None], base_seed=0)


# --- batch layout --------------------------------------------------------------------------


def _result(index: int, rewards: list[float], components: dict[str, list[float]]) -> AttemptResult:
    t = len(rewards)
    return AttemptResult(
        index=index, obs=np.full((t, 2), index + 1.0, np.float32), actions=np.arange(t),
        log_probs=np.full(t, -0.5, np.float32), values=np.zeros(t, np.float32),
        rewards=np.array(rewards), dones=np.eye(t)[-1], terminated=np.eye(t)[-1],
        action_masks=np.array([[1, 0, 1]] * t, np.int8),
        reward_components={k: np.array(v) for k, v in components.items()},
        summary=EpisodeSummary(env_index=index, total_reward=sum(rewards), length=t, success=None),
    )


def test_merge_puts_attempt_i_in_column_i_and_pads_like_the_lockstep_collector() -> None:
    long = _result(0, [1.0, 2.0], {"success": [0.0, 1.0]})
    short = _result(1, [-1.0], {"speed": [0.25]})
    batch = merge_attempts([short, long], obs_dim=2, num_actions=3)  # any order in
    assert batch.valid.tolist() == [[True, True], [True, False]]
    assert batch.rewards.tolist() == [[1.0, -1.0], [2.0, 0.0]]
    assert batch.dones.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert batch.obs[:, 0].tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert batch.obs[1, 1].tolist() == [0.0, 0.0]  # after the end: zeros ...
    assert batch.action_masks[1, 1].tolist() == [1, 1, 1]  # ... and every action allowed
    assert batch.action_masks[0, 1].tolist() == [1, 0, 1]
    assert batch.reward_components["success"].tolist() == [[0.0, 0.0], [1.0, 0.0]]
    assert batch.reward_components["speed"].tolist() == [[0.0, 0.25], [0.0, 0.0]]
    assert [e.env_index for e in batch.episodes] == [0, 1] and batch.num_steps == 3
    with pytest.raises(ConfigError, match=r"indices 0\.\.0, got \[1\]"):
        merge_attempts([short], obs_dim=2, num_actions=3)


# --- the local executor --------------------------------------------------------------------


def test_attempts_do_not_depend_on_order_or_grouping(factory, policy) -> None:
    """What makes Ray give the local episodes: an attempt is the same wherever it runs."""
    plan = plan_attempts(list(range(8)), [{"task_index": i} for i in range(8)], base_seed=99)
    together = AttemptRunner(factory).run(policy, plan, max_steps=50, greedy=False)
    backwards = AttemptRunner(factory).run(policy, plan[::-1], max_steps=50, greedy=False)
    split = [*AttemptRunner(factory).run(policy, plan[5:], max_steps=50, greedy=False),
             *AttemptRunner(factory).run(policy, plan[:5], max_steps=50, greedy=False)]
    dims = policy.obs_dim, policy.num_actions
    reference = merge_attempts(together, *dims)
    assert_same_batch(reference, merge_attempts(backwards, *dims))
    assert_same_batch(reference, merge_attempts(split, *dims))


def test_collector_is_reproducible_from_the_generator_and_consistent(factory, policy) -> None:
    collector = AttemptCollector(factory, 16, LocalExecutor(factory))
    seeds, options = suite_plan(collector, 16)
    runs = [collector.collect_episodes(policy, seeds=seeds, options=options,
                                       generator=torch.Generator().manual_seed(s))
            for s in (1, 1, 2)]
    assert_same_batch(runs[0], runs[1])
    assert not np.array_equal(runs[0].actions, runs[2].actions)  # other draws, other actions
    batch = runs[0]
    for i, episode in enumerate(batch.episodes):
        assert episode.env_index == i and episode.length == batch.valid[:, i].sum()
        assert episode.total_reward == pytest.approx(batch.rewards[batch.valid[:, i], i].sum())
    # the generator advanced by exactly one draw per collection
    generator = torch.Generator().manual_seed(1)
    collector.collect_episodes(policy, seeds=seeds, options=options, generator=generator)
    after_one = torch.Generator().manual_seed(1)
    torch.randint(2**62, (1,), generator=after_one)
    assert torch.equal(generator.get_state(), after_one.get_state())
    collector.close()


def test_recorded_episodes_match_the_batch(factory, policy, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "e.db")
    recorder = Recorder(store)
    collector = AttemptCollector(factory, 6, LocalExecutor(factory, record=True),
                                 recorder=recorder, agent_id="grpo-test")
    seeds, options = suite_plan(collector, 6)
    batch = collector.collect_episodes(policy, seeds=seeds, options=options,
                                       generator=torch.Generator().manual_seed(0))
    recorder.flush()
    assert store.count_episodes() == 6
    for i, summary in enumerate(batch.episodes):
        episode = store.get_episode(summary.episode_id)
        assert episode.agent_id == "grpo-test" and episode.kind == "rollout"
        assert [s.reward for s in episode.steps] == batch.rewards[batch.valid[:, i], i].tolist()
        assert episode.task == summary.task
    collector.close()
    recorder.close()
    store.close()


def test_whole_episodes_only_and_known_executors(factory, policy) -> None:
    collector = make_collector(SUITE, 2, executor="local")
    with pytest.raises(ConfigError, match="lockstep"):
        collector.collect_steps(policy, 8)
    with pytest.raises(ConfigError, match="max_steps"):
        collector.collect_episodes(policy, max_steps=0)
    collector.close()
    with pytest.raises(ConfigError, match="'lockstep', 'local' or 'ray'"):
        make_collector(SUITE, 2, executor="dask")  # type: ignore[arg-type]


def grpo_after_one_iteration(collector) -> MLPPolicy:
    config = GRPOConfig(group_size=8, tasks_per_iteration=2, minibatch_size=64, num_epochs=1)
    policy = MLPPolicy(collector.encoder.dim, collector.num_actions, value_head=False, seed=0)
    learner = GRPO(policy, collector, config, num_iterations=1,
                   task_sampler=suite_task_sampler(collector.envs[0]), seed=0)
    metrics = learner.train_iteration(0)
    assert metrics["rollout/episodes"] == 16.0 and metrics["train/active_fraction"] > 0
    return policy


def test_grpo_trains_on_the_attempt_collector() -> None:
    collector = make_collector(SUITE, 16, executor="local")
    before = MLPPolicy(collector.encoder.dim, collector.num_actions, value_head=False, seed=0)
    after = grpo_after_one_iteration(collector)
    changed = [not torch.equal(p, q) for p, q in zip(before.parameters(), after.parameters(),
                                                      strict=True)]
    assert any(changed)
    collector.close()


# --- Ray -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    if not os.environ.get("CI"):
        pytest.importorskip("ray", reason="ray is not installed: pip install 'learnloop[ray]'")
    import ray

    from learnloop.jobs.ray_launcher import RayConnection, connect_ray

    started = connect_ray(RayConnection(num_cpus=2, log_to_driver=False))
    yield
    if started:
        ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_ray_returns_the_local_episodes_for_64_suite_trajectories(
    ray_session, factory, policy, tmp_path: Path
) -> None:
    from learnloop.train.ray_executor import RayConfig, RayExecutor

    local = AttemptCollector(factory, 64, LocalExecutor(factory))
    store = SqliteStore(tmp_path / "ray.db")
    recorder = Recorder(store)
    remote = AttemptCollector(factory, 64, RayExecutor(factory, RayConfig(num_workers=2),
                                                       record=True), recorder=recorder)
    seeds, options = suite_plan(local, 64)
    for seed in (5, 6):
        expected = local.collect_episodes(policy, seeds=seeds, options=options,
                                          generator=torch.Generator().manual_seed(seed))
        got = remote.collect_episodes(policy, seeds=seeds, options=options,
                                      generator=torch.Generator().manual_seed(seed))
        assert_same_batch(expected, got, ignore_episode_ids=True)
        assert len(got.episodes) == 64 and got.num_steps >= 64
    recorder.flush()
    assert store.count_episodes() == 128  # recorded here from what the actors sent back
    ids = {e.episode_id for e in got.episodes}
    assert None not in ids and all(store.get_episode(i).kind == "rollout" for i in ids)
    remote.close()
    with pytest.raises(ClosedError):
        remote.executor.run(policy, [], max_steps=1, greedy=False)
    local.close()
    recorder.close()
    store.close()


@pytest.mark.ray
@pytest.mark.slow
def test_grpo_on_ray_matches_grpo_here(ray_session) -> None:
    from learnloop.train.ray_executor import RayConfig

    here = make_collector(SUITE, 16, executor="local")
    there = make_collector(SUITE, 16, executor="ray", ray=RayConfig(num_workers=2))
    expected, got = grpo_after_one_iteration(here), grpo_after_one_iteration(there)
    for p, q in zip(expected.parameters(), got.parameters(), strict=True):
        assert torch.equal(p, q)
    here.close()
    there.close()
