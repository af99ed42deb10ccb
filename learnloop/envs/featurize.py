"""Text features for numeric policies, and the spec's keyword categories.

Two ways to turn a task's text into a context:

* :func:`keyword_category` maps the text to one of six coarse categories by the
  words it contains (the keyword rule of the spec). It is cheap and needs no
  learning, but several task types share a category while needing different tools.
* :class:`TextFeaturizer` (and the shortcut :func:`featurize`) computes a hashed
  bag of words plus word bigrams, L2-normalized, for learners that read the text
  (LinUCB, an MLP policy).

Hashed bag of words (the "hashing trick", Weinberger et al. 2009, *Feature
Hashing for Large Scale Multitask Learning*): the text is lower-cased and split
into tokens ``[a-z0-9_]+`` (other characters separate tokens). Each token ``w``
adds 1 to bucket ``crc32(b"u:" + w) % dim`` and each adjacent pair ``(w1, w2)``
adds 1 to bucket ``crc32(b"b:" + w1 + b" " + w2) % dim``. The count vector ``x`` is
divided by its Euclidean norm, so ``||x||_2 == 1`` (the zero vector for a text with
no tokens). ``crc32`` is stable across processes and Python versions, unlike
``hash()``, so features computed today match those computed by another replica.

    >>> x = featurize("Find the function parse_config in the code base", dim=64)
    >>> x.shape, x.dtype, round(float((x * x).sum()), 6)
    ((64,), dtype('float32'), 1.0)
    >>> keyword_category("grep the repository for retry_with_backoff")
    'search'
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from itertools import pairwise
from types import MappingProxyType

import numpy as np

from learnloop.errors import ConfigError

__all__ = [
    "KEYWORD_CATEGORIES",
    "TextFeaturizer",
    "featurize",
    "keyword_category",
    "tokenize",
]

#: The spec's keyword categories, in the order they are tried; ``general`` is the fallback.
KEYWORD_CATEGORIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "search": ("search", "find", "grep", "query", "lookup"),
        "file_ops": ("read", "write", "file", "edit", "create"),
        "execute": ("run", "execute", "exec", "command", "shell"),
        "network": ("http", "request", "fetch", "api"),
        "data": ("parse", "extract", "transform", "convert"),
    }
)

_TOKEN = re.compile(r"[a-z0-9_]+")
_KEYWORD_TO_CATEGORY: Mapping[str, str] = MappingProxyType(
    {word: category for category, words in KEYWORD_CATEGORIES.items() for word in words}
)
_SUFFIXES = ("ing", "ed", "es", "s")


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it into word tokens (``[a-z0-9_]+``)."""
    return _TOKEN.findall(text.lower())


def _keyword_of(token: str) -> str | None:
    """The category a token belongs to, allowing simple inflections.

    ``"finds"``, ``"fetching"``, ``"parsed"``, ``"parsing"`` and ``"queries"``
    count as their keyword; ``"filename"`` or ``"runtime"`` do not.
    """
    category = _KEYWORD_TO_CATEGORY.get(token)
    if category is not None:
        return category
    for suffix in _SUFFIXES:
        if token.endswith(suffix) and len(token) > len(suffix) + 2:
            stem = token[: -len(suffix)]
            for candidate in (stem, stem + "e", stem[:-1] + "y", stem[:-1]):
                category = _KEYWORD_TO_CATEGORY.get(candidate)
                if category is not None:
                    return category
    return None


def keyword_category(text: str) -> str:
    """The spec's keyword category of a task text.

    Categories are tried in the order of :data:`KEYWORD_CATEGORIES` (``search``,
    ``file_ops``, ``execute``, ``network``, ``data``); the first one with a keyword
    among the text's tokens wins, and ``general`` is returned when none matches.
    ``"look up"`` written as two words counts as ``lookup``.

    Args:
        text: Task or sub-task text, any case.

    Returns:
        One of ``search``, ``file_ops``, ``execute``, ``network``, ``data``, ``general``.

    >>> keyword_category("Read the contents of notes.txt")
    'file_ops'
    >>> keyword_category("How many days are there between 2021-03-14 and 2022-07-01?")
    'general'
    """
    tokens = tokenize(text)
    found: set[str] = set()
    previous = ""
    for token in tokens:
        category = _keyword_of(token)
        if category is not None:
            found.add(category)
        if previous == "look" and token == "up":
            found.add("search")
        previous = token
    for category in KEYWORD_CATEGORIES:
        if category in found:
            return category
    return "general"


class TextFeaturizer:
    """Hashed bag of words + word bigrams, L2-normalized (see the module docstring).

    The instance keeps a bounded cache of token → bucket so repeated vocabularies
    (the normal case for an agent's tasks) cost one dictionary look-up per token.

    Args:
        dim: Number of hash buckets (length of the feature vector), >= 8.
        bigrams: Also hash adjacent word pairs.
        cache_size: Most tokens and bigrams whose bucket is remembered; 0 disables it.
    """

    __slots__ = ("_cache", "bigrams", "cache_size", "dim")

    def __init__(self, dim: int = 1024, *, bigrams: bool = True, cache_size: int = 65536) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 8:
            raise ConfigError(f"feature dim must be an int >= 8, got {dim!r}; e.g. dim=1024")
        if cache_size < 0:
            raise ConfigError(f"cache_size must be >= 0, got {cache_size!r}; use 0 to disable")
        self.dim = dim
        self.bigrams = bigrams
        self.cache_size = cache_size
        self._cache: dict[str, int] = {}

    def _bucket(self, key: str) -> int:
        bucket = self._cache.get(key)
        if bucket is None:
            bucket = zlib.crc32(key.encode("utf-8")) % self.dim
            if len(self._cache) < self.cache_size:
                self._cache[key] = bucket
        return bucket

    def buckets(self, text: str) -> list[int]:
        """The bucket index of every unigram and bigram of ``text`` (with repeats)."""
        tokens = tokenize(text)
        buckets = [self._bucket("u:" + token) for token in tokens]
        if self.bigrams:
            buckets.extend(
                self._bucket("b:" + first + " " + second) for first, second in pairwise(tokens)
            )
        return buckets

    def __call__(self, text: str) -> np.ndarray:
        """Features of ``text``: float32 array of shape ``(dim,)`` with unit L2 norm.

        A text without any token gives the zero vector.
        """
        buckets = self.buckets(text)
        if not buckets:
            return np.zeros(self.dim, dtype=np.float32)
        counts = np.bincount(buckets, minlength=self.dim).astype(np.float32)
        counts /= np.float32(np.sqrt(np.dot(counts, counts)))
        return counts

    def batch(self, texts: list[str] | tuple[str, ...]) -> np.ndarray:
        """Features of several texts: float32 array of shape ``(len(texts), dim)``."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self(text)
        return out

    def __repr__(self) -> str:
        return f"TextFeaturizer(dim={self.dim}, bigrams={self.bigrams})"


def featurize(text: str, dim: int = 1024, *, bigrams: bool = True) -> np.ndarray:
    """Hashed bag-of-words (+ bigrams) features of ``text``, L2-normalized.

    A one-off convenience; for many texts keep a :class:`TextFeaturizer`, which
    caches the buckets of the tokens it has seen.

    Args:
        text: Any text.
        dim: Length of the feature vector.
        bigrams: Also hash adjacent word pairs.

    Returns:
        float32 array of shape ``(dim,)``; unit L2 norm unless the text has no token.
    """
    return TextFeaturizer(dim, bigrams=bigrams, cache_size=0)(text)
