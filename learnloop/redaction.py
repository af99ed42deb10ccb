"""Secret redaction: API keys, bearer tokens, passwords and private keys.

The recorder redacts the JSON text of an episode just before it is queued for the
store, so nothing secret is ever written. Every replacement stays inside one JSON
string, so redacting JSON text leaves valid JSON.

How it stays cheap: one Aho-Corasick pass over the lower-cased text finds every
*trigger* (``sk-``, ``akia``, ``bearer``, ``password``, ``://``...); a pattern's
regex is then matched only at the positions where its trigger occurred, never
scanned across the whole text. Text without triggers costs one ``lower()`` and
one automaton pass.

>>> redact_text('curl -H "Authorization: Bearer abc.def-123" https://u:hunter2@x.io')
'curl -H "Authorization: Bearer [REDACTED]" https://u:[REDACTED]@x.io'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import ahocorasick  # type: ignore[import-not-found, unused-ignore]

__all__ = ["REDACTED", "Redactor", "SecretPattern", "default_patterns", "redact_text"]

REDACTED = "[REDACTED]"

#: Key names that hold secrets when a key *ends* with them: ``DB_PASSWORD``,
#: ``OPENAI_API_KEY``, ``auth_token``... (``tokens`` or ``token_count`` do not).
SECRET_KEY_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "secret_key",
    "api_key",
    "api-key",
    "apikey",
    "access_key",
    "private_key",
    "token",
    "credential",
    "credentials",
)

_WORD_CHAR = re.compile(r"[A-Za-z0-9_]")
# After a secret key word: `": "value"` in JSON, or `=value`, `: value`, `='value'`,
# `=\"value\"` in free text (the last as it appears inside a JSON string).
_JSON_MEMBER_VALUE = re.compile(r'"[ \t]*:[ \t]*"((?:[^"\\]|\\.)+)"')
_FREE_TEXT_VALUE = re.compile(
    r"[ \t]*[=:][ \t]*(?:'([^'\\\"]+)'|\\\"((?:[^\"\\]|\\[^\"])+)\\\"|([^\s\"\\'&,;\]}]+))"
)


@dataclass(frozen=True, slots=True)
class SecretPattern:
    """A secret recognised by ``regex``, matched where a trigger occurs.

    ``lead`` is how many characters before the trigger the match starts;
    ``group`` is the regex group replaced by ``[REDACTED]`` (0: the whole match);
    ``boundary`` requires that no word character precedes the match.
    """

    name: str
    triggers: tuple[str, ...]
    regex: re.Pattern[str]
    lead: int = 0
    group: int = 0
    boundary: bool = True


def default_patterns() -> tuple[SecretPattern, ...]:
    """The built-in patterns: provider API keys, bearer/JWT tokens, URL passwords,
    private keys. Secrets named by their key (``password=...``) are handled apart."""

    def p(name: str, triggers: tuple[str, ...], pattern: str, **kw: int | bool) -> SecretPattern:
        return SecretPattern(name, triggers, re.compile(pattern), **kw)  # type: ignore[arg-type]

    return (
        p(
            "private_key",
            ("-----begin",),
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[^\"]*?-----END [A-Z ]*PRIVATE KEY-----",
            boundary=False,
        ),
        p("openai_anthropic_key", ("sk-",), r"sk-[A-Za-z0-9_\-]{16,}"),
        p("stripe_key", ("k_live_", "k_test_"), r"[rs]k_(?:live|test)_[A-Za-z0-9]{16,}", lead=1),
        p("aws_access_key", ("akia", "asia"), r"(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Za-z])"),
        p(
            "github_token",
            ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
            r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})",
        ),
        p("slack_token", ("xox",), r"xox[abposr]-[A-Za-z0-9\-]{10,}"),
        p("google_api_key", ("aiza",), r"AIza[0-9A-Za-z_\-]{35}"),
        p("huggingface_token", ("hf_",), r"hf_[A-Za-z0-9]{30,}"),
        p("jwt", ("eyj",), r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
        p("bearer", ("bearer",), r"[Bb]earer\s+([A-Za-z0-9\-._~+/]+=*)", group=1),
        p("url_password", ("://",), r"://[^/\s:@\"\\]+:([^@\s/\"\\]+)@", group=1, boundary=False),
    )


class Redactor:
    """Replaces secrets in text by ``[REDACTED]``; counts the replacements."""

    def __init__(
        self, patterns: Sequence[SecretPattern] | None = None, extra: Sequence[str] = ()
    ) -> None:
        self._patterns = tuple(patterns) if patterns is not None else default_patterns()
        self._extra = tuple(re.compile(e) for e in extra)
        self._automaton = ahocorasick.Automaton()
        by_trigger: dict[str, list[SecretPattern | None]] = {}
        for secret in self._patterns:
            for trigger in secret.triggers:
                by_trigger.setdefault(trigger, []).append(secret)
        for word in SECRET_KEY_WORDS:
            by_trigger.setdefault(word, []).append(None)  # None: a secret key word
        for trigger, entries in by_trigger.items():
            self._automaton.add_word(trigger, (len(trigger), tuple(entries)))
        self._automaton.make_automaton()

    def _spans(self, text: str, lowered: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for end, (length, patterns) in self._automaton.iter(lowered):
            start = end - length + 1
            for pattern in patterns:
                if pattern is None:
                    span = self._key_word_value(text, start, end + 1)
                else:
                    span = self._match(pattern, text, start)
                if span is not None:
                    spans.append(span)
        return spans

    @staticmethod
    def _match(pattern: SecretPattern, text: str, trigger_start: int) -> tuple[int, int] | None:
        start = trigger_start - pattern.lead
        if start < 0:
            return None
        if pattern.boundary and start > 0 and _WORD_CHAR.match(text, start - 1):
            return None
        match = pattern.regex.match(text, start)
        return match.span(pattern.group) if match else None

    @staticmethod
    def _key_word_value(text: str, start: int, end: int) -> tuple[int, int] | None:
        if end < len(text) and _WORD_CHAR.match(text, end):
            return None  # the key goes on: "tokens", "password_hint"
        match = _JSON_MEMBER_VALUE.match(text, end)
        if match is None:
            match = _FREE_TEXT_VALUE.match(text, end)
        if match is None:
            return None
        group = next(i for i in range(1, (match.lastindex or 0) + 1) if match.group(i) is not None)
        value_start, value_end = match.span(group)
        if text[value_start:value_end] == REDACTED:
            return None
        return value_start, value_end

    def redact(self, text: str) -> tuple[str, int]:
        """``text`` with secrets replaced, and the number of replacements."""
        lowered = text.lower()
        if len(lowered) != len(text):  # rare characters whose lower case is longer
            lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
        spans = self._spans(text, lowered)
        total = 0
        if spans:
            spans.sort()
            pieces: list[str] = []
            position = 0
            for start, end in spans:
                if start < position:
                    continue  # overlaps a span already replaced
                pieces.append(text[position:start])
                pieces.append(REDACTED)
                position = end
                total += 1
            pieces.append(text[position:])
            text = "".join(pieces)
        for regex in self._extra:
            text, count = regex.subn(REDACTED, text)
            total += count
        return text, total


def redact_text(text: str) -> str:
    """``text`` with the built-in secret patterns replaced by ``[REDACTED]``."""
    return Redactor().redact(text)[0]
