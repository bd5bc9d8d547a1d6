"""smoltrace.redact: the one redactor of spans, rows, metadata, console lines and logs."""

from __future__ import annotations

import json
import logging

import pytest

from smoltrace.redact import REDACTED, Redactor, install_log_redaction, redact_keys, secret_values, uninstall_log_redaction


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("DB_PASSWORD=hunter2hunter2", "hunter2hunter2"),  # \b did not match after DB_
        ("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI", "wJalrXUtnFEMI"),
        ("GITHUB_TOKEN: ghzqtoken123456", "ghzqtoken123456"),
        ('{"stripe_secret": "zq4242424242"}', "zq4242424242"),
        ("see http://alice:s3cr3tpass@db.internal:5432/x", "s3cr3tpass"),
        ("postgres://alice:s3cr3tpass@db/x", "alice:s3cr3tpass"),
        ("Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l", "YWxhZGRpbjpvcGVuc2VzYW1l"),
    ],
)
def test_credential_shapes_with_any_prefix(text: str, leaked: str) -> None:
    out = Redactor(environ={}).scrub(text)
    assert leaked not in out and REDACTED in out


@pytest.mark.parametrize(
    "text", ["max_tokens=256 total_tokens: 1234567", "a monkey=bananas123", "http://example.com/a@b", "a basic understanding"]
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Redactor(environ={}).scrub(text) == text


def test_secret_model_args_at_any_depth() -> None:
    args = {
        "temperature": 0,
        "extra_headers": {"Authorization": "zqHEADER1", "X-Trace": "visible"},
        "vertex_credentials": {"private_key": "-----BEGIN\nzqKEY2\n-----END", "client_email": "a@b.c"},
        "nested": [{"api_key": "zqNESTED3"}],
        "json_text": json.dumps({"token": "zqJSON4xx"}),
    }
    values = secret_values(args)
    assert {"zqHEADER1", "-----BEGIN\nzqKEY2\n-----END", "zqNESTED3", "zqJSON4xx"} <= set(values)
    assert "visible" not in values and "a@b.c" in values  # everything under *credentials
    assert redact_keys(args) == {
        "temperature": 0,
        "extra_headers": {"Authorization": REDACTED, "X-Trace": "visible"},
        "vertex_credentials": REDACTED,
        "nested": [{"api_key": REDACTED}],
        "json_text": args["json_text"],
    }
    redactor = Redactor.for_run(model_args=args, environ={})
    # the private key as JSON text (newlines escaped), e.g. inside a logged request body
    dumped = json.dumps({"credentials": args["vertex_credentials"]})
    assert "zqKEY2" not in redactor.scrub(dumped)
    assert "zqJSON4xx" not in redactor.scrub("sent zqJSON4xx")


def test_data_redacts_secret_fields_and_strings_but_keeps_counts() -> None:
    r = Redactor(secrets=["zqRUNsecret"], environ={})
    doc = {"response": "the key is zqRUNsecret", "token": "abc", "total_tokens": 5, "token_count": 3, "rows": [("zqRUNsecret", 1)]}
    assert r.data(doc) == {
        "response": f"the key is {REDACTED}",
        "token": REDACTED,
        "total_tokens": 5,
        "token_count": 3,
        "rows": [[REDACTED, 1]],
    }


def test_url_userinfo_is_a_known_secret() -> None:
    r = Redactor.for_run(urls=["http://user:zqPASSword9@127.0.0.1:9/v1", None], environ={})
    assert r.scrub("connecting with zqPASSword9") == f"connecting with {REDACTED}"


def test_the_log_filter_redacts_every_logger_and_traceback(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction(Redactor(secrets=["zqLOGsecret1"], environ={}))
    try:
        other = logging.getLogger("some.library")
        with caplog.at_level(logging.DEBUG):
            other.debug("request headers %s", {"Authorization": "zqLOGsecret1"})
            try:
                raise RuntimeError("failed with DB_PASSWORD=zqTRACEBACK9")
            except RuntimeError:
                other.exception("boom")
    finally:
        uninstall_log_redaction()
    assert "zqLOGsecret1" not in caplog.text and "zqTRACEBACK9" not in caplog.text
    assert caplog.text.count(REDACTED) >= 2


def test_linear_name_value_search_matches_the_reference_pattern() -> None:
    """NAME=value redaction runs in linear time (issue 15) with exactly the reference pattern's result."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from smoltrace.redact import _PATTERNS, NAME_VALUE_REFERENCE

    pattern, replacement, *_ = _PATTERNS[3]
    piece = st.sampled_from(
        [
            *("token", "api_key", "x-api-key", "Password", "pwd", "credential", "AUTHORIZATION", "foo", "a_", ".", "-", "key"),
            *("=", ":", " ", '"', "'", ",", ";", "}", "&", "\n", "abcdefgh", "12345", "xyz", "é", "K"),
        ]
    )

    @settings(max_examples=400, deadline=None)
    @given(st.lists(piece, max_size=30))
    def check(parts: list[str]) -> None:
        text = "".join(parts)
        assert pattern.sub(replacement, text) == NAME_VALUE_REFERENCE.sub(r"\1" + REDACTED, text)

    check()
    # found by this test: a non-secret name's value swallowed `token=`, hiding the secret after the break
    for text in ("foo=token=\ntokentoken", "a=token=abcdefgh", "x_api_key = 'abcdefgh'", "tokentoken: secret: abcdefgh"):
        assert pattern.sub(replacement, text) == NAME_VALUE_REFERENCE.sub(r"\1" + REDACTED, text), text
    assert REDACTED in pattern.sub(replacement, "foo=token=\ntokentoken")


def test_probes_never_hide_a_match_of_their_pattern() -> None:
    """The fast probes (case-sensitive scans of the lowered text, issue 15) are only a prefilter:
    scrub gives exactly what the patterns alone give, for ASCII and non-ASCII texts alike."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from smoltrace.redact import _PATTERNS, Redactor

    def reference(text: str) -> str:
        for pattern, replacement, *_ in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    piece = st.sampled_from(
        [
            *("token", "api_key", "X-API-KEY", "Password", "pwd", "Credentials", "AUTHORIZATION", "Bearer", "basic", "key"),
            *("https://", "HTTP://", "user", ":pw", "@host", "sk-", "hf_", "0123456789abcdefghij", "ABCDEFGH", "+/="),
            *("=", ":", " ", '"', "'", ",", ";", "}", "&", "\n", "\t", "abcdefgh", "12345", "é", "\u212a", "\u017f", "\u0130", "\u0131"),
            # word halves, so the characters re takes for i/s/k can land inside a secret word
            *("credent", "al", "author", "zation", "ap", "_key", "pa", "word", "to", "en", "secret"),
        ]
    )

    @settings(max_examples=600, deadline=None)
    @given(st.lists(piece, max_size=30))
    def check(parts: list[str]) -> None:
        text = "".join(parts)
        assert Redactor([], environ={}).scrub(text) == reference(text)

    check()
    shapes = [
        "Authorization: Bearer +/=12345678",
        'AUTHORIZATION="Basic +/=ABCDEFGH"',
        "see HTTPS://User:P-ss@host/x and ftp://a@b",
        "X_API_KEY = 'abcdefgh'; Db-Password:\t\"s3cr3t!!\"",
        "sk-ABCDEFGHIJKLMNOPQRST hf_ABCDEFGHIJKLMNOPQRSTUV",
        "to\u212aen=abcdefgh and pa\u017f\u017fword=abcdefgh",  # case-folds to token/password
        # re reads these as credential / authorization / api_key (dotless and dotted capital i);
        # casefold() did not, and `credent\u0131al=...` was left in the clear
        "credent\u0131al=abcdefgh",
        "credent\u0130al=abcdefgh",
        "Author\u0130zation: Basic ABCDEFGH+/=",
        "ap\u0131_key=abcdefgh",
        "é credent\u0131als: 'abcdefgh'",
        "°C token=abcdefgh",
        *(f"{name}=abcdefgh" for name in ("pwd", "my_secret", "auth_token", "credential", "credentials", "passwd", "apikey")),
    ]
    for text in shapes:
        assert Redactor([], environ={}).scrub(text) == reference(text) != text, text


def test_a_value_the_redactor_produced_is_not_scanned_again_but_any_other_is() -> None:
    from smoltrace.redact import Redactor

    r = Redactor([], environ={})
    long_clean = "x" * 600 + " plain text"
    assert r.text(long_clean) == long_clean
    assert r._is_clean(long_clean)
    # a string the redactor never produced is scrubbed, even when it is long
    leaked = "y" * 600 + " api_key=abcdefghijkl"
    assert r.data({"a": [leaked, long_clean]}) == {"a": ["y" * 600 + " api_key=" + REDACTED, long_clean]}
    # what text() returns after redaction is marked, not what it was given
    r.text(leaked)
    assert r.data(leaked) == "y" * 600 + " api_key=" + REDACTED


def test_the_fold_knows_every_character_re_takes_for_an_ascii_letter() -> None:
    """The probes and needles read `_fold(text)`; they stay a prefilter only if every character that
    `re` (IGNORECASE) equates with an ASCII letter is folded to it. Checked over every code point,
    so a Python whose case tables grow fails here instead of letting a secret through."""
    import re

    from smoltrace.redact import _fold

    letter = re.compile("(?i)[a-z]")
    for code in range(128, 0x110000):
        char = chr(code)
        if letter.fullmatch(char):
            assert re.fullmatch("[a-z]", _fold(char)), hex(code)
    assert _fold("CREDENT\u0130AL pa\u017f\u017fword to\u212aen ap\u0131_key") == "credential password token api_key"
