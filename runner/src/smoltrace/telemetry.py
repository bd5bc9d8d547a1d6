"""Tracing for a run (`--enable-otel`): OpenTelemetry spans of every step, sent to the collector.

- `genai-otel-instrument[openinference]` instruments, once per process, only what the provider's
  calls go through (`INSTRUMENTORS`, genai's own keys: smolagents, litellm, transformers, ollama);
  its own GPU collector stays off (the exporter measures the GPU), its Ollama server poller runs only
  for the ollama provider and polls that server, its OTLP timeout is bounded (2 s) so it never holds
  up exit, and the OTEL_*/GENAI_* environment it reads and writes is restored afterwards.
- OpenTelemetry keeps the first global TracerProvider for the life of the process, and the
  instrumentors bind their tracers at instrument time. So the global provider is a router,
  installed once, that hands each span to the provider of the run it belongs to (a context
  variable, carried into the run's worker threads): a second evaluation in the same process gets
  its own provider, resource (`run.id`) and exporter, and never mixes with the first.
- Each task execution is a trace: a root span `test_evaluation` (test.id, test.case_uid,
  agent.type, test.difficulty), linked to the run's span `smoltrace.run`.
- Before anything leaves the process, span attributes and events are redacted (secret values
  from the environment and the run, bearer tokens, key=value credentials) and capped (8 kB).
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, NonRecordingSpan, SpanKind, Tracer
from opentelemetry.trace import TracerProvider as ApiTracerProvider
from opentelemetry.util.types import Attributes

from . import __version__
from .redact import MAX_ATTRIBUTE_CHARS, REDACTED, Redactor  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

SERVICE_NAME = "smoltrace-eval"


def usage_attributes(attrs: Attributes, price: bool = True) -> dict[str, Any]:
    """A model span's attributes with the current GenAI names added to the OpenInference ones:
    `gen_ai.usage.input_tokens`/`output_tokens`, `gen_ai.request.model`, and the call's price
    from litellm's cost map as `gen_ai.usage.cost.total` (what TraceMind UI shows)."""
    out = dict(attrs or {})
    if out.get("openinference.span.kind") != "LLM":
        return out
    prompt, completion = out.get("llm.token_count.prompt"), out.get("llm.token_count.completion")
    model = out.get("llm.model_name")
    if isinstance(prompt, int):
        out.setdefault("gen_ai.usage.input_tokens", prompt)
    if isinstance(completion, int):
        out.setdefault("gen_ai.usage.output_tokens", completion)
    if isinstance(model, str) and model:
        out.setdefault("gen_ai.request.model", model)
    # price: False for local models (no API price; a lookup would import litellm for nothing)
    if price and "gen_ai.usage.cost.total" not in out and isinstance(prompt, int) and isinstance(completion, int):
        cost = out.get("llm.cost.total")
        if not isinstance(cost, int | float) or isinstance(cost, bool):
            from .costs import priced, token_cost

            # priced() is cached per model: an unpriced model costs no litellm lookup per span
            cost = token_cost(model, prompt, completion) if isinstance(model, str) and priced(model) else None
        if cost is not None:
            out["gen_ai.usage.cost.total"] = float(cost)
    return out


# -- redaction (the run's one Redactor, see redact.py) -------------------------------------------
class RedactingSpanExporter(SpanExporter):
    """Redacts and caps attributes (and adds the GenAI usage names) before handing spans to the
    real exporter."""

    def __init__(self, inner: SpanExporter, redactor: Redactor, price: bool = True) -> None:
        self._inner = inner
        self._redactor = redactor
        self._price = price

    def _clean(self, span: ReadableSpan) -> ReadableSpan:
        r = self._redactor
        from opentelemetry.sdk.trace import Event
        from opentelemetry.trace import Status

        events = [Event(e.name, r.attributes(e.attributes), e.timestamp) for e in span.events]
        status = span.status
        if status.description:
            status = Status(status.status_code, r.text(status.description))
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=r.attributes(usage_attributes(span.attributes, self._price)),
            events=events,
            links=span.links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([self._clean(s) for s in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


# -- the process-wide router ------------------------------------------------------------------
_current: contextvars.ContextVar[TracerProvider | None] = contextvars.ContextVar("smoltrace_run_provider", default=None)
_fallback: TracerProvider | None = None  # the run started last, for threads the run did not start
_router_lock = threading.Lock()


def _active_provider() -> TracerProvider | None:
    return _current.get() or _fallback


class RoutingTracer(Tracer):
    def __init__(self, name: str, version: str | None, schema_url: str | None, attributes: Attributes) -> None:
        self._key = (name, version, schema_url)
        self._attributes = attributes
        # id(provider) -> (provider, its tracer). The provider is held with its tracer: a closed
        # run's provider, once collected, could hand its id to the next run's, whose spans would
        # then go to the closed one's tracer and be dropped (a second run in one process lost its
        # library spans now and then).
        self._cache: dict[int, tuple[Any, Tracer]] = {}

    def _tracer(self) -> Tracer | None:
        provider = _active_provider()
        if provider is None:
            return None
        entry = self._cache.get(id(provider))
        if entry is None or entry[0] is not provider:
            name, version, schema_url = self._key
            entry = (provider, provider.get_tracer(name, version, schema_url, self._attributes))
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[id(provider)] = entry
        return entry[1]

    def start_span(
        self, name: str, context: otel_context.Context | None = None, kind: SpanKind = SpanKind.INTERNAL, *args: Any, **kwargs: Any
    ) -> trace.Span:
        tracer = self._tracer()
        if tracer is None:
            return NonRecordingSpan(trace.get_current_span(context).get_span_context())
        return tracer.start_span(name, context, kind, *args, **kwargs)

    @contextmanager
    def start_as_current_span(
        self, name: str, context: otel_context.Context | None = None, kind: SpanKind = SpanKind.INTERNAL, *args: Any, **kwargs: Any
    ) -> Iterator[trace.Span]:
        tracer = self._tracer()
        if tracer is None:
            yield NonRecordingSpan(trace.get_current_span(context).get_span_context())
            return
        with tracer.start_as_current_span(name, context, kind, *args, **kwargs) as span:
            yield span


class RoutingTracerProvider(ApiTracerProvider):
    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> Tracer:
        return RoutingTracer(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)


_router: RoutingTracerProvider | None = None
_instrumented: set[str] = set()


def install_router() -> bool:
    """Make the router the global provider (once). False if another provider got there first."""
    global _router
    with _router_lock:
        if _router is None:
            _router = RoutingTracerProvider()
            trace.set_tracer_provider(_router)
        return trace.get_tracer_provider() is _router


# genai-otel-instrument's keys for what each provider's calls go through (chat for `ollama` stays
# on litellm's ollama_chat/; the `ollama` instrumentor is there for its server poller).
INSTRUMENTORS: dict[str, tuple[str, ...]] = {
    "litellm": ("smolagents", "litellm"),
    "inference": ("smolagents",),
    "transformers": ("smolagents", "transformers"),
    "ollama": ("smolagents", "litellm", "ollama"),
}
# Variables genai_otel reads or writes while it sets up; restored afterwards, so the user's own
# OTEL_* values (and their absence) are what the rest of the process sees.
_GENAI_ENV_PREFIXES = ("OTEL_", "GENAI_", "OLLAMA_BASE_URL")


class _Enabled(logging.Handler):
    """Collects what genai_otel says it enabled, and what it refused."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.enabled: list[str] = []
        self.problems: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.endswith(" instrumentation enabled") and record.name == "genai_otel.auto_instrument":
            self.enabled.append(message.removesuffix(" instrumentation enabled"))
        elif record.levelno >= logging.WARNING and ("instrumentor" in message.lower() or "instrument " in message.lower()):
            self.problems.append(message.splitlines()[0])


@contextmanager
def _restored_environ(prefixes: tuple[str, ...]) -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith(prefixes) and k not in saved]:
            del os.environ[key]
        os.environ.update(saved)


def instrument_libraries(provider_name: str, collector_endpoint: str, ollama_base_url: str | None = None) -> list[str]:
    """genai_otel.instrument once per process, with only the instrumentors this provider's calls go
    through (genai's own keys); returns the ones genai_otel reports enabled. Its GPU collector stays
    off (the exporter measures the GPU), its OTLP timeout is bounded, its Ollama server poller runs
    only for the ollama provider (pointed at that server), and the OTEL_*/GENAI_* environment is
    left as the user had it."""
    if _instrumented:
        return sorted(_instrumented)
    wanted = list(INSTRUMENTORS.get(provider_name, ("smolagents", "litellm")))
    # genai_otel also builds a MeterProvider that pushes its request/token counters every 60 s and
    # once more at exit. We derive those figures from the spans; a reader-less provider installed
    # first takes its instruments, so nothing is pushed (and nothing retries against a collector
    # that has already stopped).
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider

    metrics.set_meter_provider(MeterProvider())
    genai_log = logging.getLogger("genai_otel")
    for noisy in ("genai_otel", "opentelemetry.exporter.otlp", "opentelemetry.sdk", "opentelemetry.trace", "opentelemetry.metrics"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    seen = _Enabled()
    with _restored_environ(_GENAI_ENV_PREFIXES):
        os.environ.setdefault("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
        os.environ.setdefault("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        os.environ["GENAI_SKIP_COLLECTOR_CHECK"] = "true"
        os.environ["GENAI_ENABLE_GPU_METRICS"] = "false"
        os.environ["GENAI_ENABLE_OLLAMA_SERVER_METRICS"] = "true" if "ollama" in wanted else "false"
        if "ollama" in wanted and ollama_base_url:
            os.environ["OLLAMA_BASE_URL"] = ollama_base_url
        import genai_otel

        genai_log.setLevel(logging.INFO)
        genai_log.addHandler(seen)
        propagate, genai_log.propagate = genai_log.propagate, False  # heard here, not printed
        try:
            genai_otel.instrument(
                service_name=SERVICE_NAME,
                endpoint=f"http://{collector_endpoint}",
                enabled_instrumentors=wanted,
                enable_gpu_metrics=False,
                enable_cost_tracking=False,  # the price is added to model spans on export (usage_attributes)
                enable_co2_tracking=False,
                fail_on_error=False,
            )
        finally:
            genai_log.removeHandler(seen)
            genai_log.propagate = propagate
            genai_log.setLevel(logging.ERROR)
    for problem in seen.problems:
        log.warning("genai-otel-instrument: %s", problem)
    active = [name for name in wanted if name in seen.enabled]
    for name in sorted(set(wanted) - set(active)):
        log.warning("genai-otel-instrument did not enable its %r instrumentor; its calls are not traced", name)
    _instrumented.update(active)
    return active


# -- one run ----------------------------------------------------------------------------------
class RunTracing:
    def __init__(
        self,
        run_id: str,
        collector_endpoint: str,
        resource_attributes: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
        export_timeout_s: float = 2.0,
        redactor: Redactor | None = None,
        headers: Mapping[str, str] | None = None,
        price_model_spans: bool = True,
    ) -> None:
        """`price_model_spans`: put litellm's price on model spans (API models; False for local ones)."""
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        attributes: dict[str, Any] = {"service.name": SERVICE_NAME, "service.version": __version__}
        attributes.update(resource_attributes or {})
        attributes["run.id"] = run_id
        self.run_id = run_id
        self.provider = TracerProvider(resource=Resource.create(attributes))
        for processor in _genai_processors():
            self.provider.add_span_processor(processor)
        self.redactor = redactor if redactor is not None else Redactor(secrets)
        exporter = OTLPSpanExporter(
            endpoint=f"http://{collector_endpoint}", insecure=True, timeout=export_timeout_s, headers=dict(headers) if headers else None
        )
        self._processor = BatchSpanProcessor(
            RedactingSpanExporter(exporter, self.redactor, price_model_spans),
            max_queue_size=65_536,
            # spans go out every 100 ms: what is left for the final flush is small (teardown: its
            # flush took ~58 ms at 500 ms, ~8 ms at 100 ms; CPU per call unchanged, measured)
            schedule_delay_millis=100,
            max_export_batch_size=512,
            export_timeout_millis=int(export_timeout_s * 1000),
        )
        self.provider.add_span_processor(self._processor)
        self.tracer = self.provider.get_tracer("smoltrace", __version__)
        self._token: contextvars.Token[TracerProvider | None] | None = None
        self._run_span: trace.Span | None = None

    def activate(self, attributes: Mapping[str, Any] | None = None) -> None:
        global _fallback
        self._token = _current.set(self.provider)
        _fallback = self.provider
        self._run_span = self.tracer.start_span("smoltrace.run", context=otel_context.Context(), attributes=dict(attributes or {}))

    @property
    def run_span_context(self) -> trace.SpanContext | None:
        return self._run_span.get_span_context() if self._run_span is not None else None

    def context(self) -> contextvars.Context:
        """A context for a worker thread: spans made there belong to this run."""
        ctx = contextvars.copy_context()
        ctx.run(_current.set, self.provider)
        return ctx

    @contextmanager
    def task_span(self, attributes: Mapping[str, Any]) -> Iterator[trace.Span]:
        links = [Link(self.run_span_context)] if self.run_span_context is not None else []
        with self.tracer.start_as_current_span(
            "test_evaluation", context=otel_context.Context(), attributes=dict(attributes), links=links
        ) as span:
            yield span

    def close(self, timeout_s: float = 5.0) -> bool:
        """End the run span, flush (bounded), shut the provider down. True when all was sent."""
        global _fallback
        if self._run_span is not None:
            self._run_span.end()
        ok = self.provider.force_flush(int(timeout_s * 1000))
        self.provider.shutdown()
        if self._token is not None:
            try:
                _current.reset(self._token)
            except ValueError:  # reset from another context
                _current.set(None)
        if _fallback is self.provider:
            _fallback = None
        return bool(ok)


def _genai_processors() -> list[Any]:
    processors: list[Any] = []
    try:
        from genai_otel.instrumentors.base import UsageHolderSpanProcessor

        processors.append(UsageHolderSpanProcessor())
    except Exception:
        log.debug("no genai_otel usage holder", exc_info=True)
    return processors


def hex_ids(span: trace.Span) -> tuple[str, str]:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
