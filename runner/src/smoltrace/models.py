"""Providers: build the smolagents model for `--provider`, check it is reachable, retry its calls.

| provider | smolagents class | where the model lives |
|---|---|---|
| transformers | `TransformersModel(model_id, device_map="auto")` | local weights (a path or the HF cache) |
| ollama | `LiteLLMModel("ollama_chat/<name>", api_base=...)` | `--api-base`, else `$OLLAMA_HOST`, else http://localhost:11434 |
| litellm | `LiteLLMModel(model_id, api_base=--api-base)` | the provider's API; keys from its usual environment variables |
| inference | `InferenceClientModel(model_id, token=HF token)` | Hugging Face inference providers |

`--model-args KEY=VALUE` become generation arguments (temperature, max_new_tokens, top_p...),
passed to the model's calls — never appended to the prompt.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .costs import quiet_litellm

log = logging.getLogger(__name__)

PROVIDERS = ("litellm", "inference", "transformers", "ollama")
LOCAL_PROVIDERS = ("transformers", "ollama")
DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"  # what Ollama's client resolves an unset OLLAMA_HOST to


class ModelSetupError(Exception):
    """The model cannot be used (server unreachable, missing key, no weights): one clear message."""

    exit_code = 3


@dataclass(frozen=True, slots=True)
class ModelSpec:
    provider: str
    model: str
    api_base: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    hf_token: str | None = None
    request_timeout_s: float | None = None
    seed: int | None = None
    parallel_workers: int = 1  # transformers: concurrent calls are generated as one batch
    ollama_pull: bool = False  # ollama: pull a missing model instead of stopping


def ollama_base(api_base: str | None, environ: Mapping[str, str] | None = None) -> str:
    """`--api-base`, else `$OLLAMA_HOST`, else Ollama's default, parsed as Ollama parses it."""
    from .ollama_server import base_url

    return base_url(api_base, environ)


def ollama_name(model: str) -> str:
    for prefix in ("ollama_chat/", "ollama/"):
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


# -- errors and retries -----------------------------------------------------------------------
RETRYABLE = ("rate_limit", "server_error", "connection_error", "timeout")


def error_chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify_error(err: BaseException) -> str:
    """A stable error_type for results: rate_limit, server_error, connection_error, timeout,
    auth_error, bad_request, context_window, max_steps, parse_error, tool_error, interrupted,
    internal. A connection failure wrapped in another error (litellm reports a refused connection as
    InternalServerError "Connection error.") is a connection_error."""
    kind = _classify(error_chain(err))
    if kind in ("server_error", "internal") and any(
        type(e).__name__ in ("APIConnectionError", "ConnectError") or isinstance(e, ConnectionRefusedError) for e in error_chain(err)
    ):
        return "connection_error"
    return kind


def _classify(chain: list[BaseException]) -> str:
    for e in chain:
        name = type(e).__name__
        status = getattr(e, "status_code", None) or getattr(getattr(e, "response", None), "status_code", None)
        if name in ("RateLimitError",) or status == 429:
            return "rate_limit"
        if name in ("Timeout", "APITimeoutError", "ReadTimeout", "ConnectTimeout", "TaskTimeout", "TimeoutError") or isinstance(
            e, TimeoutError
        ):
            return "timeout"
        if name in ("APIConnectionError", "ConnectError", "ConnectionError", "RemoteProtocolError") or isinstance(e, ConnectionError):
            return "connection_error"
        if name in ("ServiceUnavailableError", "InternalServerError", "BadGatewayError") or (isinstance(status, int) and status >= 500):
            return "server_error"
        if name in ("AuthenticationError", "PermissionDeniedError") or status in (401, 403):
            return "auth_error"
        if name == "ContextWindowExceededError":
            return "context_window"
        if name in ("BadRequestError", "NotFoundError", "UnprocessableEntityError") or status in (400, 404, 422):
            return "bad_request"
        if name == "AgentMaxStepsError":
            return "max_steps"
        if name == "AgentParsingError" or isinstance(e, json.JSONDecodeError):
            return "parse_error"
        if name in ("AgentToolCallError", "AgentToolExecutionError"):
            return "tool_error"
        if isinstance(e, KeyboardInterrupt) or name == "TaskInterrupted":
            return "interrupted"
    return "internal"


def retry_after_seconds(err: BaseException) -> float | None:
    """The server's Retry-After (seconds or HTTP date not supported), if any error in the chain has one."""
    for e in error_chain(err):
        response = getattr(e, "response", None)
        headers = getattr(response, "headers", None) or getattr(e, "headers", None)
        if not headers:
            continue
        try:
            value = headers.get("retry-after") or headers.get("Retry-After")
        except AttributeError:
            continue
        if value:
            try:
                return max(0.0, min(float(value), 60.0))
            except ValueError:
                return None
    return None


@dataclass(slots=True)
class CallStats:
    """Per task, per thread: model attempts and the last retried error type."""

    attempts: int = 0
    retries: int = 0
    retried_error_types: list[str] = field(default_factory=list)
    deadline: float | None = None  # time.perf_counter() value of the task's --task-timeout: no retry past it


_stats = threading.local()


def current_call_stats() -> CallStats:
    stats = getattr(_stats, "value", None)
    if stats is None:
        stats = CallStats()
        _stats.value = stats
    return stats


def reset_call_stats() -> CallStats:
    _stats.value = CallStats()
    return _stats.value


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def delay(self, attempt: int, err: BaseException, rng: random.Random) -> float:
        server = retry_after_seconds(err)
        if server is not None:
            return server
        # exponential backoff with full jitter
        return rng.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


def with_retries(
    call: Callable[..., Any], policy: RetryPolicy, rng: random.Random | None = None, sleep: Callable[[float], None] = time.sleep
) -> Callable[..., Any]:
    """Wrap a model call: retry rate limits, 5xx, connection errors and timeouts with backoff."""
    rng = rng or random.Random()

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        stats = current_call_stats()
        attempt = 0
        while True:
            attempt += 1
            stats.attempts += 1
            try:
                return call(*args, **kwargs)
            except Exception as err:
                kind = classify_error(err)
                if kind not in RETRYABLE or attempt > policy.max_retries:
                    raise
                delay = policy.delay(attempt, err, rng)
                if stats.deadline is not None and time.perf_counter() + delay >= stats.deadline:
                    raise  # the task's time is up: a retry could only end as a timeout
                stats.retries += 1
                stats.retried_error_types.append(kind)
                log.info("model call failed (%s), retry %d/%d in %.2f s", kind, attempt, policy.max_retries, delay)
                sleep(delay)

    wrapped.__wrapped__ = call  # type: ignore[attr-defined]
    return wrapped


# -- construction -----------------------------------------------------------------------------
def _generation_args(spec: ModelSpec) -> dict[str, Any]:
    args = dict(spec.model_args)
    if spec.provider == "transformers":
        return args
    # API providers call it max_tokens
    if "max_new_tokens" in args and "max_tokens" not in args:
        args["max_tokens"] = args.pop("max_new_tokens")
    return args


def build_model(spec: ModelSpec, retry: RetryPolicy) -> Any:
    """The smolagents model for the spec, with retrying generate()/generate_stream()."""
    args = _generation_args(spec)
    if spec.provider == "transformers":
        model = _transformers_model(spec, args)
    elif spec.provider == "ollama":
        from smolagents import LiteLLMModel

        quiet_litellm()
        if spec.request_timeout_s:
            args.setdefault("timeout", spec.request_timeout_s)
        args.setdefault("max_retries", 0)  # retries are ours (with_retries): counted, bounded, Retry-After honoured
        model = LiteLLMModel(model_id=f"ollama_chat/{ollama_name(spec.model)}", api_base=ollama_base(spec.api_base), retry=False, **args)
    elif spec.provider == "litellm":
        from smolagents import LiteLLMModel

        quiet_litellm()
        if spec.request_timeout_s:
            args.setdefault("timeout", spec.request_timeout_s)
        args.setdefault("max_retries", 0)  # no hidden retries in litellm's HTTP client: with_retries does them
        model = LiteLLMModel(model_id=spec.model, api_base=spec.api_base, retry=False, **args)
    elif spec.provider == "inference":
        from smolagents import InferenceClientModel

        model = InferenceClientModel(
            model_id=spec.model, token=spec.hf_token, timeout=int(spec.request_timeout_s or 120), retry=False, **args
        )
        if spec.api_base:
            # smolagents hands both `model` and `base_url` to huggingface_hub's InferenceClient,
            # which refuses the pair: the endpoint takes the model's place in the client, and
            # the model id still goes in every request's payload.
            model.client_kwargs.update(model=None, base_url=spec.api_base)
            model.client = model.create_client()
            model.kwargs.setdefault("model", spec.model)  # else huggingface_hub sends model "dummy"
    else:
        raise ModelSetupError(f"unknown provider {spec.provider!r}; choose one of {', '.join(PROVIDERS)}")
    # agents call generate() (we never turn on stream_outputs): that is where retries go. The
    # class's method is looked up at call time, so instrumentation that patches the class after
    # the model was built (genai-otel / OpenInference) still sees every call.
    inner = model.__dict__.get("generate")
    model.generate = with_retries(inner if inner is not None else _late_bound(model, "generate"), retry)
    return model


def _late_bound(model: Any, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(type(model), name)(model, *args, **kwargs)

    return call


def _transformers_model(spec: ModelSpec, args: dict[str, Any]) -> Any:
    from smolagents import TransformersModel

    if spec.seed is not None:
        import torch

        torch.manual_seed(spec.seed)
    max_new_tokens = int(args.pop("max_new_tokens", 1024))
    if os.environ.get("TRANSFORMERS_VERBOSITY") == "error":
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        model = TransformersModel(model_id=spec.model, device_map="auto", max_new_tokens=max_new_tokens, **args)
    except (OSError, ValueError) as err:
        raise ModelSetupError(f"cannot load transformers model {spec.model!r}: {str(err).splitlines()[0]}") from err
    lock = threading.Lock()  # one generation at a time on the shared model (thread safety, memory)
    generate = _late_bound(model, "generate")

    def locked_generate(*a: Any, **kw: Any) -> Any:
        with lock:
            return generate(*a, **kw)

    batcher = None
    if spec.parallel_workers > 1:
        from .batching import install_batcher

        batcher = install_batcher(model, max_batch=spec.parallel_workers)
    # with a batcher, concurrent calls meet in the model's generate (which runs one batch at a time)
    model.generate = generate if batcher is not None else locked_generate
    if hasattr(model, "generate_stream"):
        generate_stream = _late_bound(model, "generate_stream")

        def locked_stream(*a: Any, **kw: Any) -> Any:
            with lock:
                yield from generate_stream(*a, **kw)

        model.generate_stream = locked_stream
    return model


def warm_up(spec: ModelSpec, model: Any) -> None:
    """Pay one-time costs before the active phase: litellm imports its provider code on the
    first call (a mock completion, no network). smolagents would import torch for the first
    non-text final answer: the output-type guard keeps torch out of runs that have not loaded
    it (API models). Never raises."""
    try:
        from .output_types import guard_output_types

        guard_output_types()
    except Exception:
        log.debug("smolagents output-type guard failed", exc_info=True)
    if spec.provider not in ("litellm", "ollama"):
        return
    try:
        import litellm

        litellm.completion(
            model=getattr(model, "model_id", spec.model),
            messages=[{"role": "user", "content": "warm-up"}],
            mock_response="ok",
            tools=[
                {
                    "type": "function",
                    "function": {"name": "noop", "description": "noop", "parameters": {"type": "object", "properties": {}}},
                }
            ],
        )
    except Exception:
        log.debug("litellm warm-up failed", exc_info=True)
