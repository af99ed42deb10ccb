"""End to end: an agent on the openai SDK, pointed at the policy endpoint, is trained by GRPO.

The agent's code only gets a base URL; every call it makes is captured with its
tokens, it reports its reward, and GRPO updates the served weights from exactly
those tokens. Then the CLI's language-model run: warm-start + GRPO on the tiny model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

import torch  # noqa: E402

from learnloop.cli.main import main  # noqa: E402
from learnloop.envs.suite import SuiteConfig, ToolUseSuite  # noqa: E402
from learnloop.episode import OutcomeStatus  # noqa: E402
from learnloop.recorder import Recorder  # noqa: E402
from learnloop.store import SqliteStore  # noqa: E402
from learnloop.store.base import EpisodeQuery  # noqa: E402
from learnloop.train.config import GRPOConfig  # noqa: E402
from learnloop.train.lm.config import LMConfig, LMGRPOConfig  # noqa: E402
from learnloop.train.lm.conversation import SuiteChat  # noqa: E402
from learnloop.train.lm.endpoint import PolicyServer, PolicyService  # noqa: E402
from learnloop.train.lm.grpo_lm import LMGRPO  # noqa: E402
from learnloop.train.lm.model import load_language_model  # noqa: E402
from learnloop.train.lm.openai_agent import (  # noqa: E402
    OpenAISuiteAgent,
    endpoint_batch,
    report_reward,
)


@pytest.mark.slow
def test_openai_agent_through_the_endpoint_trains_the_served_policy(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    suite = ToolUseSuite(SuiteConfig(seed=0, num_tasks=100))
    lm = load_language_model(LMConfig(model="tiny"))
    store = SqliteStore(tmp_path / "episodes.db")
    recorder = Recorder(store)
    agent = OpenAISuiteAgent(suite)
    rng = np.random.default_rng(0)
    with PolicyServer(PolicyService(lm, recorder=recorder)) as server:
        root = server.base_url[: -len("/v1")]
        for task in suite.train_tasks[:3]:
            for attempt in range(4):
                episode_id = f"{task.id}-{attempt}"
                client = openai.OpenAI(
                    base_url=server.episode_url(episode_id), api_key="unused", max_retries=0
                )
                result = agent.attempt(client, task, rng, seed=100 * attempt)
                report_reward(root, episode_id, 1.0 if result.success else 0.0)
        recorder.flush()
        episodes = store.query_episodes(EpisodeQuery(agent_id="policy-endpoint"))
        assert len(episodes) == 12
        assert all(e.status in (OutcomeStatus.SUCCESS, OutcomeStatus.FAILURE) for e in episodes)
        assert {len(e.steps) >= 1 for e in episodes} == {True}
        assert any(e.is_success for e in episodes) and not all(e.is_success for e in episodes)

        traces, advantages = endpoint_batch(episodes)
        assert len(traces) == sum(len(e.steps) for e in episodes)
        for episode in episodes:  # the trainer's tokens are the captured ones
            for step in episode.steps:
                assert any(
                    t.ids[-len(step.completion_token_ids) :] == step.completion_token_ids
                    and t.ids[: len(step.prompt_token_ids)] == step.prompt_token_ids
                    for t in traces
                )
        learner = LMGRPO(
            SuiteChat(suite, lm),
            GRPOConfig(
                group_size=4,
                tasks_per_iteration=3,
                num_epochs=2,
                minibatch_size=8,
                learning_rate=1e-3,
            ),
            LMGRPOConfig(),
            num_iterations=1,
        )
        before = {k: v.clone() for k, v in lm.trainable_state().items()}
        with server.service.lock:  # no call is served mid-update
            metrics = learner.update(traces, advantages)
        assert metrics["train/updates"] >= 1 and np.isfinite(metrics["train/policy_loss"])
        changed = [k for k, v in lm.trainable_state().items() if not torch.equal(v, before[k])]
        assert changed
        # the endpoint now serves the updated weights
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="policy",
            messages=[{"role": "user", "content": suite.train_tasks[0].text}],
            extra_body={"allowed_completions": list(suite.tools)},
        )
        assert reply.choices[0].message.content in suite.tools
    recorder.close()
    store.close()


@pytest.mark.slow
def test_cli_warm_start_and_grpo_on_the_tiny_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "grpo",
            "--policy",
            "lm",
            "--model",
            "tiny",
            "--iterations",
            "6",
            "--group-size",
            "4",
            "--tasks-per-iteration",
            "4",
            "--sft-steps",
            "60",
            "--exploration-episodes",
            "600",
            "--eval-tasks",
            "60",
            "--eval-every",
            "3",
            "--output-dir",
            str(tmp_path),
            "--json",
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["warm_start"]["success_rate"] > summary["initial"]["success_rate"]
    assert summary["heldout"]["success_rate"] is not None
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 6 and all(np.isfinite(h["train/policy_loss"]) for h in history)
