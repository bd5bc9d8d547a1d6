"""`smoltrace-collector`: the collector on its own.

Receives OTLP/gRPC (traces and metrics) from any number of runners and exporters, keeps them per
`run.id` (bounded memory, spilling to disk), optionally tees everything to another OpenTelemetry
Collector (`--otlp-forward`), and serves the merged per-run documents as JSON over HTTP:

  GET    /healthz                     ok
  GET    /runs                        {run_id: {requests, spans, data_points, memory_bytes, spilled_bytes, ...}}
                                      ({} without the token: run ids are not listed to anyone)
  GET    /runs/<run_id>/traces        trace documents
  GET    /runs/<run_id>/metrics       {"run_id", "resourceMetrics": [...]} (GPU/CO2/energy, OTLP JSON)
  GET    /runs/<run_id>/metric_rows   one row per GPU per timestamp
  DELETE /runs/<run_id>               forget the run (401 without the token)

The token (`Authorization: Bearer <token>`) is read from --token-file; without one a random token
is made and written, mode 0600, to a file named in the ready line. With --token-file, OTLP senders
need it too (`authorization` gRPC metadata). Spill is bounded (--max-spill-mb): past it new data
is dropped and counted.

On start it prints one JSON line with the bound addresses; SIGTERM flushes the forwarder and exits 0.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from . import Collector

_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\s]+):(\d{1,5})")


def _split(address: str, flag: str) -> tuple[str, int]:
    match = _HOST_PORT.fullmatch(address)
    if not match or int(match.group(2)) > 65535:
        print(f"smoltrace-collector: error: {flag} must be HOST:PORT, got {address!r}", file=sys.stderr)
        raise SystemExit(2)  # a usage error, like argparse's
    return match.group(1).strip("[]"), int(match.group(2))


def make_http_server(collector: Collector, host: str, port: int, token: str) -> ThreadingHTTPServer:
    expected = f"Bearer {token}".encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _authorized(self) -> bool:
            return hmac.compare_digest((self.headers.get("Authorization") or "").encode(), expected)

        def _json(self, status: int, payload: Any) -> None:
            body = json.dumps(payload, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self) -> tuple[str, str] | None:
            parts = [unquote(p) for p in self.path.split("?", 1)[0].strip("/").split("/") if p]
            if len(parts) == 1 and parts[0] in ("healthz", "runs"):
                return parts[0], ""
            if len(parts) >= 2 and parts[0] == "runs":
                return ("/".join(parts[2:]) or "run"), parts[1]
            return None

        def do_GET(self) -> None:
            route = self._route()
            if route is None:
                self._json(404, {"error": "not found"})
                return
            what, run_id = route
            if what == "healthz":
                self._json(200, {"status": "ok"})
            elif what == "runs":
                self._json(200, collector.store.runs() if self._authorized() else {})
            elif run_id not in collector.store.runs():
                self._json(404, {"error": f"no run {run_id!r}"})
            else:
                telemetry = collector.run_telemetry(run_id)
                docs = {"traces": telemetry.traces, "metrics": telemetry.metrics_json, "metric_rows": telemetry.metric_rows}
                if what in docs:
                    self._json(200, docs[what])
                else:
                    self._json(404, {"error": f"unknown document {what!r} (traces, metrics, metric_rows)"})

        def do_DELETE(self) -> None:
            route = self._route()
            if route is None or route[0] != "run":
                self._json(404, {"error": "not found"})
                return
            if not self._authorized():
                self._json(401, {"error": "DELETE needs the collector's bearer token"})
                return
            collector.store.drop(route[1])
            self._json(200, {"dropped": route[1]})

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="smoltrace-collector", description=__doc__.splitlines()[0])
    p.add_argument(
        "--grpc-address",
        default=env("SMOLTRACE_COLLECTOR_GRPC_ADDRESS", "127.0.0.1:4317"),
        help="OTLP/gRPC receiver (default 127.0.0.1:4317)",
    )
    p.add_argument(
        "--http-address", default=env("SMOLTRACE_COLLECTOR_HTTP_ADDRESS", "127.0.0.1:4319"), help="JSON API (default 127.0.0.1:4319)"
    )
    p.add_argument(
        "--otlp-forward", default=env("SMOLTRACE_COLLECTOR_OTLP_FORWARD"), metavar="URL", help="tee everything to this collector"
    )
    p.add_argument(
        "--otlp-forward-protocol", choices=("grpc", "http/protobuf"), default=env("SMOLTRACE_COLLECTOR_OTLP_FORWARD_PROTOCOL", "grpc")
    )
    p.add_argument(
        "--max-memory-mb",
        type=int,
        default=int(env("SMOLTRACE_COLLECTOR_MAX_MEMORY_MB", "256")),
        help="spill to disk past this (default 256)",
    )
    p.add_argument("--spill-dir", default=env("SMOLTRACE_COLLECTOR_SPILL_DIR"), help="where spilled runs go (default a temporary folder)")
    p.add_argument(
        "--max-spill-mb",
        type=int,
        default=int(env("SMOLTRACE_COLLECTOR_MAX_SPILL_MB", "1024")),
        help="disk the spill files may take; past it new data is dropped and counted (default 1024)",
    )
    p.add_argument(
        "--token-file",
        default=env("SMOLTRACE_COLLECTOR_TOKEN_FILE"),
        help="bearer token for the JSON API's listing and DELETE, and for OTLP senders (default: a random token, JSON API only)",
    )
    return p


def _token(path: str | None) -> tuple[str, str | None, bool]:
    """(token, file it is in, whether it was given). A given file must hold one; else one is made."""
    if path:
        try:
            token = Path(path).read_text("utf-8").strip()
        except OSError as err:
            print(f"smoltrace-collector: error: --token-file {path}: {err.strerror}", file=sys.stderr)
            raise SystemExit(2) from err
        if not token:
            print(f"smoltrace-collector: error: --token-file {path} is empty", file=sys.stderr)
            raise SystemExit(2)
        return token, path, True
    token = secrets.token_urlsafe(32)
    folder = tempfile.mkdtemp(prefix="smoltrace-collector-token-")  # 0700
    made = os.path.join(folder, "token")
    fd = os.open(made, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token)
    return token, made, False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _split(args.grpc_address, "--grpc-address")
    http_host, http_port = _split(args.http_address, "--http-address")
    if args.max_memory_mb < 1:
        print("smoltrace-collector: error: --max-memory-mb must be at least 1", file=sys.stderr)
        return 2
    if args.max_spill_mb < 0:
        print("smoltrace-collector: error: --max-spill-mb must be at least 0", file=sys.stderr)
        return 2
    token, token_file, given = _token(args.token_file)
    try:
        collector = Collector(
            args.grpc_address,
            forward_url=args.otlp_forward,
            forward_protocol=args.otlp_forward_protocol,
            max_memory_bytes=args.max_memory_mb * 1024 * 1024,
            spill_dir=Path(args.spill_dir) if args.spill_dir else None,
            max_spill_bytes=args.max_spill_mb * 1024 * 1024,
            token=token if given else None,
        ).start()
        http = make_http_server(collector, http_host, http_port, token)
    except OSError as err:
        print(f"smoltrace-collector: error: {err}", file=sys.stderr)
        return 2
    threading.Thread(target=http.serve_forever, name="smoltrace-collector-http", daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ready = {"event": "ready", "grpc": collector.endpoint, "http": f"{http_host}:{http.server_address[1]}", "token_file": token_file}
    print(json.dumps(ready), flush=True)
    # wake up regularly: a signal delivered to another thread (the forwarder's, gRPC's) does not
    # interrupt the main thread's wait, and the handler only runs once the main thread wakes
    while not stop.wait(0.25):
        pass
    http.shutdown()
    collector.stop(grace=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
