"""The configs and CLI flags import without torch; without torch the rest names the extra.

Each check runs in a fresh interpreter, so what other tests imported does not count.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_configs_and_flags_import_without_loading_torch() -> None:
    result = _run(
        """
        import sys
        import learnloop.cli.flags
        import learnloop.train.config
        from learnloop.train import GRPOConfig, PolicyConfig, PPOConfig, RunConfig
        assert PPOConfig().batch_size == 256
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print("loaded:", loaded)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded: []"


def test_without_torch_the_train_extra_is_named() -> None:
    result = _run(
        """
        import importlib
        import sys

        class BlockTorch:
            # What an environment without the 'train' extra looks like to an import.
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, BlockTorch())
        import learnloop.train
        from learnloop.train import GRPOConfig
        assert GRPOConfig(group_size=4).num_attempts == 32
        import learnloop.cli.flags

        def message(action):
            try:
                action()
            except ImportError as exc:
                return str(exc)
            return "no ImportError"

        print(message(lambda: learnloop.train.PPO))
        for module in ("losses", "policies", "rollout", "ppo", "grpo", "checkpoints",
                       "evaluation"):
            print(message(lambda: importlib.import_module(f"learnloop.train.{module}")))
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 8
    for line in lines:
        assert "pip install 'learnloop[train]'" in line, line
