"""`--otlp-forward URL`: tee everything the collector receives to another OpenTelemetry Collector.

The raw OTLP request bytes are re-sent unchanged (no re-encoding) from one background thread
through a bounded queue, so a slow or dead downstream collector never slows ingestion: what does
not fit is dropped and counted. Protocols: OTLP/gRPC (`grpc`, default) or OTLP/HTTP protobuf
(`http/protobuf`, POST to `<url>/v1/traces` and `<url>/v1/metrics`).
"""

from __future__ import annotations

import logging
import queue
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlparse

import grpc

log = logging.getLogger(__name__)

_GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}
_HTTP_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics"}


@dataclass(slots=True)
class ForwardStats:
    sent: int = 0
    failed: int = 0
    dropped: int = 0


class Forwarder:
    def __init__(self, url: str, protocol: str = "grpc", timeout_s: float = 5.0, max_queue: int = 10_000) -> None:
        if protocol not in ("grpc", "http/protobuf"):
            raise ValueError(f"forward protocol must be grpc or http/protobuf, got {protocol!r}")
        self.url = url
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.stats = ForwardStats()
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=max_queue)
        self._channel: grpc.Channel | None = None
        self._calls: dict[str, grpc.UnaryUnaryMultiCallable] = {}
        if protocol == "grpc":
            parsed = urlparse(url if "://" in url else "http://" + url)
            target = parsed.netloc or parsed.path
            if parsed.scheme == "https":
                self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
            else:
                self._channel = grpc.insecure_channel(target)
            self._calls = {
                k: self._channel.unary_unary(m, request_serializer=None, response_deserializer=None) for k, m in _GRPC_METHODS.items()
            }
        self._thread = threading.Thread(target=self._loop, name="smoltrace-collector-forward", daemon=True)
        self._thread.start()

    def submit(self, kind: str, payload: bytes) -> None:
        try:
            self._queue.put_nowait((kind, payload))
        except queue.Full:
            self.stats.dropped += 1

    def _send(self, kind: str, payload: bytes) -> None:
        if self.protocol == "grpc":
            self._calls[kind](payload, timeout=self.timeout_s)
            return
        request = urllib.request.Request(
            self.url.rstrip("/") + _HTTP_PATHS[kind], data=payload, method="POST", headers={"Content-Type": "application/x-protobuf"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            response.read()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                kind, payload = item
                try:
                    self._send(kind, payload)
                    self.stats.sent += 1
                except (grpc.RpcError, urllib.error.URLError, OSError) as err:
                    self.stats.failed += 1
                    if self.stats.failed == 1 or self.stats.failed % 100 == 0:
                        log.warning("forwarding to %s failed (%d so far): %s", self.url, self.stats.failed, err)
            finally:
                self._queue.task_done()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until what was queued has been sent (or failed); False on timeout."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, name="smoltrace-forward-flush", daemon=True).start()
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        self.flush(timeout_s)
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout_s)
        if self._channel is not None:
            self._channel.close()
