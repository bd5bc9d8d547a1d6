"""Redaction before anything leaves the process (smoltrace.telemetry.Redactor and
RedactingSpanExporter): secret values from the environment and the run, credential patterns,
secret-named attributes, and the 8 kB cap."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode

from smoltrace.telemetry import MAX_ATTRIBUTE_CHARS, REDACTED, RedactingSpanExporter, Redactor

ENV = {
    "OPENAI_API_KEY": "zqENVvalue7c1d2e3f",
    "HF_TOKEN": "zqHFvalue99887766",
    "MY_SERVICE_PASSWORD": "zqPWDvalue123456",
    "SHORT_TOKEN": "abc",  # too short to be worth replacing everywhere
    "HOME": "/home/zqnotasecret",
}
TRUNCATED = "...[TRUNCATED]"


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(secrets=["zqRUNsecret42", "hf", ""], environ=ENV)


@pytest.mark.parametrize("secret", ["zqENVvalue7c1d2e3f", "zqHFvalue99887766", "zqPWDvalue123456", "zqRUNsecret42"])
def test_secret_values_are_replaced_anywhere_in_a_string(redactor: Redactor, secret: str) -> None:
    text = f"prefix {secret} middle {secret}suffix"
    assert redactor.text(text) == f"prefix {REDACTED} middle {REDACTED}suffix"


def test_values_of_non_secret_variables_and_short_values_are_left_alone(redactor: Redactor) -> None:
    assert redactor.text("/home/zqnotasecret abc hf") == "/home/zqnotasecret abc hf"


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
        ("api_key=abcdef123456 and more", "abcdef123456"),
        ('{"api-key": "qwertyuiop12"}', "qwertyuiop12"),
        ("password: hunter2hunter2", "hunter2hunter2"),
        ("use sk-abcdefghijklmnopqrstuv", "sk-abcdefghijklmnopqrstuv"),
        ("hf_abcdefghijklmnopqrstuvwxyz", "hf_abcdefghijklmnopqrstuvwxyz"),
    ],
)
def test_credential_patterns_are_redacted_without_knowing_the_value(text: str, leaked: str) -> None:
    out = Redactor(environ={}).text(text)
    assert leaked not in out and REDACTED in out


def test_huge_values_are_capped(redactor: Redactor) -> None:
    out = redactor.text("a" * (MAX_ATTRIBUTE_CHARS * 3))
    assert out.endswith(TRUNCATED)
    assert len(out) == MAX_ATTRIBUTE_CHARS + len(TRUNCATED)
    assert redactor.text("b" * MAX_ATTRIBUTE_CHARS) == "b" * MAX_ATTRIBUTE_CHARS


def test_a_secret_near_the_end_of_a_huge_value_is_redacted_before_the_cap() -> None:
    secret = "zqRUNsecret42"
    r = Redactor(secrets=[secret], environ={}, max_chars=100)
    out = r.text("x" * 95 + secret)
    assert secret not in out and secret[:5] not in out


def test_attributes_secret_names_sequences_and_other_types(redactor: Redactor) -> None:
    attrs = {
        "llm.invocation_parameters.api_key": "anything-at-all",
        "http.request.header.authorization": "Basic Zm9vOmJhcg==",
        "hf_token": "whatever",
        "input.value": "my key is zqENVvalue7c1d2e3f",
        "tags": ("zqRUNsecret42", "plain"),
        "count": 3,
        "flag": True,
        "ratio": 0.5,
        "token_count": 12,  # a secret-looking name with a number: left alone
    }
    out = redactor.attributes(attrs)
    assert out["llm.invocation_parameters.api_key"] == REDACTED
    assert out["http.request.header.authorization"] == REDACTED
    assert out["hf_token"] == REDACTED
    assert out["input.value"] == f"my key is {REDACTED}"
    assert out["tags"] == (REDACTED, "plain")
    assert (out["count"], out["flag"], out["ratio"], out["token_count"]) == (3, True, 0.5, 12)
    assert redactor.attributes(None) == {}


def test_the_environment_is_read_when_the_redactor_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_PROVIDER_SECRET", "zqFROMenv0001")
    assert Redactor().text("zqFROMenv0001") == REDACTED


def test_the_exporter_redacts_attributes_and_events_and_keeps_the_rest() -> None:
    inner = InMemorySpanExporter()
    exporter = RedactingSpanExporter(inner, Redactor(secrets=["zqRUNsecret42"], environ=ENV))
    provider = TracerProvider(resource=Resource.create({"run.id": "r"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent") as parent:
        link = Link(parent.get_span_context())
        with tracer.start_as_current_span("child", links=[link], attributes={"input.value": "x zqRUNsecret42 " + "y" * 20_000}) as child:
            child.add_event("log", {"message": "key zqENVvalue7c1d2e3f", "api_key": "raw"})
            child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.force_flush()
    spans = {s.name: s for s in inner.get_finished_spans()}
    child_span = spans["child"]
    value = child_span.attributes["input.value"]
    assert "zqRUNsecret42" not in value and value.startswith(f"x {REDACTED} ") and value.endswith(TRUNCATED)
    (event,) = child_span.events
    assert event.name == "log" and dict(event.attributes) == {"message": f"key {REDACTED}", "api_key": REDACTED}
    assert child_span.parent.span_id == spans["parent"].context.span_id
    assert child_span.context.trace_id == spans["parent"].context.trace_id
    assert child_span.links[0].context.span_id == spans["parent"].context.span_id
    assert child_span.status.status_code == StatusCode.ERROR
    assert child_span.resource.attributes["run.id"] == "r"
    assert child_span.start_time <= child_span.end_time
    assert exporter.force_flush() is True
    exporter.shutdown()
    provider.shutdown()


# -- the fast path: scan only the cap plus a margin, cache long values (issue 15) -------------
LONG_SECRET = "QZXWVUTSRQPONMLKJIHGFEDCBAQZXWVUTSRQPONM"  # 40 chars, none of them in the fillers below


def _chunks(secret: str, size: int = 4) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def test_a_secret_cut_in_two_by_the_scan_limit_never_leaks_even_after_earlier_ones_shrink() -> None:
    r = Redactor(environ={"SOME_TOKEN": LONG_SECRET})
    limit = MAX_ATTRIBUTE_CHARS + 256
    head = (LONG_SECRET + " ") * 50  # 2050 chars that shrink to 550 once redacted: the text moves left
    value = head + "b" * (limit - 20 - len(head)) + LONG_SECRET + "c" * 5000
    out = r.text(value)
    assert out.endswith(TRUNCATED) and len(out) <= MAX_ATTRIBUTE_CHARS + len(TRUNCATED)
    assert not [c for c in _chunks(LONG_SECRET) if c in out]


def test_patterns_near_the_cap_are_redacted_in_long_values() -> None:
    value = "x" * (MAX_ATTRIBUTE_CHARS - 40) + " password=hunter2hunter2 Bearer abcdefgh12345678" + "y" * 20_000
    out = Redactor(environ={}).text(value)
    assert "hunter2h" not in out and "abcdefgh" not in out


@pytest.mark.parametrize("max_chars", [20, 50])
def test_short_caps_never_show_part_of_a_secret(max_chars: int) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    piece = st.one_of(st.text(alphabet="abc xyz=:\n", max_size=80), st.just(LONG_SECRET), st.just(" password=hunter2hunter2"))

    @settings(max_examples=150, deadline=None)
    @given(st.lists(piece, max_size=40))
    def check(parts: list[str]) -> None:
        out = Redactor(environ={"A_TOKEN": LONG_SECRET}, max_chars=max_chars).text("".join(parts))
        assert len(out) <= max_chars + len(TRUNCATED)
        assert not [c for c in _chunks(LONG_SECRET) if c in out], out
        assert "hunter2h" not in out

    check()


def test_long_values_are_cached_and_stay_correct() -> None:
    r = Redactor(environ={"OPENAI_API_KEY": "zqENVvalue7c1d2e3f"})
    value = "system prompt " * 100 + "zqENVvalue7c1d2e3f"
    first = r.text(value)
    assert first == r.text("".join([value]))  # an equal string from elsewhere: same answer
    assert "zqENVvalue7c1d2e3f" not in first and first.endswith(REDACTED)
