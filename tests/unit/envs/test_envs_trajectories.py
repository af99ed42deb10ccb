"""Pinned trajectories of the suite environment: same seeds, same everything.

Each scenario resets and steps a :class:`ToolUseEnv` with fixed seeds and actions
and hashes what it returned: the observation's bytes and dtype, the reward (value
and type), the flags, every info entry (key order, value types and values,
arrays included) and the environment generator's state after each episode. The
digests were taken from the straightforward implementation; a faster one must
reproduce them bit for bit. (They were re-taken once, on purpose, when seeded
resets moved from Gymnasium's ``SeedSequence`` to the env's SplitMix64 map.)
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from learnloop.envs import EnvConfig, SuiteConfig, ToolUseEnv, ToolUseSuite
from learnloop.rewards import RewardSignal, ToolCallContext, ToolReward


def _canonical(value: Any) -> str:
    """Text of ``value`` naming every type, so that 1, 1.0 and np.float64(1.0) differ."""
    if isinstance(value, dict):
        items = ", ".join(f"{k!r}: {_canonical(v)}" for k, v in value.items())
        return f"dict{{{items}}}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_canonical(v) for v in value)
        return f"{type(value).__name__}[{inner}]"
    if isinstance(value, np.ndarray):
        return f"ndarray({value.dtype}, {value.shape}, {value.tobytes().hex()})"
    return f"{type(value).__name__}({value!r})"


def _run(env: ToolUseEnv, resets: list[tuple[int | None, dict[str, Any] | None]]) -> list[str]:
    """Digest of every episode: reset with (seed, options), then actions until it ends."""
    digests = []
    for episode, (seed, options) in enumerate(resets):
        lines = []
        obs, info = env.reset(seed=seed, options=options)
        lines.append(f"reset {_canonical(obs)} {_canonical(info)}")
        k = 0
        terminated = False
        while not terminated:
            action = (3 * episode + 5 * k + 1) % env.action_space.n
            if k % 3 == 0:  # the oracle's tool now and then, so that chains go on
                action = env.suite.tool_index(info["best_tool"])
            obs, reward, terminated, truncated, info = env.step(action)
            lines.append(
                f"step {action} {_canonical(obs)} {_canonical(reward)} "
                f"{_canonical(terminated)} {_canonical(truncated)} {_canonical(info)}"
            )
            k += 1
        lines.append(repr(env.np_random.bit_generator.state))
        digests.append(hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16])
    return digests


@pytest.fixture(scope="module")
def suite() -> ToolUseSuite:
    return ToolUseSuite(SuiteConfig(seed=3, num_tasks=200))


def test_seeded_resets_are_pinned(suite: ToolUseSuite) -> None:
    env = ToolUseEnv(suite)
    resets: list[tuple[int | None, dict[str, Any] | None]] = [
        (0, None),
        (1, None),
        (None, None),  # continues the generator of seed 1
        (7, {"task_index": 5}),
        (None, {"task_index": 17}),
        (7, {"task_index": 5}),  # the same episode as the fourth
    ]
    digests = _run(env, resets)
    assert digests[3] == digests[5]
    assert digests == [
        "e1ca7fc8fa822652",
        "dd42f0b72d9c0065",
        "ea90154592a6f283",
        "e73d73024ee4c633",
        "4718ad3f00eed884",
        "e73d73024ee4c633",
    ]


def test_multi_step_chains_without_stopping_are_pinned(suite: ToolUseSuite) -> None:
    env = ToolUseEnv(suite, config=EnvConfig(stop_on_failure=False))
    long_tasks = [i for i, t in enumerate(suite.train_tasks) if len(t.subtasks) >= 3][:4]
    digests = _run(env, [(100 + i, {"task_index": index}) for i, index in enumerate(long_tasks)])
    assert long_tasks == [0, 7, 9, 13]
    assert digests == [
        "4cc9b898c1466873",
        "6c50e6ece330c00a",
        "0376eeb450357cac",
        "cf8bb52177e38d46",
    ]


def test_heldout_sequential_and_degradation_are_pinned() -> None:
    suite = ToolUseSuite(
        SuiteConfig(seed=1, num_tasks=100, degrade_tools=("web_search", "code_grep"), degrade_at=3)
    )
    env = ToolUseEnv(suite, "heldout", config=EnvConfig(sequential=True))
    digests = _run(env, [(5, None), (None, None), (None, {"decision_index": 0}), (9, None)])
    assert digests == [
        "ed685e1f60c6b43a",
        "c3466f7568846885",
        "3b748f936c233b1c",
        "33b3eeba66a82961",
    ]


def test_single_step_episode_by_hand(suite: ToolUseSuite) -> None:
    env = ToolUseEnv(suite)
    obs, info = env.reset(seed=3)
    assert info["task_id"] == "s3-train-00046" and info["num_subtasks"] == 1
    assert obs[-2:].tolist() == [0.0, 0.0] and not obs[1024:1038].any()
    assert suite.expected_duration("shell_exec") == 0.8
    obs, reward, terminated, _, info = env.step(suite.tool_index("shell_exec"))
    # success +1, quality +0.5; 2.20 s against 0.8 s expected earns no efficiency bonus
    assert (reward, terminated, info["success"]) == (1.5, True, True)
    assert info["duration_s"] == pytest.approx(2.201741759703406, abs=1e-15)
    assert info["reward_components"] == {
        "success": 1.0,
        "efficiency": 0.0,
        "quality": 0.5,
        "feedback": 0.0,
    }
    assert info["output"] == {"exit_code": 0, "stdout": "ok: .\n54", "stderr": ""}
    # the observation still shows the (only) sub-task, now after a successful shell_exec
    assert obs[-2:].tolist() == [1.0, 0.0] and obs[1024:1038].nonzero()[0].tolist() == [6]


def test_chain_by_hand(suite: ToolUseSuite) -> None:
    env = ToolUseEnv(suite, config=EnvConfig(stop_on_failure=False))
    _, info = env.reset(seed=100, options={"task_index": 0})
    assert (info["num_subtasks"], info["best_tool"]) == (3, "sql_query")
    obs, reward, terminated, _, info = env.step(suite.tool_index("sql_query"))
    # 0.308 s against 0.5 s expected: efficiency 0.5 * (0.5 / 0.3081648421395371 - 1)
    efficiency = 0.5 * (0.5 / 0.3081648421395371 - 1.0)
    assert info["duration_s"] == pytest.approx(0.3081648421395371, abs=1e-15)
    assert info["reward_components"]["efficiency"] == pytest.approx(efficiency, rel=1e-12)
    assert reward == pytest.approx(1.0 + efficiency + 0.5, rel=1e-12) and not terminated
    assert obs[-2:].tolist() == [1.0, 0.25] and obs[1024 + 13] == 1.0
    obs, reward, terminated, _, info = env.step(suite.tool_index("web_search"))
    assert (reward, terminated, info["subtask_index"]) == (-1.0, False, 2)
    assert obs[-2:].tolist() == [0.0, 0.5] and obs[1024:1038].nonzero()[0].tolist() == [0]


def test_a_reward_subclass_is_called_with_the_context(suite: ToolUseSuite) -> None:
    class Doubled(ToolReward):
        def __call__(self, call: ToolCallContext) -> RewardSignal:
            return super().__call__(call).scaled(2.0)

    doubling = Doubled(quality_checks=dict(suite.quality_checks))
    plain, doubled = ToolUseEnv(suite), ToolUseEnv(suite, reward=doubling)
    plain.reset(seed=3)
    doubled.reset(seed=3)
    action = suite.tool_index("shell_exec")
    _, reward, _, _, info = plain.step(action)
    _, twice, _, _, info_twice = doubled.step(action)
    assert (reward, twice) == (1.5, 3.0)
    assert info_twice["reward_components"] == {
        k: 2 * v for k, v in info["reward_components"].items()
    }


def test_a_suite_subclass_featurize_is_used() -> None:
    class Blank(ToolUseSuite):
        def featurize(self, text: str) -> np.ndarray:
            return np.zeros(self.feature_dim, np.float32)

    env = ToolUseEnv(Blank(SuiteConfig(num_tasks=20, feature_dim=16)))
    obs, _ = env.reset(seed=0)
    assert not obs[:16].any() and obs.shape == (16 + 14 + 2,)


def test_failed_outputs_are_fresh_and_cached_features_read_only(suite: ToolUseSuite) -> None:
    subtask = suite.train_tasks[0].subtasks[0]
    never = SuiteConfig(seed=3, num_tasks=200, other_success=(0.0, 0.0))
    failing = ToolUseSuite(never)
    tool = next(t for t in failing.tools if t not in (subtask.best_tool, "shell_exec"))
    first = failing.execute(subtask, tool, np.random.default_rng(0))
    assert not first.success and first.error
    first.output["mutated"] = True
    second = failing.execute(subtask, tool, np.random.default_rng(0))
    assert "mutated" not in second.output
    features = suite.featurize(subtask.text)
    features[0] = 5.0  # a copy: the cache is untouched
    assert suite.featurize(subtask.text)[0] != 5.0


def test_a_pickled_suite_executes_the_same(suite: ToolUseSuite) -> None:
    import pickle

    import cloudpickle  # as training checkpoints pickle environments

    copy = pickle.loads(cloudpickle.dumps(suite))
    subtask = suite.train_tasks[4].subtasks[0]
    for tool in suite.tools:
        a = suite.execute(subtask, tool, np.random.default_rng(1), 0)
        b = copy.execute(subtask, tool, np.random.default_rng(1), 0)
        assert (a.success, a.duration_s, a.output, a.probability) == (
            b.success,
            b.duration_s,
            b.output,
            b.probability,
        )
    assert np.array_equal(copy.featurize(subtask.text), suite.featurize(subtask.text))
