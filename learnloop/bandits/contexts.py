"""Contexts: what a tool selector sees of a task before it chooses a tool.

A :class:`Featurizer` turns task text into a :class:`Context`: a discrete ``key``
(for tabular policies such as the spec's epsilon-greedy Q-learner) and a sparse
feature vector (``indices``/``values`` in ``[0, dim)``, for contextual policies).

Shipped featurizers:

* :class:`KeywordFeaturizer` — the spec's six keyword categories (``search``,
  ``file_ops``, ``execute``, ``network``, ``data``, ``general``); the key is the
  category and the features are its one-hot vector (plus a bias).
* :class:`HashedTextFeaturizer` — hashed bag of words and word pairs of the task
  text (Weinberger et al. 2009, "Feature hashing for large scale multitask
  learning"), L2-normalised, with a bias feature. Stable across processes (CRC-32,
  not Python's salted ``hash``).
* :class:`DenseFeaturizer` — wraps any ``text -> vector`` function (an embedding
  model, the suite's own featurizer) so it plugs in without changes elsewhere.

>>> KeywordFeaturizer()("grep the logs for errors").key
'search'
>>> ctx = HashedTextFeaturizer(dim=64)("read the config file")
>>> ctx.dim, round(float((ctx.values ** 2).sum()), 6)
(64, 1.0)
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from learnloop.errors import ConfigError, InvalidInputError

__all__ = [
    "DEFAULT_KEYWORDS",
    "GENERAL_CONTEXT",
    "Context",
    "DenseFeaturizer",
    "Featurizer",
    "HashedTextConfig",
    "HashedTextFeaturizer",
    "KeywordFeaturizer",
    "keyword_category",
    "make_featurizer",
    "tokenize",
]

#: The category of a task that matches no keyword.
GENERAL_CONTEXT = "general"

#: The spec's keyword categories, checked in this order; the first match wins.
DEFAULT_KEYWORDS: Mapping[str, tuple[str, ...]] = {
    "search": ("search", "find", "grep", "query", "lookup"),
    "file_ops": ("read", "write", "file", "edit", "create"),
    "execute": ("run", "execute", "exec", "command", "shell"),
    "network": ("http", "request", "fetch", "api"),
    "data": ("parse", "extract", "transform", "convert"),
}

_TOKEN = re.compile(r"[a-z0-9_]+")


def tokenize(text: str) -> list[str]:
    """Lower-case alphanumeric words of ``text`` (underscores kept)."""
    return _TOKEN.findall(text.lower())


def keyword_category(text: str, keywords: Mapping[str, Sequence[str]] = DEFAULT_KEYWORDS) -> str:
    """The spec's context of a task: the first category one of whose keywords occurs.

    A keyword matches a whole word (``"run"`` matches "run the tests", not
    "truncate"); categories are tried in the mapping's order; no match gives
    ``"general"``.

    >>> keyword_category("fetch the API status"), keyword_category("say hello")
    ('network', 'general')
    """
    words = set(tokenize(text))
    for category, category_words in keywords.items():
        if words.intersection(category_words):
            return category
    return GENERAL_CONTEXT


@dataclass(frozen=True, slots=True, eq=False)
class Context:
    """What a policy sees of one task: a discrete key and a sparse feature vector."""

    key: str
    """Discrete context for tabular policies (a keyword category, or ``"*"``)."""
    indices: npt.NDArray[np.intp]
    """Feature indices in ``[0, dim)``, unique."""
    values: npt.NDArray[np.float64]
    """Feature values, aligned with ``indices``."""
    dim: int
    """Size of the feature space."""
    text: str = ""
    """The task text the context was computed from (kept for logging)."""

    def dense(self) -> npt.NDArray[np.float64]:
        """The features as a dense vector of length ``dim``."""
        out = np.zeros(self.dim)
        out[self.indices] = self.values
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "indices": self.indices.tolist(),
            "values": self.values.tolist(),
            "dim": self.dim,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], text: str = "") -> Context:
        try:
            indices = np.asarray(data["indices"], dtype=np.intp)
            values = np.asarray(data["values"], dtype=np.float64)
            dim = int(data["dim"])
            key = str(data["key"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"malformed context {dict(data)!r}: {exc}; expected key, indices, values, dim"
            ) from None
        if indices.shape != values.shape or (
            indices.size and not 0 <= indices.min() <= indices.max() < dim
        ):
            raise InvalidInputError(
                f"context indices {indices.tolist()} do not fit values {values.tolist()} "
                f"or dim {dim}"
            )
        return cls(key=key, indices=indices, values=values, dim=dim, text=text)


@runtime_checkable
class Featurizer(Protocol):
    """Turns task text into a :class:`Context`. Implementations must be deterministic."""

    @property
    def dim(self) -> int:
        """Size of the feature space."""
        ...

    def __call__(self, text: str) -> Context:
        """The context of ``text``."""
        ...


class KeywordFeaturizer:
    """The spec's keyword categories as context; features are the category one-hot + bias.

    Feature ``0`` is the bias, feature ``1 + i`` the ``i``-th category (``general``
    last).
    """

    def __init__(self, keywords: Mapping[str, Sequence[str]] = DEFAULT_KEYWORDS) -> None:
        if GENERAL_CONTEXT in keywords:
            raise ConfigError(
                f"{GENERAL_CONTEXT!r} is the fallback category and cannot have keywords; "
                "rename that category"
            )
        self._keywords = {k: tuple(w.lower() for w in v) for k, v in keywords.items()}
        self.categories: tuple[str, ...] = (*self._keywords, GENERAL_CONTEXT)
        self._contexts = {
            category: Context(
                key=category,
                indices=np.array([0, 1 + i], dtype=np.intp),
                values=np.array([1.0, 1.0]) / np.sqrt(2.0),
                dim=1 + len(self.categories),
            )
            for i, category in enumerate(self.categories)
        }

    @property
    def dim(self) -> int:
        return 1 + len(self.categories)

    def __call__(self, text: str) -> Context:
        base = self._contexts[keyword_category(text, self._keywords)]
        return Context(
            key=base.key, indices=base.indices, values=base.values, dim=base.dim, text=text
        )

    def to_dict(self) -> dict[str, Any]:
        return {"type": "keyword", "keywords": {k: list(v) for k, v in self._keywords.items()}}


@dataclass(frozen=True, slots=True, kw_only=True)
class HashedTextConfig:
    """Settings of :class:`HashedTextFeaturizer`."""

    dim: int = 1024
    """Number of hash buckets (feature dimension, including the bias bucket 0)."""
    word_pairs: bool = True
    """Also hash adjacent word pairs (bigrams), which tell apart "read file" and "file read"."""
    bias: bool = True
    """Add a constant feature (bucket 0), so a policy can learn a per-tool intercept."""
    signed: bool = False
    """Use a second hash bit as the sign of each feature (reduces collision bias)."""
    cache_size: int = 4096
    """How many distinct texts to keep featurized (0 disables the cache)."""

    def __post_init__(self) -> None:
        if self.dim < 2:
            raise ConfigError(f"dim must be >= 2, got {self.dim}; try 1024")
        if self.cache_size < 0:
            raise ConfigError(f"cache_size must be >= 0, got {self.cache_size}")


class HashedTextFeaturizer:
    """Hashed bag of words (and word pairs) of the task text, L2-normalised.

    Repeated words add up before normalising. Bucket 0 is reserved for the bias,
    words hash into ``[1, dim)``. The context key is ``"*"`` (no discrete context).
    """

    def __init__(self, config: HashedTextConfig | None = None, *, dim: int | None = None) -> None:
        if config is None:
            config = HashedTextConfig() if dim is None else HashedTextConfig(dim=dim)
        elif dim is not None:
            raise ConfigError("pass either config or dim, not both")
        self.config = config
        # the contexts themselves are cached: they are immutable and carry their text
        self._cache: OrderedDict[str, Context] = OrderedDict()

    @property
    def dim(self) -> int:
        return self.config.dim

    def _bucket(self, token: str) -> tuple[int, float]:
        h = zlib.crc32(token.encode())
        sign = -1.0 if (self.config.signed and h & 0x80000000) else 1.0
        return 1 + (h & 0x7FFFFFFF) % (self.config.dim - 1), sign

    def _compute(self, text: str) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        words = tokenize(text)
        tokens = list(words)
        if self.config.word_pairs:
            tokens += [f"{a} {b}" for a, b in itertools.pairwise(words)]
        counts: dict[int, float] = {}
        for token in tokens:
            bucket, sign = self._bucket(token)
            counts[bucket] = counts.get(bucket, 0.0) + sign
        if self.config.bias:
            counts[0] = 1.0
        counts = {k: v for k, v in counts.items() if v != 0.0}
        indices = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
        values = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        norm = float(np.sqrt(values @ values))
        if norm > 0:
            values /= norm
        return indices, values

    def __call__(self, text: str) -> Context:
        context = self._cache.get(text)
        if context is not None:
            self._cache.move_to_end(text)
            return context
        indices, values = self._compute(text)
        indices.flags.writeable = False
        values.flags.writeable = False
        context = Context(key="*", indices=indices, values=values, dim=self.config.dim, text=text)
        if self.config.cache_size:
            self._cache[text] = context
            if len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return context

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "type": "hashed",
            "dim": c.dim,
            "word_pairs": c.word_pairs,
            "bias": c.bias,
            "signed": c.signed,
        }


class DenseFeaturizer:
    """Any ``text -> vector`` function (an embedding model) as a featurizer.

    Non-zero entries become the sparse features; ``normalize`` rescales to unit L2
    norm. The key is ``"*"``.
    """

    def __init__(
        self,
        fn: Callable[[str], npt.ArrayLike],
        dim: int,
        *,
        normalize: bool = True,
        name: str = "dense",
    ) -> None:
        if dim < 1:
            raise ConfigError(f"dim must be >= 1, got {dim}")
        self._fn = fn
        self._dim = dim
        self._normalize = normalize
        self.name = name

    @property
    def dim(self) -> int:
        return self._dim

    def __call__(self, text: str) -> Context:
        vector = np.asarray(self._fn(text), dtype=np.float64).ravel()
        if vector.shape != (self._dim,):
            raise InvalidInputError(
                f"featurizer {self.name!r} returned shape {vector.shape}, expected ({self._dim},); "
                "pass the dim the function really returns"
            )
        indices = np.flatnonzero(vector).astype(np.intp)
        values = vector[indices]
        if self._normalize:
            norm = float(np.sqrt(values @ values))
            if norm > 0:
                values = values / norm
        return Context(key="*", indices=indices, values=values, dim=self._dim, text=text)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "dense", "name": self.name, "dim": self._dim}


def make_featurizer(spec: Mapping[str, Any]) -> Featurizer:
    """Rebuild a featurizer from its ``to_dict()`` (keyword or hashed).

    Dense featurizers wrap user code and cannot be rebuilt from data: pass the
    featurizer itself when loading such a policy.
    """
    kind = spec.get("type")
    if kind == "keyword":
        return KeywordFeaturizer(spec.get("keywords", DEFAULT_KEYWORDS))
    if kind == "hashed":
        return HashedTextFeaturizer(
            HashedTextConfig(
                dim=int(spec.get("dim", 1024)),
                word_pairs=bool(spec.get("word_pairs", True)),
                bias=bool(spec.get("bias", True)),
                signed=bool(spec.get("signed", False)),
            )
        )
    raise InvalidInputError(
        f"cannot rebuild featurizer {dict(spec)!r}: type must be 'keyword' or 'hashed'; "
        "for a dense featurizer pass it explicitly"
    )
