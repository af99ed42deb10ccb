import pytest

from learnloop.bandits import ToolSelector, make_policy
from learnloop.bandits.state import BANDIT_COLLECTION, StorePolicyState
from learnloop.errors import ConflictError
from learnloop.store import open_store


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/s.db")
    yield s
    s.close()


def test_save_load_round_trip_and_cas(store):
    selector = ToolSelector(make_policy("epsilon_greedy"), tools=["a", "b"], name="router")
    selector.update(selector.choose("grep x"), 1.0)
    writer = StorePolicyState(store, "router")
    assert writer.save(selector).revision == 1
    assert store.get_document(BANDIT_COLLECTION, "router").revision == 1
    loaded = StorePolicyState(store, "router").load()
    assert loaded.stats() == selector.stats()
    # a second replica loads, saves; the first one's stale save must conflict
    other = StorePolicyState(store, "router")
    other.save(other.load())
    with pytest.raises(ConflictError):
        writer.save(selector)
    # a fresh state that never loaded cannot overwrite a trained policy
    with pytest.raises(ConflictError):
        StorePolicyState(store, "router").save(selector)
    assert StorePolicyState(store, "router").save(selector, force=True).revision == 3
    assert StorePolicyState(store, "missing").load() is None
