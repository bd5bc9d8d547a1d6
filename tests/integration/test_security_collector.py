"""Security findings of issue 13 on the collector, with real gRPC/HTTP clients on 127.0.0.1:

- the embedded collector takes only its own run: data for another `run.id` is dropped and counted;
- with a token, OTLP calls without `authorization: Bearer <token>` are UNAUTHENTICATED; a traced run
  whose collector is advertised sends its spans with the token;
- the standalone collector's JSON API lists nothing and deletes nothing without its token;
- a flood: spill stays under --max-spill-mb, RSS stays bounded, reading the run back streams;
- `--collector-address` beyond loopback without `--collector-advertise` is exit 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

import smoltrace.telemetry_session
from smoltrace.collector import Collector
from smoltrace.collector.receiver import METRICS_METHOD, TRACE_METHOD
from tests.fakes.chat_servers import FakeOpenAIServer
from tests.fakes.otlp_payloads import gpu_metrics_request, gpu_sample, mixed_trace_request, span, trace_request
from tests.fakes.runner_fixtures import run_main, runner_env_fixture, standard_script  # noqa: F401 - fixture
from tests.fakes.telemetry_procs import CollectorProcess, CollectorSpy

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def call(endpoint: str, method: str, payload: bytes, token: str | None = None) -> None:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    with grpc.insecure_channel(endpoint) as channel:
        channel.unary_unary(method, request_serializer=None, response_deserializer=None)(payload, timeout=10, metadata=metadata)


def test_data_for_another_run_is_dropped_and_counted() -> None:
    collector = Collector(accept_run_ids=("mine",)).start()
    try:
        mixed = mixed_trace_request(
            [("mine", [span(1, 1, None, "test_evaluation", T0, T0 + S)]), ("theirs", [span(2, 1, None, "x", T0, T0 + S)])]
        )
        call(collector.endpoint, TRACE_METHOD, mixed.SerializeToString())
        call(collector.endpoint, TRACE_METHOD, trace_request("theirs", [span(3, 1, None, "y", T0, T0 + S)]).SerializeToString())
        call(collector.endpoint, METRICS_METHOD, gpu_metrics_request("theirs", [gpu_sample(T0, {"GPU-0": 1.0})]).SerializeToString())
        assert set(collector.store.runs()) == {"mine"}
        assert collector.run_telemetry("mine").spans == 1
        stats = collector.ingest.stats
        assert (stats.foreign_requests, stats.foreign_spans) == (3, 2) and stats.foreign_data_points > 0
    finally:
        collector.stop(grace=0)


def test_a_collector_with_a_token_refuses_calls_without_it() -> None:
    collector = Collector(token="zq-the-token", accept_run_ids=("r",)).start()
    try:
        payload = trace_request("r", [span(1, 1, None, "test_evaluation", T0, T0 + S)]).SerializeToString()
        for token in (None, "wrong-token"):
            with pytest.raises(grpc.RpcError) as err:
                call(collector.endpoint, TRACE_METHOD, payload, token)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert collector.store.runs() == {} and collector.ingest.stats.unauthenticated == 2
        call(collector.endpoint, TRACE_METHOD, payload, "zq-the-token")
        assert collector.run_telemetry("r").spans == 1
    finally:
        collector.stop(grace=0)


def test_an_advertised_collector_takes_only_the_runs_token(tmp_path: Path, runner_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """--collector-advertise: a per-run token the runner's own span exporter sends (and StartSampling
    passes on as otlp_headers); a second client without it is refused."""
    spy = CollectorSpy()
    monkeypatch.setattr(smoltrace.telemetry_session, "Collector", spy.cls)
    with FakeOpenAIServer(standard_script()) as server:
        run = run_main(
            [
                "--model",
                "openai/fake",
                "--api-base",
                server.api_base,  # type: ignore[attr-defined]
                "--limit",
                "1",
                "--agent-type",
                "tool",
                "--enable-otel",
                "--quiet",
                "--output-format",
                "json",
                "--collector-address",
                "127.0.0.1:0",
                "--collector-advertise",
                "127.0.0.1:9",
            ],
            tmp_path / "out",
        )
    assert run.rc == 0, run.stderr
    collector = spy.only
    assert collector.token and run.metadata["telemetry"]["collector"]["token"] is True
    assert collector.token not in (run.run_dir / "metadata.json").read_text("utf-8")
    assert run.results[0]["trace_id"] and collector.store.runs()[run.metadata["run_id"]]["spans"] > 0
    assert collector.ingest.stats.unauthenticated == 0


def test_the_json_api_lists_and_deletes_only_with_the_token() -> None:
    process = CollectorProcess()
    try:
        call(process.grpc, TRACE_METHOD, trace_request("run-a", [span(1, 1, None, "test_evaluation", T0, T0 + S)]).SerializeToString())
        assert set(process.get("/runs")) == {"run-a"}
        assert process.request("/runs", token=False) == (200, {})
        assert process.request("/runs/run-a", method="DELETE", token=False)[0] == 401
        assert set(process.get("/runs")) == {"run-a"}, "not deleted"
        assert os.stat(process.ready["token_file"]).st_mode & 0o077 == 0
        assert process.request("/runs/run-a", method="DELETE") == (200, {"dropped": "run-a"})
        assert process.terminate(timeout=10) == 0
    finally:
        process.close()


def test_a_token_file_protects_the_otlp_port_too(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("zq-collector-token\n", "utf-8")
    process = CollectorProcess(extra=("--token-file", str(token)))
    try:
        payload = trace_request("run-a", [span(1, 1, None, "test_evaluation", T0, T0 + S)]).SerializeToString()
        with pytest.raises(grpc.RpcError) as err:
            call(process.grpc, TRACE_METHOD, payload)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        call(process.grpc, TRACE_METHOD, payload, "zq-collector-token")
        assert set(process.get("/runs")) == {"run-a"}
        assert process.terminate(timeout=10) == 0
    finally:
        process.close()


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


FLOOD_MB = 96
MEMORY_MB = 4
SPILL_MB = 16


def test_a_flood_stays_within_the_spill_bound_and_reads_back_streaming(tmp_path: Path) -> None:
    """96 MB of spans into a collector with 4 MB of memory and 16 MB of spill: disk stays at the
    bound, RSS grows by far less than the flood, the excess is dropped and counted, and the run
    still reads back (streamed from the spill file)."""
    spill = tmp_path / "spill"
    process = CollectorProcess(extra=("--max-memory-mb", str(MEMORY_MB), "--max-spill-mb", str(SPILL_MB), "--spill-dir", str(spill)))
    try:
        child = psutil.Process(process.proc.pid)
        rss_before = child.memory_info().rss
        blob = "x" * (1024 * 1024 - 512)
        peak_rss = rss_before
        for i in range(FLOOD_MB):
            s = span(0x7, i + 1, None if i == 0 else 1, "test_evaluation" if i == 0 else f"s{i}", T0 + i, T0 + S, {"blob": blob})
            call(process.grpc, TRACE_METHOD, trace_request("run-flood", [s]).SerializeToString())
            if i % 8 == 0:
                peak_rss = max(peak_rss, child.memory_info().rss)
        runs = process.get("/runs")["run-flood"]
        disk = _dir_bytes(spill)
        assert disk <= SPILL_MB * 1024 * 1024 + 64 * 1024, disk
        assert runs["spilled_bytes"] + runs["memory_bytes"] <= (SPILL_MB + MEMORY_MB) * 1024 * 1024
        assert runs["dropped_requests"] >= FLOOD_MB - SPILL_MB - MEMORY_MB - 1, runs
        grown = (peak_rss - rss_before) / 2**20
        assert grown < 64, f"RSS grew {grown:.0f} MiB for a {FLOOD_MB} MB flood"
        status, docs = process.request("/runs/run-flood/traces")
        assert status == 200 and docs and docs[0]["span_count"] == runs["spans"]
        read_grown = (child.memory_info().rss - rss_before) / 2**20
        results: dict[str, Any] = {"flood_mb": FLOOD_MB, "spill_disk_mb": round(disk / 2**20, 1), "rss_grown_mib": round(grown, 1)}
        results |= {"dropped_requests": runs["dropped_requests"], "rss_after_read_mib": round(read_grown, 1)}
        print("collector flood:", results)
        assert process.terminate(timeout=10) == 0
    finally:
        process.close()


@pytest.mark.parametrize("address", ["0.0.0.0:4317", "[::]:4317", "10.1.2.3:4317"])
def test_a_collector_beyond_loopback_needs_an_advertised_address(address: str, tmp_path: Path, runner_env: None) -> None:
    run = run_main(["--model", "openai/fake", "--enable-otel", "--collector-address", address], tmp_path / "out")
    assert run.rc == 2 and "--collector-advertise" in run.stderr
    assert not (tmp_path / "out").exists()


def test_a_given_spill_folder_is_left_empty(tmp_path: Path, runner_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """--collector-spill-dir (compose: /cache/collector-spill) outlives the run: its spill files go."""
    spill = tmp_path / "spill"
    spy = CollectorSpy()
    monkeypatch.setattr(smoltrace.telemetry_session, "Collector", spy.cls)
    monkeypatch.setattr(spy.cls, "__init__", _small_memory(spy.cls.__init__))  # spill at once
    with FakeOpenAIServer(standard_script()) as server:
        run = run_main(
            [
                "--model",
                "openai/fake",
                "--api-base",
                server.api_base,  # type: ignore[attr-defined]
                "--limit",
                "1",
                "--agent-type",
                "tool",
                "--enable-otel",
                "--quiet",
                "--output-format",
                "json",
                "--collector-spill-dir",
                str(spill),
            ],
            tmp_path / "out",
        )
    assert run.rc == 0, run.stderr
    assert spy.only.store.stats.spills > 0, "the run did spill"
    assert run.results[0]["trace_id"] and read_traces(run.run_dir), "and its traces were read back"
    assert spill.is_dir() and list(spill.iterdir()) == []


def _small_memory(init: Any) -> Any:
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["max_memory_bytes"] = 1024
        init(self, *args, **kwargs)

    return wrapped


def read_traces(run_dir: Path) -> list[Any]:
    import json

    return json.loads((run_dir / "traces.json").read_text("utf-8"))
