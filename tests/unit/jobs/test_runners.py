from __future__ import annotations

import pytest

from learnloop.errors import ConfigError, JobError
from learnloop.jobs import BanditRunner, RLRunner, default_runners
from learnloop.jobs.runners import Runners, config_from_mapping
from learnloop.train.config import PolicyConfig, RunConfig


def test_config_from_mapping_names_the_field() -> None:
    assert config_from_mapping(PolicyConfig, {"hidden_sizes": [8, 8]}, "c").hidden_sizes == (8, 8)
    with pytest.raises(ConfigError, match=r"unknown field config.run.itrations; known fields"):
        config_from_mapping(RunConfig, {"itrations": 3}, "config.run")
    with pytest.raises(ConfigError, match=r"config.run.iterations must be a number, got 'x'"):
        config_from_mapping(RunConfig, {"iterations": "x"}, "config.run")
    with pytest.raises(ConfigError, match=r"config.run.iterations must be a whole number"):
        config_from_mapping(RunConfig, {"iterations": 2.5}, "config.run")
    with pytest.raises(ConfigError, match=r"config.run.record must be true or false"):
        config_from_mapping(RunConfig, {"record": 1}, "config.run")
    with pytest.raises(ConfigError, match=r"config.run: RunConfig.iterations must be > 0"):
        config_from_mapping(RunConfig, {"iterations": 0}, "config.run")
    with pytest.raises(ConfigError, match=r"config.run.output_dir is set by the job server"):
        config_from_mapping(RunConfig, {"output_dir": "x"}, "config.run",
                            exclude=("output_dir",))
    with pytest.raises(ConfigError, match=r"must be an object"):
        config_from_mapping(RunConfig, [1], "config.run")


def test_rl_prepare_normalizes_and_estimates() -> None:
    prepared = RLRunner("grpo").prepare({"run": {"iterations": 7},
                                         "algo": {"group_size": 4, "tasks_per_iteration": 2}})
    assert prepared.total_iterations == 7
    assert prepared.estimate.rollouts == 7 * 8 and prepared.estimate.cost_usd == 0.0
    assert prepared.config["algo"]["group_size"] == 4
    assert prepared.config["register_as"] == "grpo-policy"
    assert "output_dir" not in prepared.config["run"]
    with pytest.raises(ConfigError, match=r"unknown field config.ppo"):
        RLRunner("ppo").prepare({"ppo": {}})
    with pytest.raises(ConfigError, match=r"config.algo: GRPOConfig.group_size must be >= 2"):
        RLRunner("grpo").prepare({"algo": {"group_size": 1}})
    # refused when submitted, not when the job runs; the environment is not built
    with pytest.raises(ConfigError, match=r"unknown Gymnasium environment 'CartPol-v1'"):
        RLRunner("ppo").prepare({"run": {"env": "CartPol-v1"}})
    prepared = RLRunner("ppo").prepare(
        {"run": {"env": "FrozenLake-v1", "env_kwargs": {"map_name": "8x8"}, "time_limit": 50}}
    )
    assert prepared.config["run"]["env_kwargs"] == {"map_name": "8x8"}
    assert prepared.config["run"]["time_limit"] == 50


def test_bandit_prepare() -> None:
    prepared = BanditRunner().prepare({"decisions": 100, "iterations": 4, "register_as": "tools"})
    assert prepared.total_iterations == 4 and prepared.estimate.rollouts == 100
    with pytest.raises(ConfigError, match=r"config.policy 'magic' is unknown"):
        BanditRunner().prepare({"policy": "magic"})
    with pytest.raises(ConfigError, match=r"iterations .5. cannot exceed decisions .3."):
        BanditRunner().prepare({"decisions": 3, "iterations": 5})


def test_runner_registry_runs_every_type_and_names_unavailable_ones() -> None:
    runners = default_runners()
    assert runners.types == ("apo", "bandit", "grpo", "ppo")
    assert all(runners.unavailable_reason(t) is None for t in runners.types)
    partial = Runners({"bandit": BanditRunner()}, unavailable={"apo": "needs the local extra"})
    assert partial.unavailable_reason("apo") is not None
    with pytest.raises(JobError, match=r"'apo' is not available in this build"):
        partial.get("apo")
    with pytest.raises(JobError, match=r"unknown job type 'sft'"):
        runners.get("sft")
    added = partial.with_runner("apo", BanditRunner())  # one entry adds it
    assert added.unavailable_reason("apo") is None and isinstance(added.get("apo"), BanditRunner)
