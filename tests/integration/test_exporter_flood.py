"""A StartSampling flood against the real exporter process (issue 13): live runs are capped
(RESOURCE_EXHAUSTED beyond 256), memory stays bounded, and SIGTERM still exits within 5 s."""

from __future__ import annotations

import socket
import threading
import time

import grpc
import psutil
import pytest

from smoltrace_proto import pb, pb_grpc
from tests.fakes.telemetry_procs import SimulatedExporter

FLOOD = 600  # StartSampling calls; the exporter keeps at most 256 live
LIVE_CAP = 256
RSS_LIMIT_MIB = 256  # the Kubernetes sidecar's memory limit
SIGTERM_LIMIT_S = 5.0


def _closed_ports(count: int) -> list[int]:
    ports = []
    for _ in range(count):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    return ports


@pytest.mark.slow
def test_a_start_sampling_flood_is_capped_bounded_and_sigterm_still_exits_fast(record_property) -> None:
    exporter = SimulatedExporter(gpus=8, export_interval_ms=500)
    try:
        process = psutil.Process(exporter.proc.pid)
        rss_idle = process.memory_info().rss / 2**20
        ports = _closed_ports(64)  # collectors that are down: every run keeps its samples queued
        attributes = {f"attr.{i}": "x" * 512 for i in range(32)}
        codes: list[grpc.StatusCode] = []
        lock = threading.Lock()

        def flood(worker: int) -> None:
            with grpc.insecure_channel(exporter.address) as channel:
                stub = pb_grpc.GpuExporterStub(channel)
                for i in range(worker, FLOOD, 4):
                    request = pb.StartSamplingRequest(
                        run_id=f"flood-{i}",
                        interval_ms=200,
                        lease_seconds=3600,
                        otlp_endpoint=f"127.0.0.1:{ports[i % len(ports)]}",
                        resource_attributes=attributes,
                    )
                    try:
                        stub.StartSampling(request, timeout=30)
                        code = grpc.StatusCode.OK
                    except grpc.RpcError as err:
                        code = err.code()
                    with lock:
                        codes.append(code)

        threads = [threading.Thread(target=flood, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert codes.count(grpc.StatusCode.OK) == LIVE_CAP, {c.name: codes.count(c) for c in set(codes)}
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == FLOOD - LIVE_CAP
        time.sleep(3.0)  # 256 runs sampling 8 GPUs every 200 ms, pushes failing
        rss = max(process.memory_info().rss for _ in range(3) if time.sleep(0.5) is None) / 2**20
        started = time.monotonic()
        rc = exporter.terminate(timeout=30)
        sigterm_s = time.monotonic() - started
    finally:
        exporter.close()
    record_property("rss_idle_mib", round(rss_idle, 1))
    record_property("rss_flood_mib", round(rss, 1))
    record_property("sigterm_s", round(sigterm_s, 2))
    print(f"flood: RSS idle {rss_idle:.0f} MiB, under {LIVE_CAP} live runs {rss:.0f} MiB; SIGTERM exit in {sigterm_s:.2f} s (rc {rc})")
    assert rss < RSS_LIMIT_MIB, f"RSS {rss:.0f} MiB under the flood"
    assert rc == 0 and sigterm_s < SIGTERM_LIMIT_S, f"SIGTERM took {sigterm_s:.1f} s (rc {rc})"
