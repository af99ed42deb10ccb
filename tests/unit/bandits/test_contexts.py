import zlib

import numpy as np
import pytest

from learnloop.bandits.contexts import (
    DEFAULT_KEYWORDS,
    Context,
    DenseFeaturizer,
    HashedTextConfig,
    HashedTextFeaturizer,
    KeywordFeaturizer,
    keyword_category,
    make_featurizer,
)
from learnloop.errors import ConfigError, InvalidInputError


@pytest.mark.parametrize("category, words", list(DEFAULT_KEYWORDS.items()))
def test_every_spec_keyword_maps_to_its_category(category, words):
    for word in words:
        assert keyword_category(f"please {word} it") == category


def test_keyword_rules_first_match_whole_words_and_general():
    assert keyword_category("search the file") == "search"  # search before file_ops
    assert keyword_category("truncate the table") == "general"  # 'run' inside a word
    assert keyword_category("") == "general"


def test_keyword_featurizer_one_hot_with_bias():
    ctx = KeywordFeaturizer()("run the tests")
    assert ctx.key == "execute"
    assert ctx.indices.tolist() == [0, 1 + 2]
    np.testing.assert_allclose(ctx.values, [2**-0.5, 2**-0.5])
    with pytest.raises(ConfigError):
        KeywordFeaturizer({"general": ("x",)})


def test_hashed_features_by_hand():
    f = HashedTextFeaturizer(HashedTextConfig(dim=97, word_pairs=True))
    ctx = f("read file")
    buckets = sorted(
        {1 + (zlib.crc32(t.encode()) & 0x7FFFFFFF) % 96 for t in ("read", "file", "read file")}
    )
    assert sorted(ctx.indices.tolist()) == sorted([0, *buckets])
    assert len(buckets) == 3
    np.testing.assert_allclose(ctx.values, 0.5)  # 4 features, each 1/sqrt(4)
    assert ctx.key == "*"


def test_hashed_repeats_add_up_and_order_matters_through_pairs():
    f = HashedTextFeaturizer(HashedTextConfig(dim=4096, bias=False, word_pairs=False))
    ctx = f("spam spam eggs")
    dense = ctx.dense()
    assert sorted(dense[dense > 0].round(6).tolist()) == sorted(
        [round(1 / 5**0.5, 6), round(2 / 5**0.5, 6)]
    )
    g = HashedTextFeaturizer(dim=4096)
    assert not np.array_equal(g("read file").dense(), g("file read").dense())


def test_hashed_cache_is_bounded_and_consistent():
    f = HashedTextFeaturizer(HashedTextConfig(dim=64, cache_size=2))
    first = f("a b").dense()
    f("c d"), f("e f")
    assert len(f._cache) == 2
    np.testing.assert_array_equal(f("a b").dense(), first)


def test_dense_featurizer_and_shape_check():
    f = DenseFeaturizer(lambda text: [0.0, 3.0, 4.0], 3)
    ctx = f("x")
    assert ctx.indices.tolist() == [1, 2]
    np.testing.assert_allclose(ctx.values, [0.6, 0.8])
    with pytest.raises(InvalidInputError):
        DenseFeaturizer(lambda text: [1.0], 3)("x")


def test_round_trips():
    for f in (KeywordFeaturizer(), HashedTextFeaturizer(dim=128)):
        g = make_featurizer(f.to_dict())
        np.testing.assert_array_equal(g("grep the api").dense(), f("grep the api").dense())
    ctx = HashedTextFeaturizer(dim=32)("hello world")
    back = Context.from_dict(ctx.to_dict())
    np.testing.assert_array_equal(back.dense(), ctx.dense())
    with pytest.raises(InvalidInputError):
        Context.from_dict({"key": "*", "indices": [40], "values": [1.0], "dim": 32})
