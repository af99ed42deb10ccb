"""Tests of learnloop.envs.featurize: keyword categories and hashed text features."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from learnloop.envs.featurize import TextFeaturizer, featurize, keyword_category, tokenize
from learnloop.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("grep the repository for calls to parse_config", "search"),
        ("Find papers about protein folding", "search"),
        ("look up in the internal wiki how to deploy", "search"),
        ("Query the orders table", "search"),
        ("read the contents of notes.txt", "file_ops"),
        ("create a new directory build/", "file_ops"),
        ("run the test suite in tests/", "execute"),
        ("execute the unit tests under src/", "execute"),
        ("send an http GET request to https://example.com", "network"),
        ("fetching the page", "network"),
        ("parse the JSON in config.json", "data"),
        ("parsing it", "data"),
        ("convert sales.csv to a table", "data"),
        ("how many days are there between 2021-03-14 and 2022-07-01?", "general"),
        ("", "general"),
    ],
)
def test_keyword_category_by_hand(text: str, category: str) -> None:
    assert keyword_category(text) == category


def test_keyword_category_takes_the_first_category_in_order() -> None:
    # "find" (search) beats "read" (file_ops), "read" beats "api" (network)
    assert keyword_category("find which module imports X and read its signature") == "search"
    assert keyword_category("read the api docs") == "file_ops"
    assert keyword_category("call the Stripe API to register a new user") == "network"


def test_keyword_category_does_not_match_inside_other_words() -> None:
    assert keyword_category("filename runtime readme") == "general"
    # inflections count: "queries" and "finds" are search words, checked before file_ops
    assert keyword_category("files queries finds") == "search"
    assert keyword_category("files") == "file_ops"


def test_tokenize() -> None:
    assert tokenize("Grep src/api for parse_config!") == [
        "grep",
        "src",
        "api",
        "for",
        "parse_config",
    ]


def _bucket(key: str, dim: int) -> int:
    return zlib.crc32(key.encode()) % dim


def test_featurize_matches_hand_computed_counts() -> None:
    dim = 4096
    x = featurize("Go go home", dim=dim)
    # unigrams: go x2, home x1; bigrams: "go go", "go home" -> counts 2,1,1,1, norm sqrt(7)
    expected = np.zeros(dim)
    for key, count in (("u:go", 2), ("u:home", 1), ("b:go go", 1), ("b:go home", 1)):
        expected[_bucket(key, dim)] += count
    assert np.count_nonzero(expected) == 4  # no collision at this dim
    np.testing.assert_allclose(x, expected / math.sqrt(7), rtol=1e-6)
    assert x.dtype == np.float32 and x.shape == (dim,)


def test_featurize_is_stable_across_processes_and_versions() -> None:
    # pinned values: crc32 does not depend on PYTHONHASHSEED or the Python version
    x = featurize("find papers", dim=64)
    assert np.flatnonzero(x).tolist() == sorted(
        {_bucket("u:find", 64), _bucket("u:papers", 64), _bucket("b:find papers", 64)}
    )
    assert np.flatnonzero(x).tolist() == [1, 24, 46]


def test_featurize_normalized_and_empty() -> None:
    featurizer = TextFeaturizer(256)
    for text in ("Find the function parse_config in the code base", "a", "x y z x y z"):
        assert float(np.linalg.norm(featurizer(text))) == pytest.approx(1.0, abs=1e-6)
    assert not featurizer("?!").any()
    assert featurizer.batch(["a b", "?"]).shape == (2, 256)


def test_featurizer_cache_gives_the_same_features() -> None:
    cached, uncached = TextFeaturizer(128), TextFeaturizer(128, cache_size=0)
    for _ in range(2):
        np.testing.assert_array_equal(
            cached("fetch the page at x"), uncached("fetch the page at x")
        )


def test_without_bigrams_only_unigrams_count() -> None:
    x = TextFeaturizer(4096, bigrams=False)("go home")
    assert np.count_nonzero(x) == 2


@pytest.mark.parametrize("dim", [0, 4, 2.5, True])
def test_bad_dim_names_the_fix(dim: object) -> None:
    with pytest.raises(ConfigError, match="dim=1024"):
        TextFeaturizer(dim)  # type: ignore[arg-type]
