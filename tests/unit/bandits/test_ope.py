import numpy as np
import pytest

from learnloop.bandits import ToolSelector, make_policy
from learnloop.bandits.contexts import KeywordFeaturizer
from learnloop.bandits.ope import LoggedChoice, evaluate, load_logs, selector_target, snips_estimate
from learnloop.envs import SuiteConfig, ToolUseSuite
from learnloop.errors import InvalidInputError
from learnloop.recorder import Recorder
from learnloop.store import open_store


def test_ips_snips_dr_by_hand():
    logs = [
        LoggedChoice(task="a", candidates=("x", "y"), tool="x", propensity=0.5, reward=1.0),
        LoggedChoice(task="a", candidates=("x", "y"), tool="y", propensity=0.5, reward=0.0),
        LoggedChoice(task="a", candidates=("x", "y"), tool="x", propensity=0.25, reward=1.0),
    ]
    result = evaluate(logs, lambda task, c: [1.0, 0.0])
    # weights 2, 0, 4 -> IPS (2 + 0 + 4)/3 = 2; SNIPS 6/6 = 1
    assert result.ips.value == pytest.approx(2.0)
    assert result.snips.value == pytest.approx(1.0)
    assert result.effective_sample_size == pytest.approx(36 / 20)
    est = snips_estimate(np.array([1.0, 1.0]), np.array([0.0, 1.0]))
    assert est.value == 0.5
    with pytest.raises(InvalidInputError):
        evaluate(
            [LoggedChoice(task="a", candidates=("x",), tool="x", propensity=0.0, reward=1.0)],
            lambda t, c: [1.0],
        )
    with pytest.raises(InvalidInputError):
        evaluate([], lambda t, c: [1.0])


@pytest.mark.slow
def test_dr_interval_covers_true_value_in_9_of_10_seeds():
    covered = 0
    for seed in range(10):
        suite = ToolUseSuite(SuiteConfig(seed=seed, num_tasks=300))
        rng = np.random.default_rng(seed)
        subtasks = [s for t in suite.train_tasks for s in t.subtasks]
        # the target: a squarecb policy trained on its own stream, then frozen
        target = ToolSelector(make_policy("squarecb"), tools=suite.tools, seed=seed)
        for _ in range(1500):
            sub = subtasks[int(rng.integers(len(subtasks)))]
            c = target.choose(sub.text)
            target.update(c, float(rng.random() < suite.success_probability(sub, c.tool)))
        # the logs: an epsilon-greedy run (keyword Q-learner, epsilon 0.3)
        logger = ToolSelector(
            make_policy("epsilon_greedy", epsilon=0.3, epsilon_decay=1.0, epsilon_min=0.3),
            featurizer=KeywordFeaturizer(),
            tools=suite.tools,
            seed=seed,
        )
        logs, true_value = [], 0.0
        for _ in range(2000):
            sub = subtasks[int(rng.integers(len(subtasks)))]
            c = logger.choose(sub.text)
            r = float(rng.random() < suite.success_probability(sub, c.tool))
            logger.update(c, r)
            logs.append(
                LoggedChoice(
                    task=sub.text,
                    candidates=c.candidates,
                    tool=c.tool,
                    propensity=c.propensity,
                    reward=r,
                )
            )
            p = target.probabilities(sub.text)
            true_value += sum(p[t] * suite.success_probability(sub, t) for t in suite.tools)
        true_value /= len(logs)
        dr = evaluate(logs, selector_target(target)).dr
        covered += dr.low <= true_value <= dr.high
    assert covered >= 9


def test_load_logs_reads_recorded_choices(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    recorder = Recorder(store)
    selector = ToolSelector(make_policy("ucb1", epsilon=0.1), tools=["a", "b"])
    for _ in range(3):
        c = selector.choose("grep it")
        eid = recorder.begin("grep it", agent_id="bot")
        recorder.step(
            eid, "call", tool=c.tool, state={**c.log_state(), "task": "grep it"}, reward=1.0
        )
        recorder.complete(eid)
        selector.update(c, 1.0)
    recorder.close()
    logs = load_logs(store, agent_id="bot")
    assert len(logs) == 3 and logs[0].candidates == ("a", "b") and logs[0].reward == 1.0
    assert load_logs(store, agent_id="other") == []
    assert load_logs(store, since=9e12) == []
    store.close()


def test_reward_model_dual_solution_equals_the_ridge_normal_equations():
    from learnloop.bandits.ope import _RidgeRewardModel

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 16))
    tools = np.repeat([0, 1, 2], 30)
    tools[:25] = 1  # tool 0 has 5 rows (< 16: dual form), tool 1 has 55 (primal form)
    rewards = rng.random(90)
    model = _RidgeRewardModel(x, tools, rewards, 3, 2.0)
    for a in range(3):
        xa, ra = x[tools == a], rewards[tools == a] - rewards.mean()
        expected = np.linalg.solve(xa.T @ xa + 2.0 * np.eye(16), xa.T @ ra)
        np.testing.assert_allclose(model.theta[a], expected, atol=1e-10)
