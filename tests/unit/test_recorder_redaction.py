"""The recorder's redaction fast path: values are redacted string by string, after a
cheap test over their joined strings; these tests look for what it could miss."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from learnloop.bounds import Sanitizer
from learnloop.episode import Episode
from learnloop.recorder import Recorder, RecorderConfig
from learnloop.redaction import REDACTED, Redactor
from learnloop.store import SqliteStore

# One example of each built-in pattern, as it would appear in free text.
SECRETS = {
    "openai": "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0",
    "anthropic": "sk-ant-api03-" + "q" * 24,
    "stripe": "sk_live_" + "Z" * 20,
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "github": "ghp_" + "x" * 36,
    "github_pat": "github_pat_" + "y" * 30,
    "slack": "xoxb-1234567890-abcdef",
    "google": "AIza" + "G" * 35,
    "huggingface": "hf_" + "h" * 34,
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlMTIz",
}
# Free text whose secret part is the value after the trigger.
PHRASES = {
    "bearer": ("Authorization: Bearer ", "tok3n.v4lue_x"),
    "bare bearer": ("Bearer ", "abc123def456"),
    "url": ("postgresql://admin:", "hunter2pw@db.example.com/x"),
    "password=": ("password=", "swordfish9"),
    "DB_PASSWORD:": ("DB_PASSWORD: ", "s3cr3tvalue"),
    "quoted": ('client_secret="', 'quotedsecret42"'),
    "json in a string": ('{"api_key": "', 'embeddedkey77"}'),
}
FILLER = "search read write file parse json value error status code path user name list".split()


def recorded(value: Any, *, config: RecorderConfig | None = None, tmp_path: Any) -> str:
    """The stored JSON body of an episode that carries ``value`` everywhere a value goes."""
    store = SqliteStore(tmp_path / f"r{random.getrandbits(32)}.db")
    with Recorder(store, config or RecorderConfig()) as rec:
        text = value if isinstance(value, str) else json.dumps(value)
        eid = rec.begin(text, metadata={"m": value}, versions={"v": text})
        rec.step(eid, text, tool=text, state={"s": value}, decision=text, result=value, error=text)
        rec.observe(eid, value, source=text)
        final = rec.complete(eid, outcome={"o": value}, reason=text)
        rec.flush()
    stored = store.get_episode(eid)
    store.close()
    assert stored == final
    return json.dumps(stored.to_dict())


def test_every_pattern_is_redacted_in_every_field(tmp_path: Any) -> None:
    for name, secret in SECRETS.items():
        body = recorded(f"key {secret} end", tmp_path=tmp_path)
        assert secret[6:] not in body, name
    for name, (lead, secret) in PHRASES.items():
        body = recorded(f"x {lead}{secret}", tmp_path=tmp_path)
        assert secret.strip('"}')[2:] not in body, name


def test_a_secret_in_a_nested_value_or_a_list(tmp_path: Any) -> None:
    value = {
        "config": {"db": {"password": "nested-pw-1", "hosts": ["a", {"token": "in-a-list-2"}]}},
        "args": [["deep", ["deeper", f"key {SECRETS['openai']}"]]],
    }
    body = recorded(value, tmp_path=tmp_path)
    for fragment in ("nested-pw-1", "in-a-list-2", SECRETS["openai"][3:]):
        assert fragment not in body
    assert '"hosts"' in body  # the rest is kept


def test_a_secret_in_a_key(tmp_path: Any) -> None:
    value = {SECRETS["github"]: 1, f"cache {SECRETS['aws']}": {"inner": 2}}
    body = recorded(value, tmp_path=tmp_path)
    assert SECRETS["github"][4:] not in body and SECRETS["aws"][4:] not in body


def test_a_key_that_names_a_secret_blanks_its_string_value_only(tmp_path: Any) -> None:
    value = {
        "OPENAI_API_KEY": "not-a-recognizable-format",
        "auth_token": "t0k3n",
        "token_count": 12,
        "max_tokens": "100",
        "password": "",
        "prompt_token_ids": [1, 2, 3],
    }
    stored = json.loads(recorded(value, tmp_path=tmp_path))
    state = stored["steps"][0]["state"]["s"]
    assert state["OPENAI_API_KEY"] == REDACTED and state["auth_token"] == REDACTED
    assert state["token_count"] == 12 and state["max_tokens"] == "100"
    assert state["password"] == "" and state["prompt_token_ids"] == [1, 2, 3]


def test_a_secret_cut_by_the_string_bound_is_redacted_whole(tmp_path: Any) -> None:
    config = RecorderConfig(max_string_chars=100, max_text_chars=100)
    for name, secret in SECRETS.items():
        for start in (90, 97, 99):  # the cut falls inside the secret
            text = "x" * start + " " + secret + " tail" * 50
            body = recorded(text, config=config, tmp_path=tmp_path)
            kept = secret[: 100 - start - 1]
            if len(kept) >= 4:  # a fragment long enough to be telling
                assert f" {kept}" not in body, (name, start)
    pem = (
        "-----BEGIN RSA PRIVATE KEY-----\n"
        + "MIIEowIBAAKCAQEA" * 100
        + "\n-----END RSA PRIVATE KEY-----"
    )
    body = recorded("key: " + pem, config=config, tmp_path=tmp_path)
    assert "MIIEow" not in body
    # a key cut so short that its END line is gone entirely
    body = recorded(pem[:3000], config=RecorderConfig(max_string_chars=200), tmp_path=tmp_path)
    assert "MIIEow" not in body


def test_values_that_need_nothing_are_kept_as_they_are(tmp_path: Any) -> None:
    value = {"note": "the skill set is broad", "url": "https://example.com/path", "n": -1.5}
    stored = json.loads(recorded(value, tmp_path=tmp_path))
    assert stored["steps"][0]["state"]["s"] == value


def test_extra_patterns_apply_to_every_string_and_key(tmp_path: Any) -> None:
    config = RecorderConfig(extra_secret_patterns=(r"ACME-\d{6}",))
    body = recorded({"ACME-111111": "id ACME-222222 ok"}, config=config, tmp_path=tmp_path)
    assert "111111" not in body and "222222" not in body and "id [REDACTED] ok" in body


def test_redaction_off_keeps_secrets(tmp_path: Any) -> None:
    body = recorded(
        SECRETS["openai"], config=RecorderConfig(redact_secrets=False), tmp_path=tmp_path
    )
    assert SECRETS["openai"] in body


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.random()
    if depth > 3 or kind < 0.45:
        words = [rng.choice(FILLER) for _ in range(rng.randint(0, 8))]
        if rng.random() < 0.3:
            secret = rng.choice([*SECRETS.values(), *("".join(pair) for pair in PHRASES.values())])
            words.insert(rng.randint(0, len(words)), secret)
        return " ".join(words)
    if kind < 0.55:
        return rng.choice([0, -3, 2.5, True, None])
    if kind < 0.75:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = [
        rng.choice(FILLER),
        "api_key",
        "user_password",
        "token_count",
        "x_" + rng.choice(FILLER),
    ]
    return {
        rng.choice(keys) + str(i): random_value(rng, depth + 1) for i in range(rng.randint(0, 4))
    }


def test_value_redaction_catches_everything_text_redaction_catches() -> None:
    """Differential check against the JSON-text redactor (the slow, proven path): on
    random values, every character it replaces the fast path replaces too."""
    redactor, reference = Redactor(), Redactor()
    rng = random.Random(7)
    for _ in range(400):
        value = {"state": random_value(rng)}
        sanitizer = Sanitizer(
            max_chars=10_000, max_items=100, max_depth=20, plain_keys=redactor.plain_keys
        )
        bounded = sanitizer.value(value, "state")
        flagged = redactor.needs_redaction(sanitizer.keys, sanitizer.texts)
        fast = orjson.dumps(redactor.redact_value(bounded)[0] if flagged else bounded).decode()
        slow, count = reference.redact(orjson.dumps(bounded).decode())
        if count:
            assert flagged
        for secret in SECRETS.values():
            if secret not in slow:
                assert secret not in fast, (secret, value)
        for lead, secret in PHRASES.values():
            core = secret.strip('"}')
            if lead + core not in slow:
                assert core not in fast, (core, value)


def test_the_prefilter_never_skips_a_string_that_holds_a_secret() -> None:
    redactor = Redactor()
    for secret in SECRETS.values():
        assert redactor.might_hold_secret(secret)
        assert redactor.redact_string(f"a {secret} b")[0] == f"a {REDACTED} b"
    for lead, secret in PHRASES.values():
        assert redactor.might_hold_secret(lead + secret)
        assert redactor.redact_string(lead + secret)[1] == 1
    assert not redactor.might_hold_secret("plain words only, nothing to see")
    # joining with NUL can only add anchors between strings, never hide one in a string
    assert not redactor.might_hold_secret("\x00".join(["Bear", "er abc"]))
    assert redactor.might_hold_secret("\x00".join(["x", "Bearer abc"]))


def test_key_cache_is_bounded_and_stays_correct() -> None:
    redactor = Redactor()
    redactor.max_cached_keys = 50
    for i in range(500):
        assert redactor.key_verdict(f"field_{i}") == (f"field_{i}", False, 0)
    assert len(redactor.plain_keys) <= 50
    assert redactor.key_verdict("db_password")[1] is True
    assert redactor.redact_value({"db_password": "x", "field_3": "y"})[0] == {
        "db_password": REDACTED,
        "field_3": "y",
    }


def test_returned_and_stored_episodes_agree_after_redaction(tmp_path: Any) -> None:
    store = SqliteStore(tmp_path / "agree.db")
    with Recorder(store) as rec:
        eid = rec.begin("deploy with token=abc123", metadata={"api_key": "k1"})
        rec.step(eid, "a", state={"headers": {"Authorization": f"Bearer {SECRETS['jwt']}"}})
        final = rec.complete(eid, outcome={"note": "done"})
        assert rec.stats().redactions == 3
        rec.flush()
    stored = store.get_episode(eid)
    assert stored == final and isinstance(stored, Episode)
    assert stored.task == "deploy with token=[REDACTED]"
    assert stored.metadata == {"api_key": REDACTED}
    assert stored.steps[0].state == {"headers": {"Authorization": f"Bearer {REDACTED}"}}
    store.close()


@pytest.mark.parametrize("secret", [SECRETS["openai"], "password=hunter22"])
def test_observation_and_tool_arguments_are_redacted(secret: str, tmp_path: Any) -> None:
    store = SqliteStore(tmp_path / "tool.db")
    rec = Recorder(store)

    @rec.tool
    def call(arg: str, **kwargs: Any) -> str:
        return f"echo {arg}"

    with rec.episode("t") as ep:
        call(secret, header=secret)
        ep.observe({"seen": secret})
    rec.close()
    body = json.dumps(store.get_episode(ep.id).to_dict())
    assert secret[-8:] not in body
    store.close()


def test_a_key_alone_triggers_redaction(tmp_path: Any) -> None:
    """Values with nothing suspicious in their strings: only the keys tell."""
    store = SqliteStore(tmp_path / "keys.db")
    with Recorder(store) as rec:
        eid = rec.begin("plain task", metadata={"api_key": "abc"})
        rec.step(eid, "a", state={"password": "hunter"})
        rec.step(eid, "b", state={"cfg": {"db_password": "pw"}, "n": [{"token": "t"}]})
        rec.step(eid, "c", result={SECRETS["aws"]: 1})
        rec.observe(eid, {"secret": "s"})
        final = rec.complete(eid, outcome={"credentials": "c"})
    assert final.metadata == {"api_key": REDACTED}
    assert final.steps[0].state == {"password": REDACTED}
    assert final.steps[1].state == {"cfg": {"db_password": REDACTED}, "n": [{"token": REDACTED}]}
    assert final.steps[2].result == {REDACTED: 1}
    assert final.observations[0].content == {"secret": REDACTED}
    assert final.outcome == {"credentials": REDACTED}
    assert store.get_episode(eid) == final
    store.close()


FRAGMENTS = [
    "sk-", "sk_live_", "rk_test_", "AKIA", "ASIA", "AIza", "ghp_", "github_pat_", "xoxb-",
    "hf_", "eyJ", ".", "Bearer ", "bearer\t", "://", "user:", "@", "password", "API_KEY",
    "token", "tokens", "=", ": ", '"', "'", "-----BEGIN RSA PRIVATE KEY-----", "-----END",
    "ABCDEFGHIJKLMNOP", "abcdefghijklmnop0123", "x", " ", "\n", "_", "-", "[REDACTED]", "é", "İ",
]  # fmt: skip


def test_holds_secret_never_misses_what_redact_string_replaces() -> None:
    """Random strings made of triggers, anchors and near misses, alone and joined."""
    redactor = Redactor()
    rng = random.Random(11)
    for _ in range(3000):
        parts = ["".join(rng.choices(FRAGMENTS, k=rng.randint(1, 12))) for _ in range(3)]
        replaced = [redactor.redact_string(part)[1] for part in parts]
        for part, count in zip(parts, replaced, strict=True):
            if count:
                assert redactor.holds_secret(part), part
        if any(replaced):
            assert redactor.needs_redaction([], parts), parts
