"""The one redactor: every artefact of a run passes through it before it is written or sent.

Spans (before export), result rows (checkpoint, results.json, and so the report and the Hub),
metadata (`config`, `command`), console lines and the log (`--debug`) all use the same
`Redactor`, built once per run from what it knows is secret:

- values of secret-named environment variables (`*_KEY`, `*_TOKEN`, `*_SECRET`, `*_PASSWORD`, ...);
- the Hugging Face token; the values of secret-named `--model-args` at any depth
  (`api_key=...`, `extra_headers={"Authorization": ...}`, `vertex_credentials={"private_key": ...}`,
  everything under a `*credentials` argument), also as they appear JSON-escaped;
- the password of URL userinfo (`--api-base http://user:pass@host`, `--otlp-forward`).

Without knowing a value it still catches credential shapes: `Bearer <token>`, `NAME=value` /
`"name": "value"` where the name ends in key/token/secret/password/... with any prefix
(`DB_PASSWORD=...`), URL userinfo (`scheme://user:pass@`), `sk-...` and `hf_...` tokens.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

REDACTED = "[REDACTED]"
MAX_ATTRIBUTE_CHARS = 8192
MIN_SECRET_CHARS = 6
MIN_ENV_SECRET_CHARS = 8

# environment variables whose values are secrets (anywhere in the name)
SECRET_ENV = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE", re.I)
# the last word of a field name that makes its value a secret (api_key, DB_PASSWORD, x-api-key,
# Authorization, vertex_credentials, accessToken ...)
_SECRET_WORDS = frozenset(
    {"key", "apikey", "token", "secret", "password", "passwd", "pwd", "authorization", "auth", "credential", "credentials", "cookie"}
)
_SECRET_NAMES = frozenset({"api_key", "x-api-key", "private_key", "client_secret", "hf_token", "access_token", "set-cookie"})
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

# the last word of a NAME in NAME=value that makes the value a secret
_SECRET_WORD = r"(?:api[_-]?key|_key|-key|token|secret|password|passwd|pwd|authorization|credentials?)"
_NAME = rf"[A-Za-z0-9_.-]*{_SECRET_WORD}"
NAME_VALUE_REFERENCE = re.compile(rf"(?i)(?<![A-Za-z0-9])((?:{_NAME})[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}}&]{{6,}}")
# The same matches, found in linear time: the reference's name may start anywhere in the run of name
# characters before the secret word (that run always begins after a non-alphanumeric character), so
# only the secret word and what follows it decide a match. An earlier linear search (every name run
# a candidate, its value searched again when the name was not secret) missed `foo=token=\ntokentoken`:
# the first candidate's value swallowed `token=` and the secret after the line break was never seen.
_NAME_VALUE = re.compile(rf"(?i)({_SECRET_WORD}[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}}&]{{6,}}")


_NAME_VALUE_TAIL = re.compile(r"[\"']?\s*[:=]\s*[\"']?[^\s\"',;}&]{6,}")
# every NAME=value match ends its name with one of these (api_key, x-api-key, DB_PASSWORD: "key", "password")
_NAME_VALUE_WORDS = ("key", "token", "secret", "password", "passwd", "pwd", "authorization", "credential")


def _name_value_probe(lowered: str) -> bool:
    """Whether a secret word is followed by a separator and a value in the lowered text: each word
    found with str.find (C speed) and the separator checked there; `re` would try the alternation
    at every position."""
    for word in _NAME_VALUE_WORDS:
        at = lowered.find(word)
        while at != -1:
            end = at + len(word)
            if _NAME_VALUE_TAIL.match(lowered, end) or (word == "credential" and _NAME_VALUE_TAIL.match(lowered, end + 1)):
                return True
            at = lowered.find(word, at + 1)
    return False


# (pattern, replacement, needles, fold, probe). Needles: one of them occurs in any match (in the
# text's `_fold` if fold). Probe: finds something in the `_fold` wherever the pattern would match
# the text (a necessary condition, checked before the pattern; case-sensitive): Python's
# `re` scans a case-insensitive alternation several times slower than a case-sensitive one, and the
# probes almost never match, so a value with no secret costs one fast scan per pattern.
_PATTERNS: tuple[tuple[re.Pattern[str], Any, tuple[str, ...], bool, Callable[[str], object] | None], ...] = (
    (
        re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:\"']+(?::[^\s/@\"']*)?@"),
        r"\1" + REDACTED + "@",
        ("://",),
        False,
        re.compile(r"://[^\s/@:\"']+(?::[^\s/@\"']*)?@").search,
    ),
    (
        re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
        r"\1" + REDACTED,
        ("bearer",),
        True,
        re.compile(r"bearer\s+[a-z0-9._~+/=-]{8,}").search,
    ),
    (
        re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?basic\s+)[A-Za-z0-9+/=]{8,}"),
        r"\1" + REDACTED,
        ("basic",),
        True,
        re.compile(r"authorization[\"']?\s*[:=]\s*[\"']?basic\s+[a-z0-9+/=]{8,}").search,
    ),
    (
        # NAME=value, NAME: "value": the matches of NAME_VALUE_REFERENCE (see _NAME_VALUE)
        _NAME_VALUE,
        r"\1" + REDACTED,
        ("key", "token", "secret", "passw", "pwd", "author", "credential"),
        True,
        _name_value_probe,
    ),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), REDACTED, ("sk-",), False, None),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), REDACTED, ("hf_",), False, None),
)
# every needle of every pattern, found in the `_fold` of the text (a superset: the raw-text needles are
# case-free), so a value with none of them is done with one scan
_ANY_NEEDLE = re.compile("|".join(re.escape(n) for _, _, needles, _, _ in _PATTERNS for n in needles))
_MARGIN = 256
_CACHE_MIN_CHARS = 512
_CACHE_MAX_CHARS = 8_000_000
_CLEAN_MAX = 100_000
_SHORT_MAX = 16_384  # short values scrubbed by `data` and `text`, remembered (ids, names, roles: they recur)


# The only non-ASCII characters Python's `re` takes for ASCII letters under IGNORECASE (every code
# point checked: U+0130 and U+0131 for i, U+017F for s, the Kelvin sign for k). Mapped to those
# letters before lowering, a text's fold holds every needle and probe match that the (?i) patterns
# find in the text itself — for any text, not only ASCII (casefold() kept the dotless i, so a
# `credent\u0131al=...` that the pattern matches had no needle and was never redacted).
_RE_ASCII_CASE = (("\u0130", "i"), ("\u0131", "i"), ("\u017f", "s"), ("\u212a", "k"))


def _fold(value: str) -> str:
    """The text as the case-sensitive needles and probes read it (see _RE_ASCII_CASE). Positions
    may differ from the text's (lowering can lengthen a character); the probes only answer yes or no."""
    if not value.isascii():
        for char, letter in _RE_ASCII_CASE:  # `in` and `replace` run at C speed; str.translate does not
            if char in value:
                value = value.replace(char, letter)
    return value.lower()


@functools.lru_cache(maxsize=4096)  # span attribute and JSON keys recur endlessly
def secret_name(name: str) -> bool:
    """Whether a field named `name` holds a secret: its last word is key/token/secret/password/..."""
    lowered = name.strip().lower()
    if lowered in _SECRET_NAMES or lowered in _SECRET_WORDS:
        return True
    words = _WORDS.findall(name.strip())
    return bool(words) and words[-1].lower() in _SECRET_WORDS


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _leaves(item)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def secret_values(values: Any) -> list[str]:
    """Every value stored under a secret-named key, at any depth (and whole secret-named subtrees)."""
    out: list[str] = []
    if isinstance(values, Mapping):
        for key, item in values.items():
            if secret_name(str(key)):
                out.extend(_leaves(item))
                if not isinstance(item, str):
                    out.append(json.dumps(item, ensure_ascii=False, default=str))
            else:
                out.extend(secret_values(item))
    elif isinstance(values, list | tuple):
        for item in values:
            out.extend(secret_values(item))
    elif isinstance(values, str) and values[:1] in "{[":
        try:
            out.extend(secret_values(json.loads(values)))
        except ValueError:
            pass
    return out


def url_secrets(url: str | None) -> list[str]:
    """The userinfo of a URL (user:pass@), as written and its password alone."""
    if not url or "@" not in url:
        return []
    try:
        parts = urlsplit(url if "://" in url else "//" + url)
    except ValueError:
        return []
    out = []
    if parts.password:
        out.append(parts.password)
    if parts.username and parts.password is not None:
        out.append(f"{parts.username}:{parts.password}")
    return out


def _secret_shaped(value: Any) -> bool:
    """A value a secret-named field could hide a secret in (not a count, a flag or nothing)."""
    return bool(value) and isinstance(value, str | Mapping | list | tuple)


def redact_keys(values: Any) -> Any:
    """A copy with every secret-named field's value replaced, at any depth (no text scanning)."""
    if isinstance(values, Mapping):
        return {k: REDACTED if secret_name(str(k)) and _secret_shaped(v) else redact_keys(v) for k, v in values.items()}
    if isinstance(values, list | tuple):
        return [redact_keys(v) for v in values]
    return values


class Redactor:
    def __init__(self, secrets: Sequence[str] = (), environ: Mapping[str, str] | None = None, max_chars: int = MAX_ATTRIBUTE_CHARS) -> None:
        env = os.environ if environ is None else environ
        values = {v for k, v in env.items() if SECRET_ENV.search(k) and len(v) >= MIN_ENV_SECRET_CHARS}
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET_CHARS:
                values.add(secret)
                escaped = json.dumps(secret, ensure_ascii=False)[1:-1]  # as it appears inside JSON text
                values.add(escaped)
                values.add(json.dumps(escaped, ensure_ascii=False)[1:-1])  # JSON inside JSON (a stored request body)
        self._secrets = sorted(values, key=len, reverse=True)
        self.max_chars = max_chars
        # text past the cap is dropped, so only the cap plus a margin (longer than any secret or
        # pattern prefix) is scanned; the margin itself never reaches the output
        self._margin = max(_MARGIN, *(len(s) + 1 for s in self._secrets)) if self._secrets else _MARGIN
        # the same long values (system prompt, conversation so far) recur in span after span
        self._cache: dict[str, str] = {}
        self._clean: set[tuple[int, int]] = set()
        self._short: dict[str, str] = {}
        self._cached_chars = 0

    @classmethod
    def for_run(
        cls,
        *,
        model_args: Mapping[str, Any] | None = None,
        urls: Iterable[str | None] = (),
        tokens: Iterable[str | None] = (),
        environ: Mapping[str, str] | None = None,
    ) -> Redactor:
        secrets = [t for t in tokens if t]
        secrets += secret_values(dict(model_args or {}))
        for url in urls:
            secrets += url_secrets(url)
        return cls(secrets, environ)

    # -- text and data ------------------------------------------------------------------------
    def scrub(self, value: str) -> str:
        """Known secrets and credential shapes replaced; no length cap."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        # cheap checks first: most values hold none of the patterns
        folded = _fold(value)
        if _ANY_NEEDLE.search(folded) is None:
            return value
        for pattern, replacement, needles, fold, probe in _PATTERNS:
            haystack = folded if fold else value
            if not any(n in haystack for n in needles):
                continue
            if probe is not None and not probe(folded):
                continue
            changed = pattern.sub(replacement, value)
            if changed != value:
                value = changed
                folded = _fold(value)
        return value

    def text(self, value: str) -> str:
        """`scrub`, capped at `max_chars` (span attributes); long values are cached."""
        if len(value) < _CACHE_MIN_CHARS:
            return self._short_scrubbed(value) if len(value) <= self.max_chars else self._capped(value)
        cached = self._cache.get(value)
        if cached is None:
            cached = self._capped(value)
            if self._cached_chars > _CACHE_MAX_CHARS:
                self._cache.clear()
                self._cached_chars = 0
            self._cache[value] = cached
            self._cached_chars += len(value)
            self._mark_clean(cached)
        return cached

    def _short_scrubbed(self, value: str) -> str:
        """`scrub` of a short value (under the cap, so uncapped), memoised: attribute values and
        JSON fields (kinds, names, model ids, roles) recur in every span and row."""
        done = self._short.get(value)
        if done is None:
            if len(self._short) >= _SHORT_MAX:
                self._short.clear()
            done = self._short[value] = self.scrub(value)
        return done

    def _mark_clean(self, value: str) -> None:
        """Remember a long value this redactor produced: when it comes back (the collector's copy of
        an exported span) `data` need not scan it again. Only (length, hash) pairs are kept."""
        if len(self._clean) >= _CLEAN_MAX:
            self._clean.clear()
        self._clean.add((len(value), hash(value)))

    def _is_clean(self, value: str) -> bool:
        return len(value) >= _CACHE_MIN_CHARS and (len(value), hash(value)) in self._clean

    def _capped(self, value: str) -> str:
        limit = self.max_chars + self._margin
        cut = len(value) > limit
        if cut:
            value = value[:limit]
        value = self.scrub(value)
        if cut:  # the tail may hold the start of a secret cut in two: drop it with the margin
            return value[: max(0, min(self.max_chars, len(value) - self._margin))] + "...[TRUNCATED]"
        if len(value) > self.max_chars:
            value = value[: self.max_chars] + "...[TRUNCATED]"
        return value

    def data(self, value: Any) -> Any:
        """A JSON-like document with secret-named fields replaced and every string scrubbed."""
        kind = type(value)
        if kind is int or kind is float or kind is bool or value is None:  # most leaves: no ABC checks
            return value
        if isinstance(value, str):
            if len(value) >= _CACHE_MIN_CHARS:
                return value if self._is_clean(value) else self.scrub(value)
            return self._short_scrubbed(value)
        if kind is dict or isinstance(value, Mapping):  # a plain dict skips the ABC check
            return {k: REDACTED if secret_name(str(k)) and _secret_shaped(v) else self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value

    # -- span attributes ----------------------------------------------------------------------
    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, tuple | list):
            return tuple(self.text(v) if isinstance(v, str) else v for v in value)
        return value

    def attributes(self, attrs: Mapping[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (attrs or {}).items():
            secret_key = secret_name(key.rsplit(".", 1)[-1])
            out[key] = REDACTED if secret_key and isinstance(value, str) else self.value(value)
        return out

    # -- logs ---------------------------------------------------------------------------------
    def log_filter(self) -> RedactingLogFilter:
        return RedactingLogFilter(self)


class RedactingLogFilter(logging.Filter):
    """Rewrites a record's message (arguments merged in) and traceback text through the redactor."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: keep what there is, redacted
            message = f"{record.msg} {record.args}"
        record.msg = self.redactor.scrub(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.scrub(record.stack_info)
        return True


_installed: RedactingLogFilter | None = None
_base_factory = logging.getLogRecordFactory()


def install_log_redaction(redactor: Redactor) -> None:
    """Every log record of the process, whichever logger and handler (litellm has its own), is
    redacted as it is made: the filter runs from the record factory."""
    global _installed
    _installed = redactor.log_filter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = _base_factory(*args, **kwargs)
        if _installed is not None:
            _installed.filter(record)
        return record

    logging.setLogRecordFactory(factory)


def scrub(text: str) -> str:
    """A console line through the installed redactor (or one that knows only the environment)."""
    redactor = _installed.redactor if _installed is not None else Redactor()
    return redactor.scrub(text)


def uninstall_log_redaction() -> None:
    global _installed
    _installed = None
    logging.setLogRecordFactory(_base_factory)
