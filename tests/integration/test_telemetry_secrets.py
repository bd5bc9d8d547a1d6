"""No secret leaves the process through telemetry: canary values planted as the HF token
(--hf-token-file), an api_key model argument and OPENAI_API_KEY reach the agents' conversation
(through --prompt-yml instructions, so without redaction they would be in the spans), and must
appear in no output file and in none of the raw OTLP payloads the collector received. Huge
attribute values are capped with ...[TRUNCATED]."""

from __future__ import annotations

from pathlib import Path

import pytest

import smoltrace.telemetry_session
from tests.fakes.chat_servers import FakeOpenAIServer
from tests.fakes.runner_fixtures import read_json, run_main, runner_env_fixture, standard_script  # noqa: F401 - fixture
from tests.fakes.telemetry_procs import CollectorSpy

# no credential-looking shape (no hf_/sk- prefix, no key=value): only the value-based redaction catches them
HF_CANARY = "zqHFcanary7f3a9c2e11b4d5"
ARG_CANARY = "zqARGcanary5d8e0a6b93f1c"
ENV_CANARY = "zqENVcanary2c7b9e4f1a6d0"
CANARIES = {"--hf-token-file": HF_CANARY, "api_key model arg": ARG_CANARY, "OPENAI_API_KEY": ENV_CANARY}
MAX_CHARS = 8192
TRUNCATED = "...[TRUNCATED]"


def test_canaries_never_leave_the_process(tmp_path: Path, runner_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_CANARY)
    monkeypatch.setenv("SMOLTRACE_GPU_EXPORTER_BACKEND", "simulated:1")
    spy = CollectorSpy()
    monkeypatch.setattr(smoltrace.telemetry_session, "Collector", spy.cls)
    token_file = tmp_path / "hf_token"
    token_file.write_text(HF_CANARY + "\n", "utf-8")
    prompt = tmp_path / "prompt.yml"
    filler = "lorem ipsum " * 2000  # makes the system prompt far longer than the 8 kB cap
    prompt.write_text(f"instructions: |\n  Keep {HF_CANARY}, {ARG_CANARY} and {ENV_CANARY} in mind.\n  {filler}\n", "utf-8")
    script = standard_script()
    script.record_bodies = True
    with FakeOpenAIServer(script) as server:
        run = run_main(
            [
                "--model",
                "openai/fake",
                "--api-base",
                server.api_base,  # type: ignore[attr-defined]
                "--limit",
                "1",
                "--enable-otel",
                "--enable-gpu-metrics",
                "--hf-token-file",
                str(token_file),
                "--model-args",
                f"api_key={ARG_CANARY}",
                "--prompt-yml",
                str(prompt),
                "--output-format",
                "json",
                "--quiet",
            ],
            tmp_path / "out",
        )
    assert run.rc == 0, run.stdout + run.stderr
    assert run.results and all(r["success"] for r in run.results), run.results
    # the canaries did reach the model conversation, so they were in the spans before redaction
    assert any(all(c in body for c in CANARIES.values()) for body in script.bodies)

    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"results.json", "traces.json", "metrics.json", "metrics_rows.json", "metadata.json"}
    for path in files:
        text = path.read_text("utf-8", errors="replace")
        for where, canary in CANARIES.items():
            assert canary not in text, f"the {where} canary is in {path.name}"
    for where, canary in CANARIES.items():
        assert canary not in run.stdout and canary not in run.stderr, where

    payloads = spy.raw_payloads()
    collector = spy.only
    run_id = run.metadata["run_id"]
    sampling_id = run.metadata["gpu_metrics"]["sampling_run_id"]  # the exporter labels its samples with the run's segment
    assert collector.store.payloads(run_id, "traces") and collector.store.payloads(sampling_id, "metrics")
    for payload in payloads:
        for where, canary in CANARIES.items():
            assert canary.encode() not in payload, f"the collector received the {where} canary"

    traces = read_json(run.run_dir / "traces.json")
    values = [v for d in traces for s in d["spans"] for v in s["attributes"].values() if isinstance(v, str)]
    assert any("[REDACTED]" in v for v in values), "the planted values were redacted, not absent"
    assert any(v.endswith(TRUNCATED) for v in values), "the huge system prompt was capped"
    assert max(len(v) for v in values) <= MAX_CHARS + len(TRUNCATED)
    for d in traces:
        for s in d["spans"]:
            for e in s["events"]:
                for v in e["attributes"].values():
                    assert not isinstance(v, str) or len(v) <= MAX_CHARS + len(TRUNCATED)
