"""Saving a tool selector's learned state in the store (the default persistence).

The state is one document in collection ``"bandit_state"`` keyed by the policy's
name, written with compare-and-set: :class:`StorePolicyState` remembers the
revision it last read or wrote, and a save over someone else's newer write raises
:class:`~learnloop.errors.ConflictError` instead of losing their updates.

>>> import os, tempfile
>>> from learnloop.store import open_store
>>> from learnloop.bandits import ToolSelector, make_policy
>>> store = open_store(os.path.join(tempfile.mkdtemp(), "s.db"))
>>> state = StorePolicyState(store, "router")
>>> selector = ToolSelector(make_policy("ucb1"), tools=["a", "b"], name="router")
>>> state.save(selector).revision
1
>>> state.load().tools
('a', 'b')
>>> store.close()
"""

from __future__ import annotations

import logging
from typing import Any

from learnloop.bandits.contexts import Featurizer
from learnloop.bandits.selector import SharedPolicyState, ToolSelector
from learnloop.errors import ConfigError
from learnloop.store.base import Document, DocumentStore

__all__ = ["BANDIT_COLLECTION", "StorePolicyState"]

logger = logging.getLogger(__name__)

#: Document collection holding bandit policies (key = policy name).
BANDIT_COLLECTION = "bandit_state"


class StorePolicyState:
    """Load and save one named selector in a :class:`DocumentStore` with compare-and-set."""

    def __init__(self, store: DocumentStore, name: str) -> None:
        if not name:
            raise ConfigError("a policy state needs a non-empty name, e.g. 'default'")
        self.store = store
        self.name = name
        self.revision: int | None = None

    def load(
        self, *, featurizer: Featurizer | None = None, shared: SharedPolicyState | None = None
    ) -> ToolSelector | None:
        """The saved selector, or None when nothing was saved under this name yet."""
        document = self.store.get_document(BANDIT_COLLECTION, self.name)
        if document is None:
            self.revision = 0
            return None
        self.revision = document.revision
        return ToolSelector.from_dict(document.data, featurizer=featurizer, shared=shared)

    def save(self, selector: ToolSelector, *, force: bool = False) -> Document:
        """Write ``selector``'s state; raises ConflictError if another writer saved since.

        Before any :meth:`load`, the save requires that nothing is stored yet (so a
        fresh replica cannot wipe a trained policy); ``force=True`` overwrites
        whatever is stored.
        """
        data: dict[str, Any] = selector.to_dict()
        expected = None if force else (self.revision or 0)
        document = self.store.put_document(
            BANDIT_COLLECTION, self.name, data, expected_revision=expected
        )
        self.revision = document.revision
        logger.debug("saved bandit policy %s at revision %d", self.name, document.revision)
        return document
