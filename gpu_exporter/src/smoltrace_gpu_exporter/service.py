"""The gRPC service `smoltrace.gpu.v1.GpuExporter`: protobuf in, registry calls, protobuf out."""

from __future__ import annotations

import hmac
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from smoltrace_proto import pb, pb_grpc
from smoltrace_proto.summary import run_summary_to_proto

from .runs import InvalidRequest, Run, RunConflict, RunLimit, RunNotFound, RunParams, RunRegistry, validate_run_id
from .sampler import Sampler

log = logging.getLogger(__name__)

SERVICE_NAME = "smoltrace.gpu.v1.GpuExporter"
MAX_WATCHERS = 16  # concurrent WatchRun streams; the server has twice as many threads
MAX_WATCHERS_PER_RUN = 4  # streams of one run (one client's): no run's owner can hold every slot
MAX_MESSAGE_BYTES = 256 * 1024


# -- conversions ------------------------------------------------------------------------------
def _devices(run: Run, sampler: Sampler) -> list[pb.Device]:
    out = []
    for account in sorted(run.accounts.values(), key=lambda a: a.info.index):
        state = sampler.device(account.info.uuid)
        unsupported = sorted(f.value for f in state.unsupported) if state else []
        out.append(
            pb.Device(
                index=account.info.index,
                uuid=account.info.uuid,
                name=account.info.name,
                memory_total_bytes=account.info.memory_total_bytes,
                unsupported_fields=unsupported,
                failed=account.failed or bool(state and state.failed),
                error=account.error or (state.error if state else ""),
                is_mig=account.info.is_mig,
                parent_uuid=account.info.parent_uuid,
                **({"mig_index": account.info.mig_index} if account.info.is_mig else {}),
            )
        )
    return out


def run_state_to_proto(run: Run, sampler: Sampler) -> pb.RunState:
    state = pb.RunState(
        run_id=run.run_id,
        phase=pb.RunState.STOPPED if run.stopped else pb.RunState.ACTIVE,
        start_unix_ms=run.start_unix_ns // 1_000_000,
        lease_expires_unix_ms=0 if run.stopped else run.lease_expires_unix_ms(),
        interval_ms=run.params.interval_ms,
        sample_count=run.sample_count,
        devices=_devices(run, sampler),
        resource_attributes=dict(run.params.resource_attributes),
        otlp_endpoint=run.params.otlp_endpoint,
        energy_joules=run.energy_joules(),
    )
    if run.stopped:
        state.summary.CopyFrom(run_summary_to_proto(run.seal()))
    return state


class RunForbidden(Exception):
    """The caller has neither the run's secret nor the exporter's bearer token (PERMISSION_DENIED)."""


def bearer_matches(context: grpc.ServicerContext, token: str | None) -> bool:
    """Did this call present the exporter's bearer token?"""
    if not token:
        return False
    supplied = dict(context.invocation_metadata() or ()).get("authorization", "")
    return hmac.compare_digest(str(supplied).encode(), f"Bearer {token}".encode())


# -- the servicer -----------------------------------------------------------------------------
def _abort_on_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(self: GpuExporterService, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except InvalidRequest as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except RunNotFound as err:
            context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        except RunConflict as err:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, str(err))
        except RunLimit as err:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))
        except RunForbidden as err:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(err))

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class GpuExporterService(pb_grpc.GpuExporterServicer):
    def __init__(
        self,
        registry: RunRegistry,
        watch_poll_s: float = 0.5,
        max_watchers: int = MAX_WATCHERS,
        auth_token: str | None = None,
    ) -> None:
        self._registry = registry
        self._auth_token = auth_token
        self._sampler = registry.sampler
        self._watch_poll_s = watch_poll_s
        # each WatchRun stream holds a server thread: cap them so unary RPCs (Heartbeat!) always have threads
        self._watch_slots = threading.BoundedSemaphore(max_watchers)
        self._watch_lock = threading.Lock()
        self._watching: dict[str, int] = {}  # run id -> live streams

    def set_auth_token(self, token: str | None) -> None:
        self._auth_token = token

    def _owned(self, run_id: str, secret: str, context: grpc.ServicerContext) -> Run:
        """The run, if the caller may act on it: its secret, or the exporter's bearer token."""
        validate_run_id(run_id)
        run = self._registry.get(run_id)
        if not (hmac.compare_digest(secret.encode(), run.secret.encode()) or bearer_matches(context, self._auth_token)):
            raise RunForbidden(f"run {run_id!r} belongs to another client: send the run_secret StartSampling returned")
        return run

    @_abort_on_errors
    def StartSampling(self, request: pb.StartSamplingRequest, context: grpc.ServicerContext) -> pb.StartSamplingResponse:  # noqa: N802
        validate_run_id(request.run_id)
        live = next((r for r in self._registry.active_runs() if r.run_id == request.run_id), None)
        if live is not None:  # a repeat: only the run's owner may confirm it (and learn its secret)
            self._owned(request.run_id, request.run_secret, context)
        params = RunParams.create(
            request.run_id,
            defaults=self._registry.defaults,
            interval_ms=request.interval_ms,
            gpu_uuids=list(request.gpu_uuids),
            otlp_endpoint=request.otlp_endpoint,
            resource_attributes=dict(request.resource_attributes),
            carbon_intensity_g_per_kwh=request.carbon_intensity_g_per_kwh,
            pue=request.pue,
            lease_seconds=request.lease_seconds,
            power_cost_per_kwh=request.power_cost_per_kwh,
            otlp_headers=dict(request.otlp_headers),
        )
        run, already = self._registry.start(params)
        methods = sorted({self._planned_method(a.info.uuid) for a in run.accounts.values()})
        method = methods[0] if len(methods) == 1 else ("mixed" if methods else "")
        if not already:
            log.info("run %s started: %d GPU(s), every %d ms", run.run_id, len(run.accounts), params.interval_ms)
        return pb.StartSamplingResponse(
            gpu_available=run.gpu_available,
            devices=_devices(run, self._sampler),
            energy_method=method,
            lease_expires_unix_ms=run.lease_expires_unix_ms(),
            message=run.message,
            already_running=already,
            interval_ms=params.interval_ms,
            carbon_intensity_g_per_kwh=params.carbon_intensity_g_per_kwh,
            pue=params.pue,
            power_cost_per_kwh=params.power_cost_per_kwh,
            simulated=run.simulated,
            run_secret=run.secret,
        )

    def _planned_method(self, uuid: str) -> str:
        from .nvml import Field

        state = self._sampler.device(uuid)
        if state is not None and Field.ENERGY not in state.unsupported:
            return "counter"
        return "integrated"

    @_abort_on_errors
    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:  # noqa: N802
        self._owned(request.run_id, request.run_secret, context)
        run = self._registry.heartbeat(request.run_id)
        return pb.HeartbeatResponse(lease_expires_unix_ms=run.lease_expires_unix_ms())

    @_abort_on_errors
    def StopSampling(self, request: pb.StopSamplingRequest, context: grpc.ServicerContext) -> pb.RunSummary:  # noqa: N802
        self._owned(request.run_id, request.run_secret, context)
        summary = self._registry.stop(request.run_id)
        log.info(
            "run %s stopped: %.1f J over %.1f s, %d samples",
            summary.run_id,
            summary.energy_joules,
            summary.duration_seconds,
            summary.sample_count,
        )
        return run_summary_to_proto(summary)

    @_abort_on_errors
    def GetRun(self, request: pb.GetRunRequest, context: grpc.ServicerContext) -> pb.RunState:  # noqa: N802
        return run_state_to_proto(self._owned(request.run_id, request.run_secret, context), self._sampler)

    @_abort_on_errors
    def ListRuns(self, request: pb.ListRunsRequest, context: grpc.ServicerContext) -> pb.ListRunsResponse:  # noqa: N802
        runs = self._registry.all_runs()
        if not bearer_matches(context, self._auth_token):  # others' runs only for the bearer-token holder
            secrets = {s.encode() for s in request.run_secrets}
            runs = [r for r in runs if any(hmac.compare_digest(r.secret.encode(), s) for s in secrets)]
        return pb.ListRunsResponse(runs=[run_state_to_proto(r, self._sampler) for r in runs])

    def WatchRun(self, request: pb.WatchRunRequest, context: grpc.ServicerContext) -> Iterator[pb.Sample]:  # noqa: N802
        try:
            run = self._owned(request.run_id, request.run_secret, context)
        except InvalidRequest as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except RunNotFound as err:
            context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        except RunForbidden as err:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(err))
        admin = bearer_matches(context, self._auth_token)
        with self._watch_lock:
            if not admin and self._watching.get(run.run_id, 0) >= MAX_WATCHERS_PER_RUN:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, f"at most {MAX_WATCHERS_PER_RUN} WatchRun streams per run; close one first"
                )
            if not self._watch_slots.acquire(blocking=False):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"at most {MAX_WATCHERS} WatchRun streams at a time; close one first")
            self._watching[run.run_id] = self._watching.get(run.run_id, 0) + 1
        watcher = run.subscribe()
        try:
            while context.is_active():
                try:
                    sample = watcher.get(timeout=self._watch_poll_s)
                except queue.Empty:
                    continue
                if sample is None:
                    return
                yield pb.Sample(
                    run_id=run.run_id,
                    timestamp_unix_nano=sample.timestamp_ns,
                    devices=[
                        pb.DeviceReading(
                            index=r.index,
                            uuid=r.uuid,
                            utilization_percent=r.utilization_percent,
                            memory_used_bytes=r.memory_used_bytes,
                            temperature_celsius=r.temperature_celsius,
                            power_watts=r.power_watts,
                            energy_joules=energy,
                        )
                        for r, energy in sample.readings
                    ],
                )
        finally:
            run.unsubscribe(watcher)
            with self._watch_lock:
                left = self._watching.get(run.run_id, 1) - 1
                if left > 0:
                    self._watching[run.run_id] = left
                else:
                    self._watching.pop(run.run_id, None)
            self._watch_slots.release()


# -- auth -------------------------------------------------------------------------------------
class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Rejects calls without `authorization: Bearer <token>` (health checks stay open)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        def deny(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (metadata 'authorization: Bearer <token>')")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.unary_stream_rpc_method_handler(deny)

    def intercept_service(self, continuation: Callable[..., Any], handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method or ""
        if method.startswith("/grpc.health.v1.Health/"):
            return continuation(handler_call_details)
        supplied = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(supplied.encode(), self._expected):
            return continuation(handler_call_details)
        return self._deny_stream if method.endswith("/WatchRun") else self._deny


# -- the server -------------------------------------------------------------------------------
def build_server(
    service: GpuExporterService,
    address: str,
    *,
    auth_token: str | None = None,
    tls_cert: bytes | None = None,
    tls_key: bytes | None = None,
    max_workers: int = 2 * MAX_WATCHERS,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A grpc.Server with our service and grpc.health.v1; returns (server, bound port, health)."""
    from concurrent.futures import ThreadPoolExecutor

    interceptors = [BearerTokenInterceptor(auth_token)] if auth_token else []
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="smoltrace-gpu-grpc"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=max_workers * 4,
    )
    pb_grpc.add_GpuExporterServicer_to_server(service, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if tls_cert and tls_key:
        credentials = grpc.ssl_server_credentials([(tls_key, tls_cert)])
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind gRPC address {address}")
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health_servicer
