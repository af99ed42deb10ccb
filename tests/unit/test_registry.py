"""Registry: versions, content hashes, labels, protection, diff, concurrency."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from learnloop.errors import ConfigError, InvalidInputError, NotFoundError
from learnloop.registry import (
    RESOURCES,
    VERSIONS,
    Registry,
    RegistryConfig,
    content_sha256,
    file_sha256,
    parse_version_ref,
)
from learnloop.store import SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def store(tmp_path: Path):
    with SqliteStore(tmp_path / "registry.db") as s:
        yield s


@pytest.fixture
def registry(store) -> Registry:
    return Registry(store, clock=Clock())


def test_versions_are_numbered_in_order_and_latest_follows(registry: Registry) -> None:
    v1 = registry.register("planner", "one", author="ana", source="manual")
    v2 = registry.register("planner", "two", author="bo", source="apo-3", metadata={"score": 0.7})
    assert (v1.version, v2.version) == (1, 2)
    assert registry.get("planner").version == 2  # latest
    assert registry.get("planner", "latest").content == "two"
    assert registry.get("planner", 1).content == "one"
    assert registry.get("planner", "v1").content == "one"
    assert registry.get("planner", "1").author == "ana"
    got = registry.get("planner", 2)
    assert (got.source, got.metadata, got.kind) == ("apo-3", {"score": 0.7}, "prompt")
    assert got.ref == "v2"
    assert got.created_at > v1.created_at
    assert [v.version for v in registry.versions("planner")] == [1, 2]
    assert registry.labels("planner") == {"latest": 2}


def test_content_hash_is_sha256_of_the_canonical_content(registry: Registry) -> None:
    text = "Use the calculator for arithmetic. Ünïcode too."
    version = registry.register("p", text)
    assert version.content_hash == hashlib.sha256(text.encode("utf-8")).hexdigest()
    # NIST FIPS 180-2 test vector for "abc"
    assert content_sha256("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    a = content_sha256({"b": 1, "a": [1.5, "x"]})
    assert a == content_sha256({"a": [1.5, "x"], "b": 1})
    assert a == hashlib.sha256(b'{"a":[1.5,"x"],"b":1}').hexdigest()
    with pytest.raises(InvalidInputError, match="not JSON"):
        content_sha256({"x": object()})


def test_identical_content_returns_the_existing_version_unless_told(registry: Registry) -> None:
    first = registry.register("p", "same")
    registry.register("p", "other")
    again = registry.register("p", "same")
    assert again.version == first.version == 1
    assert registry.get("p").version == 2  # latest did not move back
    forced = registry.register("p", "same", dedupe=False)
    assert forced.version == 3 and forced.content_hash == first.content_hash


def test_policies_are_json_payloads(registry: Registry) -> None:
    v = registry.register("tool-policy", {"arms": ["a", "b"], "q": [0.5, 0.25]}, kind="policy")
    assert registry.get("tool-policy", v.version).content == {"arms": ["a", "b"], "q": [0.5, 0.25]}
    with pytest.raises(ConfigError, match="holds 'policy' versions, not 'prompt'"):
        registry.register("tool-policy", "text")


def test_checkpoints_carry_the_file_digest(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"weights-1")
    v1 = registry.register("mlp", str(path), kind="checkpoint", source="job-9")
    assert v1.artifact_sha256 == hashlib.sha256(b"weights-1").hexdigest()
    assert registry.register("mlp", str(path), kind="checkpoint").version == 1  # same bytes
    path.write_bytes(b"weights-2")
    v2 = registry.register("mlp", str(path), kind="checkpoint")
    assert v2.version == 2 and v2.artifact_sha256 == hashlib.sha256(b"weights-2").hexdigest()
    remote = registry.register("mlp", "s3://bucket/ckpt-40", kind="checkpoint")
    assert remote.artifact_sha256 is None
    with pytest.raises(InvalidInputError, match="path or URI"):
        registry.register("mlp", {"not": "a path"}, kind="checkpoint")


def test_folder_digest_covers_names_and_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"A")
    (folder / "sub" / "b.json").write_bytes(b"{}")
    lines = sorted(
        f"{rel}\0{hashlib.sha256(data).hexdigest()}\n"
        for rel, data in (("a.bin", b"A"), ("sub/b.json", b"{}"))
    )
    assert file_sha256(folder) == hashlib.sha256("".join(lines).encode()).hexdigest()
    (folder / "sub" / "b.json").rename(folder / "sub" / "c.json")
    assert file_sha256(folder) != hashlib.sha256("".join(lines).encode()).hexdigest()


def test_bad_names_and_missing_things_raise_clear_errors(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="resource name 'a/b' is not valid"):
        registry.register("a/b", "x")
    with pytest.raises(NotFoundError, match="no resource named 'nope'"):
        registry.get("nope", 1)
    registry.register("p", "x")
    with pytest.raises(NotFoundError, match=r"no version 7 of 'p': 'p' has versions 1\.\.1"):
        registry.get("p", 7)
    with pytest.raises(NotFoundError, match=r"no label 'production'; its labels are \['latest'\]"):
        registry.get("p", "production")
    with pytest.raises(ConfigError, match="label '9lives' is not valid"):
        registry.set_label("p", "9lives", 1)
    with pytest.raises(ConfigError, match="moves automatically"):
        registry.set_label("p", "latest", 1)
    with pytest.raises(NotFoundError):
        registry.set_label("p", "candidate", 5)
    assert parse_version_ref("v12") == 12 and parse_version_ref("prod") is None
    with pytest.raises(InvalidInputError):
        parse_version_ref(True)


def test_protected_labels_need_force_to_move_and_moves_are_recorded(registry: Registry) -> None:
    for text in ("one", "two", "three"):
        registry.register("p", text)
    registry.set_label("p", "production", 1, actor="ana", reason="first release")  # create: ok
    with pytest.raises(ConfigError, match=r"protected \(it points at v1\); moving it to v2 needs"):
        registry.set_label("p", "production", 2)
    assert registry.get("p", "production").version == 1
    registry.set_label("p", "production", 1)  # same version: a no-op, no force needed
    label = registry.set_label("p", "production", "v3", force=True, actor="bo", reason="A/B won")
    assert label.version == 3
    moves = registry.history("p", "production")
    assert [(m.from_version, m.to_version, m.actor, m.reason, m.forced) for m in moves] == [
        (None, 1, "ana", "first release", False),
        (1, 3, "bo", "A/B won", True),
    ]
    assert moves[0].at < moves[1].at
    registry.set_label("p", "canary", 2)
    registry.set_label("p", "canary", "production")  # copy another label
    assert registry.labels("p") == {"canary": 3, "latest": 3, "production": 3}
    all_moves = registry.history("p")
    assert [m.label for m in all_moves].count("latest") == 3
    assert all_moves == sorted(all_moves, key=lambda m: m.at)
    with pytest.raises(ConfigError, match="protected"):
        registry.remove_label("p", "production")
    assert registry.remove_label("p", "canary") is True
    assert registry.remove_label("p", "canary") is False
    assert registry.remove_label("p", "production", force=True) is True


def test_label_history_is_capped(store) -> None:
    registry = Registry(store, RegistryConfig(max_label_moves=3), clock=Clock())
    for i in range(6):
        registry.register("p", f"text {i}")
        registry.set_label("p", "candidate", i + 1)
    moves = registry.label("p", "candidate").moves
    assert [m.to_version for m in moves] == [4, 5, 6]


def test_register_candidate_registers_and_moves_the_label(registry: Registry) -> None:
    registry.register("p", "base")
    version = registry.register_candidate("p", "better", source="apo-run-4", author="optimizer")
    assert registry.get("p", "candidate") == version
    move = registry.history("p", "candidate")[-1]
    assert (move.actor, move.reason) == ("optimizer", "candidate from apo-run-4")


def test_diff_of_text_and_json_versions(registry: Registry) -> None:
    registry.register("p", "line one\nline two\n")
    registry.register("p", "line one\nline 2\nline three")
    assert registry.diff("p", 1, 2) == (
        "--- p@v1\n+++ p@v2\n@@ -1,2 +1,3 @@\n line one\n-line two\n+line 2\n+line three\n"
    )
    assert registry.diff("p", "v2", "latest") == ""
    registry.register("pol", {"q": [1, 2]}, kind="policy")
    registry.register("pol", {"q": [1, 3]}, kind="policy")
    diff = registry.diff("pol", 1, 2)
    assert "-    2\n+    3\n" in diff


def test_resources_lists_each_name_with_kind_count_and_labels(registry: Registry) -> None:
    registry.register("b-prompt", "x")
    registry.register("b-prompt", "y")
    registry.register("a-policy", {"q": 1}, kind="policy")
    registry.set_label("b-prompt", "production", 1)
    summaries = registry.resources()
    assert [(s.name, s.kind, s.num_versions) for s in summaries] == [
        ("a-policy", "policy", 1), ("b-prompt", "prompt", 2)
    ]
    assert summaries[1].labels == {"latest": 2, "production": 1}
    assert [s.name for s in registry.resources(kind="policy")] == ["a-policy"]


def test_concurrent_registrations_never_share_a_number(store) -> None:
    registry = Registry(store)
    results: list[int] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        for i in range(10):
            v = registry.register("p", f"worker {worker} text {i}")
            with lock:
                results.append(v.version)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 61))
    assert registry.get("p").version == 60
    index = store.get_document(RESOURCES, "p").data
    assert index["latest"] == 60 and len(index["hashes"]) == 60


def test_concurrent_identical_registrations_make_one_version(store) -> None:
    registry = Registry(store)
    results: list[int] = []

    def work() -> None:
        results.append(registry.register("p", "the same text").version)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1] * 8
    assert len(registry.versions("p")) == 1


def test_a_version_left_by_a_crashed_writer_is_folded_in(store, registry: Registry) -> None:
    registry.register("p", "one")
    # A writer claimed v2 and died before updating the index.
    orphan = {
        "name": "p", "version": 2, "kind": "prompt", "content": "two",
        "content_hash": content_sha256("two"), "artifact_sha256": None, "author": "x",
        "source": None, "created_at": 5.0, "metadata": {},
    }
    store.put_document(VERSIONS, "p/000002", orphan, expected_revision=0)
    assert registry.register("p", "two").version == 2  # dedupe sees the folded version
    assert registry.register("p", "three").version == 3
    assert json.loads(json.dumps(store.get_document(RESOURCES, "p").data))["latest"] == 3


def test_registry_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="latest"):
        RegistryConfig(protected_labels=frozenset({"latest"}))
    with pytest.raises(ConfigError, match="max_label_moves"):
        RegistryConfig(max_label_moves=0)
