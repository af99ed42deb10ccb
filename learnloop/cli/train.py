"""``learnloop train ALGORITHM``: run one learner and write its results.

Each algorithm lives in its own module listed in :data:`ALGORITHMS`; the module
exposes ``add_parser(subparsers)`` like a top-level subcommand. ``--mode`` is the
spec's alias: ``learnloop train --mode bandit`` is ``learnloop train bandit``
(``--mode rl`` is ``ppo``).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

__all__ = ["ALGORITHMS", "MODE_ALIASES", "add_parser"]

#: algorithm name -> module that adds its parser (kept light: argparse only at import).
ALGORITHMS: dict[str, str] = {
    "bandit": "learnloop.cli.train_bandit",
    "ppo": "learnloop.cli.train_rl",
    "grpo": "learnloop.cli.train_rl",
    "apo": "learnloop.cli.train_apo",
    "all": "learnloop.cli.train_apo",
}

#: ``--mode`` values -> algorithm names.
MODE_ALIASES: dict[str, str] = {"rl": "ppo"}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a learner (bandit, ppo, grpo, apo) and write its results",
        description="Train a learner on the built-in suite, a Gymnasium environment or "
        "logged episodes. 'learnloop train --mode X' is an alias of 'learnloop train X'.",
    )
    algorithms = parser.add_subparsers(dest="algorithm", metavar="ALGORITHM")
    for module_name in ALGORITHMS.values():
        importlib.import_module(module_name).add_parser(algorithms)
    parser.add_argument(
        "--mode",
        help="alias of ALGORITHM: " + ", ".join(sorted({*ALGORITHMS, *MODE_ALIASES})),
    )
    parser.set_defaults(handler=lambda args: _missing_algorithm(parser, args))


def rewrite_mode(argv: list[str]) -> list[str]:
    """Turn ``train --mode X rest`` into ``train X rest`` (returns a new list)."""
    if "train" not in argv:
        return argv
    start = argv.index("train") + 1
    rest = argv[start:]
    for i, token in enumerate(rest):
        value = None
        if token == "--mode" and i + 1 < len(rest):
            value, drop = rest[i + 1], 2
        elif token.startswith("--mode="):
            value, drop = token.split("=", 1)[1], 1
        if value is not None:
            algorithm = MODE_ALIASES.get(value, value)
            remaining = rest[:i] + rest[i + drop :]
            return [*argv[:start], algorithm, *remaining]
    return argv


def _missing_algorithm(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    choices = ", ".join(sorted({*ALGORITHMS, *MODE_ALIASES}))
    if args.mode:
        parser.error(f"unknown --mode {args.mode!r}; choose one of: {choices}")
    parser.error(f"choose an algorithm: {choices or '(none installed)'}")
    return 2
