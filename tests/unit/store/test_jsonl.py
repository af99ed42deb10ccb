from __future__ import annotations

import io
import json

import pytest

from learnloop.errors import InvalidInputError
from learnloop.store import SqliteStore
from learnloop.store.jsonl import export_jsonl, import_jsonl
from learnloop.store.testing import make_episode


def test_export_import_roundtrip(sqlite_store: SqliteStore, tmp_path) -> None:
    episodes = [make_episode(i) for i in range(7)]
    sqlite_store.add_episodes(episodes)
    buffer = io.StringIO()
    assert export_jsonl(sqlite_store, buffer) == 7
    other = SqliteStore(tmp_path / "other.db")
    assert import_jsonl(other, io.StringIO(buffer.getvalue())) == 7
    assert other.query_episodes() == episodes
    other.close()


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "line 3: not valid JSON"),
        (json.dumps({"task": "no id"}), "line 3: not a valid episode: id"),
        (
            json.dumps({"id": "x", "task": "t", "status": "done"}),
            "line 3: not a valid episode: status",
        ),
        (
            json.dumps(
                {"id": "x", "task": "t", "steps": [{"index": 0, "action": "a", "confidence": 2}]}
            ),
            "line 3: not a valid episode: steps.0.confidence",
        ),
        (
            json.dumps(
                {"id": "x", "task": "t", "steps": [{"index": 0, "action": "a", "reward": "NaN"}]}
            ),
            "line 3: not a valid episode: steps.0.reward",
        ),
        (
            json.dumps({"id": "x", "task": "t", "surprise": 1}),
            "line 3: not a valid episode: surprise",
        ),
    ],
)
def test_corrupt_line_is_named_and_nothing_imported(
    sqlite_store: SqliteStore, bad_line: str, message: str
) -> None:
    good = [json.dumps(make_episode(i).to_dict()) for i in range(2)]
    text = "\n".join([*good, bad_line, json.dumps(make_episode(9).to_dict())]) + "\n"
    with pytest.raises(InvalidInputError, match=message):
        import_jsonl(sqlite_store, io.StringIO(text))
    assert sqlite_store.count_episodes() == 0


def test_blank_lines_are_skipped(sqlite_store: SqliteStore) -> None:
    text = "\n" + json.dumps(make_episode(1).to_dict()) + "\n\n"
    assert import_jsonl(sqlite_store, io.StringIO(text)) == 1
