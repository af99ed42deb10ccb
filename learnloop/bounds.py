"""Bounding values on their way into an episode.

The recorder passes every state, result, outcome and metadata value through a
:class:`Sanitizer` before keeping it, so that a storm of large or deeply nested
values cannot exhaust memory, and so that what is kept is always JSON.

>>> bounds = Sanitizer(max_chars=5, max_items=2, max_depth=3)
>>> bounds.value({"s": "abcdefgh", "l": [1, 2, 3]}, "state")
{'s': 'abcde…[+3 chars]', 'l': [1, 2, '…[+1 items]']}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Set
from typing import Any

from learnloop.episode import JSONValue
from learnloop.errors import InvalidInputError

__all__ = ["Sanitizer"]


class Sanitizer:
    """Bounds JSON values and rejects what is not JSON.

    Strings are cut to ``max_chars`` plus a marker ``…[+N chars]``; lists and dicts
    to ``max_items`` items; containers deeper than ``max_depth`` become a short
    string. ``truncated`` counts the cuts. A value that is not JSON (a set, an
    object, a non-string key, NaN) raises InvalidInputError naming its path, or,
    with ``lenient=True``, becomes its ``repr``.

    On the way it collects what a redactor must look at: every string it returns
    or keeps (``texts``) and every key not in ``plain_keys`` (``keys``), so that
    one cheap test over them can tell that nothing needs redacting.

    ``redact`` (e.g. :meth:`learnloop.redaction.Redactor.redact_string`) is run on
    a string about to be cut, over the kept part plus ``CUT_LOOKAHEAD`` characters:
    a secret that starts before the cut is then recognised whole and replaced,
    rather than kept as a fragment no pattern matches. ``redactions`` counts them.
    """

    #: Characters after a cut that a secret starting before it is looked for in.
    CUT_LOOKAHEAD = 1000

    __slots__ = (
        "keys",
        "max_chars",
        "max_depth",
        "max_items",
        "plain_keys",
        "redact",
        "redactions",
        "texts",
        "truncated",
    )

    def __init__(
        self,
        *,
        max_chars: int,
        max_items: int,
        max_depth: int,
        plain_keys: Set[str] = frozenset(),
        redact: Callable[[str], tuple[str, int]] | None = None,
    ) -> None:
        self.max_chars = max_chars
        self.max_items = max_items
        self.max_depth = max_depth
        self.plain_keys = plain_keys
        self.redact = redact
        self.truncated = 0
        self.redactions = 0
        self.texts: list[str] = []
        self.keys: list[str] = []

    def cut(self, text: str, limit: int) -> str:
        """``text`` cut to ``limit`` characters plus a marker (not collected)."""
        if len(text) <= limit:
            return text
        self.truncated += 1
        kept = text[: limit + self.CUT_LOOKAHEAD]
        if self.redact is not None:
            kept, count = self.redact(kept)
            self.redactions += count
        return f"{kept[:limit]}…[+{len(text) - limit} chars]"

    def text(self, text: str, limit: int | None = None) -> str:
        """``text`` cut to ``limit`` characters (if given), and collected."""
        if limit is not None and len(text) > limit:
            text = self.cut(text, limit)
        self.texts.append(text)
        return text

    def value(self, value: Any, path: str, depth: int = 0, lenient: bool = False) -> JSONValue:
        kind = type(value)
        if kind is str:
            if len(value) > self.max_chars:
                value = self.cut(value, self.max_chars)
            self.texts.append(value)
            return value
        if kind is int or kind is bool or value is None:
            return value
        if kind is float:
            if math.isfinite(value):
                return value
            if lenient:
                return repr(value)
            raise InvalidInputError(
                f"{path} is {value!r}, which JSON cannot hold; use a finite number or None"
            )
        if kind is dict and len(value) <= self.max_items and depth < self.max_depth:
            # fast path: a flat dict of short strings and plain numbers, kept as it is
            texts, keys, plain_keys = self.texts, self.keys, self.plain_keys
            num_texts, num_keys = len(texts), len(keys)
            # Keys seen before (all strings) need no look each: one C-level test.
            known_keys = value.keys() <= plain_keys
            for key, item in value.items():
                if not known_keys:
                    if type(key) is not str:
                        break
                    if key not in plain_keys:
                        keys.append(key)
                item_kind = type(item)
                if item_kind is str:
                    if len(item) > self.max_chars:
                        break
                    texts.append(item)
                elif not (
                    item_kind is int
                    or item_kind is bool
                    or item is None
                    or (item_kind is float and math.isfinite(item))
                ):
                    break
            else:
                return dict(value)
            del texts[num_texts:], keys[num_keys:]  # the full walk below collects them
        if depth >= self.max_depth:
            self.truncated += 1
            return f"…[nested deeper than {self.max_depth}]"
        if kind is dict or isinstance(value, Mapping):
            out: dict[str, JSONValue] = {}
            for i, (key, item) in enumerate(value.items()):
                if i >= self.max_items:
                    self.truncated += 1
                    out["…"] = f"[+{len(value) - self.max_items} items]"
                    break
                if type(key) is not str:
                    if not lenient:
                        raise InvalidInputError(
                            f"{path} has key {key!r} ({type(key).__name__}); JSON object keys "
                            "must be strings: convert it with str()"
                        )
                    key = str(key)
                if key not in self.plain_keys:
                    self.keys.append(key)
                out[key] = self.value(item, f"{path}.{key}", depth + 1, lenient)
            return out
        if kind is list or kind is tuple:
            items = [
                self.value(item, f"{path}[{i}]", depth + 1, lenient)
                for i, item in enumerate(value[: self.max_items])
            ]
            if len(value) > self.max_items:
                self.truncated += 1
                items.append(f"…[+{len(value) - self.max_items} items]")
            return items
        if isinstance(value, (bool, int)):  # numpy ints, IntEnum
            return int(value)
        if isinstance(value, float) or hasattr(value, "item"):  # numpy scalars
            try:
                return self.value(
                    value.item() if hasattr(value, "item") else float(value), path, depth, lenient
                )
            except (TypeError, ValueError):
                pass
        if isinstance(value, str):  # str subclasses, StrEnum
            return self.value(str(value), path, depth, lenient)
        if lenient:
            return self.text(repr(value), self.max_chars)
        raise InvalidInputError(
            f"{path} holds a {type(value).__name__} ({value!r:.80}), which is not JSON; pass "
            "str/int/float/bool/None, lists and dicts with string keys (e.g. str(value))"
        )
