"""Command-line flags generated from config dataclasses.

Every field of a frozen config becomes a kebab-case flag whose help text is the
field's one-line docstring (read from the source), so help is written once::

    >>> import argparse
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True, kw_only=True)
    ... class Demo:
    ...     num_envs: int = 8
    ...     fast: bool = False
    >>> parser = argparse.ArgumentParser()
    >>> add_config_flags(parser, Demo, prefix="demo")
    >>> args = parser.parse_args(["--num-envs", "4", "--fast"])
    >>> config_from_args(Demo, args, prefix="demo")
    Demo(num_envs=4, fast=True)

Flags left out keep the dataclass default (``argparse.SUPPRESS``), so
``config_from_args`` passes only what the user typed and the config's own
``__post_init__`` checks the values.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import textwrap
import types
import typing
from typing import Any, Literal

__all__ = ["add_config_flags", "config_from_args", "field_docs"]


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written under it in the class body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0]
    docs: dict[str, str] = {}
    if not isinstance(body, ast.ClassDef):
        return docs
    statements = body.body
    for current, following in itertools.pairwise(statements):
        if (
            isinstance(current, ast.AnnAssign)
            and isinstance(current.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[current.target.id] = " ".join(following.value.value.split())
    return docs


def _optional(kind: Any) -> tuple[Any, bool]:
    """(inner type, True) for ``X | None``; (kind, False) otherwise."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(kind)) == 2:
            return args[0], True
    return kind, False


def _scalar(kind: Any, optional: bool) -> Any:
    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "null", "off"):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {kind.__name__}{' or none' if optional else ''}, got {text!r}"
            ) from None

    parse.__name__ = kind.__name__
    return parse


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"key\": 1}}', got {text!r} ({exc.msg})"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object {{...}}, got {text!r}")
    return value


_json_object.__name__ = "JSON object"


def add_config_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    prefix: str,
    exclude: tuple[str, ...] = (),
) -> None:
    """Add one flag per field of dataclass ``cls`` (dest ``{prefix}.{field}``)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for field in dataclasses.fields(cls):
        if field.name in exclude:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else None
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        help_text = f"{docs.get(field.name, '')} (default: {default})".strip()
        dest = f"{prefix}.{field.name}"
        kind, optional = _optional(hints[field.name])
        common: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": help_text}
        origin = typing.get_origin(kind)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif origin is Literal:
            parser.add_argument(flag, choices=list(typing.get_args(kind)), **common)
        elif origin is tuple:
            item = typing.get_args(kind)[0]
            parser.add_argument(flag, nargs="+", type=item, metavar=item.__name__.upper(), **common)
        elif origin is dict:
            parser.add_argument(flag, type=_json_object, metavar="JSON", **common)
        elif kind in (int, float, str):
            parser.add_argument(
                flag, type=_scalar(kind, optional), metavar=kind.__name__.upper(), **common
            )
        else:  # pragma: no cover - a config field of a type the CLI cannot spell
            raise TypeError(f"{cls.__name__}.{field.name}: no flag for type {kind!r}")


def config_from_args(cls: type, args: argparse.Namespace, *, prefix: str) -> Any:
    """Build ``cls`` from the flags the user gave (the rest keep their defaults)."""
    given: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        dest = f"{prefix}.{field.name}"
        if hasattr(args, dest):
            value = getattr(args, dest)
            given[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**given)
