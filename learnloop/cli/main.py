"""Entry point of the ``learnloop`` command.

Each subcommand lives in its own module of this package, listed in
:data:`SUBCOMMANDS`; a module exposes ``add_parser(subparsers)``, which registers
its parser and sets ``run`` (a function ``(args) -> int``) as the default
``handler``. Modules import only argparse at the top, so ``learnloop --help``
answers at once; heavy imports live inside ``run``.

Exit codes: 0 success, 1 runtime failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

#: Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS: tuple[str, ...] = (
    "learnloop.cli.bandit",
    "learnloop.cli.demo",
    "learnloop.cli.episodes",
    "learnloop.cli.experiment",
    "learnloop.cli.jobs",
    "learnloop.cli.registry",
    "learnloop.cli.serve",
    "learnloop.cli.serve_policy",
    "learnloop.cli.train",
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

logger = logging.getLogger("learnloop.cli")


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 on usage errors (its default) and names the fix.

    Descriptions often come from module docstrings: their reStructuredText quotes
    (````x````) are shown as plain quotes in ``--help``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for key in ("description", "epilog"):
            if isinstance(kwargs.get(key), str):
                kwargs[key] = kwargs[key].replace("``", "'")
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\nTry '{self.prog} --help'.\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from learnloop import __version__

    parser = _Parser(
        prog="learnloop",
        description="The learning loop for tool-using agents: record, score, attribute, improve.",
    )
    parser.add_argument("--version", action="version", version=f"learnloop {__version__}")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="verbosity of the logs written to stderr (default: WARNING)",
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser, required=True
    )
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code instead of exiting."""
    from learnloop.cli.train import rewrite_mode

    parser = build_parser()
    arguments = rewrite_mode(list(argv) if argv is not None else sys.argv[1:])
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from learnloop.errors import ConfigError, LearnloopError

    try:
        return int(args.handler(args))
    except ConfigError as exc:
        sys.stderr.write(f"learnloop: error: {exc}\n")
        return EXIT_USAGE
    except LearnloopError as exc:
        sys.stderr.write(f"learnloop: error: {exc}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("learnloop: interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception:  # process boundary: log the traceback, fail
        logger.exception("learnloop %s failed", args.command)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
