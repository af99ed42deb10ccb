from __future__ import annotations

import json

import pytest

from learnloop.redaction import Redactor, redact_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key sk-proj-ABCDEFGHIJKLMNOPQRSTUV end", "key [REDACTED] end"),
        ("sk-ant-api03-abcdefghijklmnopqrstu", "[REDACTED]"),
        ("stripe sk_live_abcdefghijklmnop1234", "stripe [REDACTED]"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [REDACTED]"),
        ("gh ghp_" + "a" * 36, "gh [REDACTED]"),
        ("github_pat_" + "b" * 30, "[REDACTED]"),
        ("slack xoxb-1234567890-abcdef", "slack [REDACTED]"),
        ("google AIza" + "c" * 35, "google [REDACTED]"),
        ("hf hf_" + "d" * 34, "hf [REDACTED]"),
        ("Authorization: Bearer abc.def_ghi", "Authorization: Bearer [REDACTED]"),
        ("postgresql://user:p4ss@host:5432/db", "postgresql://user:[REDACTED]@host:5432/db"),
        ("password=hunter2 and more", "password=[REDACTED] and more"),
        ("DB_PASSWORD: s3cr3t", "DB_PASSWORD: [REDACTED]"),
        ("client_secret='abc123'", "client_secret='[REDACTED]'"),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----",
            "[REDACTED]",
        ),
        # things that are not secrets stay as they are
        ("max_tokens=100", "max_tokens=100"),
        ("monkey: banana", "monkey: banana"),
        ("the skill set is broad", "the skill set is broad"),
        ("https://example.com/path", "https://example.com/path"),
    ],
)
def test_patterns(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_json_stays_valid_and_secret_members_are_blanked() -> None:
    document = {
        "password": 'with "quotes" and \\ backslash',
        "OPENAI_API_KEY": "not-a-recognizable-format",
        "auth_token": "t0k3n",
        "prompt_token_ids": [1, 2, 3],
        "token_count": 12,
        "note": "url https://bob:pw@host/x and Bearer abc",
    }
    text, count = Redactor().redact(json.dumps(document))
    again = json.loads(text)
    assert again["password"] == "[REDACTED]"
    assert again["OPENAI_API_KEY"] == "[REDACTED]"
    assert again["auth_token"] == "[REDACTED]"
    assert again["prompt_token_ids"] == [1, 2, 3] and again["token_count"] == 12
    assert again["note"] == "url https://bob:[REDACTED]@host/x and Bearer [REDACTED]"
    assert count == 5


def test_extra_patterns() -> None:
    text, count = Redactor(extra=[r"ACME-\d{6}"]).redact("id ACME-123456 ok")
    assert text == "id [REDACTED] ok" and count == 1


def test_a_private_key_without_its_end_line_is_redacted_and_json_stays_valid() -> None:
    key = '-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nsay "hi" \\ more'
    text, count = Redactor().redact(json.dumps({"pem": key, "next": "kept"}))
    assert json.loads(text) == {"pem": "[REDACTED]", "next": "kept"} and count == 1
    # in a plain string the key runs to the end of the string, or to a quote
    assert Redactor().redact_string("key: " + key[:48]) == ("key: [REDACTED]", 1)
    assert Redactor().redact_string(f'pem="{key[:48]}" rest') == ('pem="[REDACTED]" rest', 1)
