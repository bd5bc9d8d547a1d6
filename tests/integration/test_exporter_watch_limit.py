"""WatchRun streams are capped so they can never starve the unary RPCs (Heartbeat keeps answering)."""

from __future__ import annotations

import threading
import time

import grpc

from smoltrace_gpu_exporter.app import ExporterApp
from smoltrace_gpu_exporter.config import ExporterConfig
from smoltrace_gpu_exporter.service import MAX_WATCHERS, MAX_WATCHERS_PER_RUN
from smoltrace_proto import pb
from tests.fakes.exporter_client import OwnerStub


def test_watchers_are_capped_and_heartbeats_still_answer() -> None:
    app = ExporterApp(ExporterConfig(grpc_address="127.0.0.1:0", metrics_address="127.0.0.1:0", backend="simulated:1"))
    addresses = app.start()
    channel = grpc.insecure_channel(addresses.grpc)
    stub = OwnerStub(channel)
    streams = []
    try:
        runs = [f"watcher-run-{i}" for i in range(MAX_WATCHERS // MAX_WATCHERS_PER_RUN)]
        for run_id in runs:
            stub.StartSampling(pb.StartSamplingRequest(run_id=run_id, interval_ms=100), timeout=5)
        stub.StartSampling(pb.StartSamplingRequest(run_id="watched", interval_ms=100), timeout=5)
        first_sample = threading.Barrier(MAX_WATCHERS + 1, timeout=10)

        def watch(run_id: str) -> None:
            stream = stub.WatchRun(pb.WatchRunRequest(run_id=run_id))
            streams.append(stream)
            try:
                next(stream)
                first_sample.wait()
                for _ in stream:
                    pass
            except (grpc.RpcError, threading.BrokenBarrierError):
                pass

        threads = [threading.Thread(target=watch, args=(runs[i % len(runs)],), daemon=True) for i in range(MAX_WATCHERS)]
        for t in threads:
            t.start()
        first_sample.wait()  # every allowed stream is live
        extra = stub.WatchRun(pb.WatchRunRequest(run_id="watched"))
        try:
            next(extra)
            raise AssertionError("a stream beyond the cap was accepted")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
        started = time.perf_counter()
        reply = stub.Heartbeat(pb.HeartbeatRequest(run_id="watched"), timeout=3)
        assert reply.lease_expires_unix_ms > 0 and time.perf_counter() - started < 1.0
        for run_id in [*runs, "watched"]:
            stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=5)  # ends every stream
        for t in threads:
            t.join(5)
        assert not any(t.is_alive() for t in threads)
        # the slots are free again
        stub.StartSampling(pb.StartSamplingRequest(run_id="watched-2", interval_ms=100), timeout=5)
        assert next(stub.WatchRun(pb.WatchRunRequest(run_id="watched-2"))).run_id == "watched-2"
    finally:
        for stream in streams:
            stream.cancel()
        channel.close()
        app.stop()


def test_one_run_cannot_hold_every_watch_slot() -> None:
    """Streams are also capped per run (a run is one client's: its secret is needed to watch it),
    so one client cannot take all the slots another run's owner needs."""
    app = ExporterApp(ExporterConfig(grpc_address="127.0.0.1:0", metrics_address="127.0.0.1:0", backend="simulated:1"))
    addresses = app.start()
    channel = grpc.insecure_channel(addresses.grpc)
    stub = OwnerStub(channel)
    streams = []
    try:
        for run_id in ("greedy", "other"):
            stub.StartSampling(pb.StartSamplingRequest(run_id=run_id, interval_ms=100), timeout=5)
        for _ in range(MAX_WATCHERS_PER_RUN):
            stream = stub.WatchRun(pb.WatchRunRequest(run_id="greedy"))
            streams.append(stream)
            assert next(stream).run_id == "greedy"
        extra = stub.WatchRun(pb.WatchRunRequest(run_id="greedy"))
        streams.append(extra)
        try:
            next(extra)
            raise AssertionError("a stream beyond the per-run cap was accepted")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "per run" in (err.details() or ""), err
        other = stub.WatchRun(pb.WatchRunRequest(run_id="other"))
        streams.append(other)
        assert next(other).run_id == "other"
    finally:
        for stream in streams:
            stream.cancel()
        channel.close()
        app.stop()
