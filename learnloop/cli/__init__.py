"""The ``learnloop`` command: ``main(argv) -> exit code``."""

from learnloop.cli.main import main

__all__ = ["main"]
