"""Options several subcommands share: the store URL, ``--json``, times.

Imports only the standard library at module level so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from typing import Any

__all__ = ["add_json_flag", "add_store_option", "count", "format_time", "parse_time", "print_json"]

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="URL",
        help="store URL (sqlite:///path.db or postgresql://...); default $LEARNLOOP_STORE, "
        "else sqlite:///learnloop.db",
    )


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def count(text: str) -> int:
    """An integer >= 0, for ``--limit`` and the like."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def parse_time(text: str) -> float:
    """Unix time from ``1700000000``, ``2026-11-20``, ``2026-11-20T12:00:00`` or an
    age like ``90m``, ``6h``, ``7d`` (that long ago)."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        return time.time() - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot read time {text!r}; use Unix seconds, an ISO date like 2026-11-20 or "
            "2026-11-20T12:00, or an age like 6h or 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")


def format_time(value: float | None) -> str:
    if value is None:
        return "-"
    return dt.datetime.fromtimestamp(value, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
