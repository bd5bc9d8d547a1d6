"""smoltrace.models: error classification on the real litellm exception classes, Retry-After,
with_retries (injected sleep and rng), Ollama address and name handling, model construction."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import httpx
import pytest

from tests.fakes import runner_fixtures

runner_fixtures.apply_import_env()  # before litellm is imported
import litellm  # noqa: E402

from smoltrace.models import (  # noqa: E402
    DEFAULT_OLLAMA_HOST,
    RETRYABLE,
    ModelSetupError,
    ModelSpec,
    RetryPolicy,
    build_model,
    classify_error,
    current_call_stats,
    ollama_base,
    ollama_name,
    reset_call_stats,
    retry_after_seconds,
    with_retries,
)
from smoltrace.preflight import check_setup, probe  # noqa: E402
from tests.fakes.runner_fixtures import closed_port, runner_env_fixture  # noqa: E402, F401

pytestmark = pytest.mark.usefixtures("runner_env")

REQUEST = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")


def response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, request=REQUEST)


def rate_limit(retry_after: str | None = None) -> litellm.RateLimitError:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return litellm.RateLimitError("slow down", llm_provider="openai", model="m", response=response(429, headers))


LITELLM_ERRORS: list[tuple[BaseException, str]] = [
    (rate_limit(), "rate_limit"),
    (litellm.RateLimitError("slow down", llm_provider="openai", model="m"), "rate_limit"),
    (litellm.InternalServerError("boom", llm_provider="openai", model="m", response=response(500)), "server_error"),
    (litellm.ServiceUnavailableError("down", llm_provider="openai", model="m", response=response(503)), "server_error"),
    (litellm.BadGatewayError("bad gw", llm_provider="openai", model="m", response=response(502)), "server_error"),
    (litellm.APIError(500, "api error", llm_provider="openai", model="m"), "server_error"),
    (litellm.APIConnectionError("refused", llm_provider="openai", model="m", request=REQUEST), "connection_error"),
    (litellm.Timeout("too slow", model="m", llm_provider="openai"), "timeout"),
    (litellm.AuthenticationError("no key", llm_provider="openai", model="m", response=response(401)), "auth_error"),
    (litellm.PermissionDeniedError("forbidden", llm_provider="openai", model="m", response=response(403)), "auth_error"),
    (litellm.BadRequestError("bad", model="m", llm_provider="openai", response=response(400)), "bad_request"),
    (litellm.NotFoundError("no model", model="m", llm_provider="openai", response=response(404)), "bad_request"),
    (litellm.UnprocessableEntityError("unprocessable", model="m", llm_provider="openai", response=response(422)), "bad_request"),
    (litellm.ContextWindowExceededError("too long", model="m", llm_provider="openai", response=response(400)), "context_window"),
]


@pytest.mark.parametrize(("err", "kind"), LITELLM_ERRORS, ids=[type(e).__name__ + "-" + k for e, k in LITELLM_ERRORS])
def test_classify_litellm_exceptions(err: BaseException, kind: str) -> None:
    assert classify_error(err) == kind


def test_classify_follows_the_cause_chain() -> None:
    from smolagents.monitoring import AgentLogger, LogLevel
    from smolagents.utils import AgentGenerationError

    try:
        try:
            raise rate_limit()
        except litellm.RateLimitError as inner:
            raise AgentGenerationError(f"Error in generating model output:\n{inner}", AgentLogger(LogLevel.OFF)) from inner
    except AgentGenerationError as outer:
        assert classify_error(outer) == "rate_limit"


def test_classify_other_errors() -> None:
    from smolagents.monitoring import AgentLogger, LogLevel
    from smolagents.utils import AgentMaxStepsError, AgentParsingError, AgentToolExecutionError

    quiet = AgentLogger(LogLevel.OFF)
    assert classify_error(AgentMaxStepsError("steps", quiet)) == "max_steps"
    assert classify_error(AgentParsingError("parse", quiet)) == "parse_error"
    assert classify_error(AgentToolExecutionError("tool", quiet)) == "tool_error"
    assert classify_error(json.JSONDecodeError("bad", "{", 0)) == "parse_error"
    assert classify_error(TimeoutError("t")) == "timeout"
    assert classify_error(ConnectionRefusedError("r")) == "connection_error"
    assert classify_error(httpx.ConnectError("c")) == "connection_error"
    assert classify_error(ValueError("v")) == "internal"


def test_retry_after_parsing() -> None:
    assert retry_after_seconds(rate_limit("2")) == 2.0
    assert retry_after_seconds(rate_limit("0.2")) == pytest.approx(0.2)
    assert retry_after_seconds(rate_limit("600")) == 60.0  # capped
    assert retry_after_seconds(rate_limit("-5")) == 0.0
    assert retry_after_seconds(rate_limit("Wed, 21 Oct 2015 07:28:00 GMT")) is None  # HTTP dates are not supported
    assert retry_after_seconds(rate_limit()) is None
    assert retry_after_seconds(ValueError("no response")) is None
    upper = litellm.InternalServerError("x", llm_provider="openai", model="m", response=response(503, {"Retry-After": "3"}))
    assert retry_after_seconds(upper) == 3.0
    try:
        try:
            raise rate_limit("1.5")
        except litellm.RateLimitError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert retry_after_seconds(outer) == 1.5


# -- with_retries -----------------------------------------------------------------------------
class Flaky:
    """Raises the given errors in order, then returns 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class FixedRng(random.Random):
    def __init__(self) -> None:
        super().__init__(0)
        self.bounds: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append((a, b))
        return b  # the top of the jitter range: the backoff ceiling


@pytest.fixture
def sleeps() -> list[float]:
    return []


def test_retries_429_5xx_and_connection_errors_with_backoff(sleeps: list[float]) -> None:
    reset_call_stats()
    rng = FixedRng()
    flaky = Flaky(
        rate_limit(),
        litellm.InternalServerError("boom", llm_provider="openai", model="m", response=response(500)),
        litellm.APIConnectionError("refused", llm_provider="openai", model="m", request=REQUEST),
    )
    wrapped = with_retries(flaky, RetryPolicy(max_retries=3, base_delay_s=0.5, max_delay_s=30), rng=rng, sleep=sleeps.append)
    assert wrapped("x") == "ok"
    assert flaky.calls == 4
    assert sleeps == [0.5, 1.0, 2.0]  # exponential: base * 2**(attempt-1), full jitter up to it
    assert rng.bounds == [(0, 0.5), (0, 1.0), (0, 2.0)]
    stats = current_call_stats()
    assert stats.attempts == 4
    assert stats.retries == 3
    assert stats.retried_error_types == ["rate_limit", "server_error", "connection_error"]


def test_backoff_is_capped(sleeps: list[float]) -> None:
    reset_call_stats()
    errors = [litellm.InternalServerError("boom", llm_provider="openai", model="m", response=response(500)) for _ in range(6)]
    wrapped = with_retries(Flaky(*errors), RetryPolicy(max_retries=6, base_delay_s=1, max_delay_s=5), rng=FixedRng(), sleep=sleeps.append)
    assert wrapped() == "ok"
    assert sleeps == [1, 2, 4, 5, 5, 5]


def test_retry_after_wins_over_backoff(sleeps: list[float]) -> None:
    reset_call_stats()
    wrapped = with_retries(Flaky(rate_limit("0.2"), rate_limit("7")), RetryPolicy(max_retries=3), rng=FixedRng(), sleep=sleeps.append)
    assert wrapped() == "ok"
    assert sleeps == pytest.approx([0.2, 7.0])


def test_timeouts_are_retried(sleeps: list[float]) -> None:
    reset_call_stats()
    wrapped = with_retries(
        Flaky(litellm.Timeout("slow", model="m", llm_provider="openai")), RetryPolicy(), rng=FixedRng(), sleep=sleeps.append
    )
    assert wrapped() == "ok"
    assert current_call_stats().retried_error_types == ["timeout"]


@pytest.mark.parametrize(
    "err",
    [
        litellm.BadRequestError("bad", model="m", llm_provider="openai", response=response(400)),
        litellm.AuthenticationError("no key", llm_provider="openai", model="m", response=response(401)),
        litellm.ContextWindowExceededError("long", model="m", llm_provider="openai", response=response(400)),
        ValueError("a bug"),
    ],
    ids=["400", "401", "context", "internal"],
)
def test_does_not_retry_client_errors(err: BaseException, sleeps: list[float]) -> None:
    reset_call_stats()
    flaky = Flaky(err)
    wrapped = with_retries(flaky, RetryPolicy(max_retries=3), rng=FixedRng(), sleep=sleeps.append)
    with pytest.raises(type(err)):
        wrapped()
    assert flaky.calls == 1
    assert sleeps == []
    assert current_call_stats().attempts == 1
    assert current_call_stats().retries == 0


def test_gives_up_after_max_retries(sleeps: list[float]) -> None:
    reset_call_stats()
    errors = [rate_limit() for _ in range(10)]
    flaky = Flaky(*errors)
    wrapped = with_retries(flaky, RetryPolicy(max_retries=2, base_delay_s=0.1), rng=FixedRng(), sleep=sleeps.append)
    with pytest.raises(litellm.RateLimitError):
        wrapped()
    assert flaky.calls == 3
    assert len(sleeps) == 2
    assert current_call_stats().attempts == 3


def test_no_retry_past_the_task_deadline(sleeps: list[float]) -> None:
    stats = reset_call_stats()
    stats.deadline = time.perf_counter() + 1.0
    flaky = Flaky(rate_limit("5"), rate_limit("0"))
    with pytest.raises(litellm.RateLimitError):
        with_retries(flaky, RetryPolicy(max_retries=3), sleep=sleeps.append)()
    assert flaky.calls == 1 and sleeps == []
    assert stats.retries == 0
    stats.deadline = time.perf_counter() + 60.0
    flaky = Flaky(rate_limit("0.1"))
    assert with_retries(flaky, RetryPolicy(max_retries=3), sleep=sleeps.append)() == "ok"
    assert sleeps == [0.1]
    reset_call_stats()
    assert current_call_stats().deadline is None


def test_zero_retries_means_one_attempt(sleeps: list[float]) -> None:
    reset_call_stats()
    flaky = Flaky(rate_limit())
    with pytest.raises(litellm.RateLimitError):
        with_retries(flaky, RetryPolicy(max_retries=0), sleep=sleeps.append)()
    assert flaky.calls == 1 and sleeps == []


def test_attempts_accumulate_per_task_and_per_thread() -> None:
    reset_call_stats()
    wrapped = with_retries(Flaky(), RetryPolicy(), sleep=lambda _: None)
    wrapped()
    wrapped()
    assert current_call_stats().attempts == 2
    seen: list[int] = []

    def other_thread() -> None:
        stats = reset_call_stats()
        wrapped()
        seen.append(stats.attempts)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert seen == [1]
    assert current_call_stats().attempts == 2
    assert reset_call_stats().attempts == 0


def test_retryable_kinds() -> None:
    assert set(RETRYABLE) == {"rate_limit", "server_error", "connection_error", "timeout"}


# -- ollama -----------------------------------------------------------------------------------
def test_ollama_base_precedence() -> None:
    env = {"OLLAMA_HOST": "10.0.0.5:11434"}
    assert ollama_base("http://127.0.0.1:9999", env) == "http://127.0.0.1:9999"
    assert ollama_base(None, env) == "http://10.0.0.5:11434"
    assert ollama_base(None, {}) == DEFAULT_OLLAMA_HOST == "http://127.0.0.1:11434"
    assert ollama_base(None, {"OLLAMA_HOST": "https://ollama.example:443"}) == "https://ollama.example:443"
    assert ollama_base("", {"OLLAMA_HOST": ""}) == DEFAULT_OLLAMA_HOST


@pytest.mark.parametrize(
    ("host", "base"),
    [
        ("localhost", "http://localhost:11434"),  # not port 80
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("0.0.0.0:11435", "http://0.0.0.0:11435"),
        (":1234", "http://127.0.0.1:1234"),
        ("example.com", "http://example.com:11434"),
        ("example.com:56789", "http://example.com:56789"),
        ("http://example.com", "http://example.com:80"),
        ("https://example.com", "https://example.com:443"),
        ("https://example.com:56789/path", "https://example.com:56789/path"),
        ("[0001:002:003:0004::1]", "http://[0001:002:003:0004::1]:11434"),
        ("[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_ollama_host_forms_parse_as_ollama_parses_them(host: str, base: str) -> None:
    assert ollama_base(None, {"OLLAMA_HOST": host}) == base
    assert ollama_base(host, {}) == base


def test_ollama_base_reads_the_real_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:1234")
    assert ollama_base(None) == "http://127.0.0.1:1234"
    monkeypatch.delenv("OLLAMA_HOST")
    assert ollama_base(None) == DEFAULT_OLLAMA_HOST


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("ollama/llama3", "llama3"),
        ("ollama_chat/llama3:8b", "llama3:8b"),
        ("llama3", "llama3"),
        (
            "hf.co/kshitijthakkar/loggenix-moe-0.3B-A0.1B-smolagents-v0:f16",
            "hf.co/kshitijthakkar/loggenix-moe-0.3B-A0.1B-smolagents-v0:f16",
        ),
        ("ollama_chat/hf.co/org/model:q4", "hf.co/org/model:q4"),
    ],
)
def test_ollama_name_strips_prefixes(model: str, name: str) -> None:
    assert ollama_name(model) == name


# -- construction and preflight ---------------------------------------------------------------
def test_build_model_litellm_passes_generation_args_and_disables_hidden_retries() -> None:
    spec = ModelSpec("litellm", "openai/fake", "http://127.0.0.1:9/v1", {"temperature": 0, "max_new_tokens": 64}, request_timeout_s=5)
    model = build_model(spec, RetryPolicy(max_retries=2))
    assert model.model_id == "openai/fake"
    assert model.api_base == "http://127.0.0.1:9/v1"
    assert model.kwargs["temperature"] == 0
    assert model.kwargs["max_tokens"] == 64 and "max_new_tokens" not in model.kwargs
    assert model.kwargs["timeout"] == 5
    assert model.kwargs["max_retries"] == 0  # the OpenAI client inside litellm must not retry on its own
    assert model.retryer.max_attempts == 1  # nor smolagents (it would wait 60 s on a 429)
    assert hasattr(model.generate, "__wrapped__")


def test_build_model_ollama_uses_ollama_chat_and_the_base() -> None:
    model = build_model(ModelSpec("ollama", "ollama/tiny", "127.0.0.1:9"), RetryPolicy())
    assert model.model_id == "ollama_chat/tiny"
    assert model.api_base == "http://127.0.0.1:9"


def test_build_model_inference_with_an_endpoint() -> None:
    model = build_model(ModelSpec("inference", "org/model", "http://127.0.0.1:9/v1", hf_token="hf_x"), RetryPolicy())
    assert model.model_id == "org/model"
    assert model.client.model == "http://127.0.0.1:9/v1"
    assert model.retryer.max_attempts == 1


def test_preflight_errors_are_one_clear_line(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    dead = f"http://127.0.0.1:{closed_port()}"
    cases = [
        (ModelSpec("ollama", "tiny", dead), "cannot reach the Ollama server"),
        (ModelSpec("inference", "org/model"), "needs a Hugging Face token"),
        (ModelSpec("transformers", str(tmp_path)), "no config.json"),
        (ModelSpec("transformers", "not a model"), "no transformers model"),
    ]
    for spec, message in cases:
        with pytest.raises(ModelSetupError, match=message) as info:
            check_setup(spec, timeout=2)
        assert "\n" not in str(info.value)


def test_preflight_probe_of_a_dead_server_is_one_clear_line() -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    spec = ModelSpec("litellm", "openai/x", dead)
    model = build_model(spec, RetryPolicy(max_retries=0))
    with pytest.raises(ModelSetupError, match="cannot reach the model server") as info:
        probe(spec, model, RetryPolicy(max_retries=0), timeout=2)
    assert "\n" not in str(info.value)


def test_preflight_ok() -> None:
    assert check_setup(ModelSpec("transformers", "org/model")) == "transformers org/model (Hugging Face Hub / cache)"
