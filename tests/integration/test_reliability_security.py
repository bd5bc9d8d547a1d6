"""Security evidence (issue #7): what a CodeAgent's code may do inside smolagents' restricted
executor, and where the long-running services listen by default.

Covered elsewhere and only referenced by docs/RELIABILITY.md: bearer-token auth and TLS of the
exporter (test_exporter_security.py), redaction canaries (test_telemetry_secrets.py,
test_runner_resume.py, test_reliability_faults.py adds report.html and logs), file tools and
path traversal (unit/test_runner_tools.py, test_runner_outputs.py), hostile --prompt-yml
(test_runner_inputs.py)."""

from __future__ import annotations

import ipaddress
import json
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.fakes.chat_servers import FakeOpenAIServer, code
from tests.fakes.runner_fixtures import read_json, run_main, runner_env_fixture, task, write_jsonl  # noqa: F401 - fixture
from tests.fakes.telemetry_procs import HookScript, ReadyLineProcess, child_env, collector_command

SECRET = "zqSANDBOXcanary4b1e8d"


def attacks(secret: Path, marker: Path) -> dict[str, str]:
    """Code a hostile (or confused) model might write; none of it may work."""
    return {
        "open-etc-passwd": "data = open('/etc/passwd').read()\nfinal_answer(data)",
        "open-secret": f"data = open({str(secret)!r}).read()\nfinal_answer(data)",
        "os-system": f"import os\nos.system('touch {marker}-os')\nfinal_answer('ran')",
        "subprocess": f"import subprocess\nsubprocess.run(['touch', '{marker}-sub'])\nfinal_answer('ran')",
        "dunder-import": f"os = __import__('os')\nos.system('touch {marker}-dunder')\nfinal_answer('ran')",
        "pathlib": f"import pathlib\nfinal_answer(pathlib.Path({str(secret)!r}).read_text())",
        "builtins-open": f"import builtins\nfinal_answer(builtins.open({str(secret)!r}).read())",
        "globals-escape": "final_answer(globals()['__builtins__']['open']('/etc/passwd').read())",
    }


def test_code_agent_code_cannot_read_files_import_or_spawn(tmp_path: Path, runner_env: None) -> None:
    work = tmp_path / "work"
    work.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET, "utf-8")
    marker = tmp_path / "pwned"
    plan = attacks(secret, marker)
    dataset = write_jsonl(
        tmp_path / "attacks.jsonl",
        [task(name, f"Attack {name}: do it", agent_type="code", expected_keywords=["nothing"]) for name in plan],
    )
    script = HookScript()
    script.record_bodies = True
    for name, source in plan.items():
        # the hostile code twice (once per step), so the run ends at --max-steps with the error in memory
        script.add(f"Attack {name}:", code(source), code(source))
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    with FakeOpenAIServer(script) as server:
        run = run_main(
            [
                "--model",
                "openai/fake",
                "--api-base",
                server.api_base,  # type: ignore[attr-defined]
                "--dataset-name",
                str(dataset),
                "--agent-type",
                "code",
                "--max-steps",
                "2",
                "--working-directory",
                str(work),
                "--quiet",
                "--output-format",
                "json",
            ],
            tmp_path / "out",
        )
    assert run.rc == 0, run.stdout + run.stderr
    assert not list(tmp_path.glob("pwned*")), "a process was spawned by agent code"
    new_children = {p.pid for p in psutil.Process().children(recursive=True)} - children_before
    assert not new_children, new_children
    rows = {r["task_id"]: r for r in run.results}
    assert set(rows) == set(plan)
    for name, row in rows.items():
        assert row["success"] is False, (name, row)
        assert row["final_answer_called"] is False, (name, row)  # the code never got as far as final_answer
        assert row["error_type"] == "max_steps", (name, row)
        response = str(row["response"] or "")
        assert SECRET not in response and "root:" not in response, name
    # the model was told why its code failed (the executor's error is in the next request)
    for name in plan:
        bodies = [b for b in script.bodies if f"Attack {name}:" in b]
        assert len(bodies) >= 2, name  # two steps (and smolagents' forced answer after the last one)
        second = json.loads(bodies[1])
        told = " ".join(str(m.get("content")) for m in second["messages"])
        assert "Error" in told or "error" in told, (name, told[-800:])
    # the secret and /etc/passwd never reached the model or any output file
    assert not any(SECRET in b for b in script.bodies)
    assert not any("root:x:0:0" in b for b in script.bodies)
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            text = path.read_text("utf-8", errors="replace")
            assert SECRET not in text and "root:x:0:0" not in text, path


def test_code_agent_errors_name_the_refusal(tmp_path: Path, runner_env: None) -> None:
    """The executor's own words for each refusal (what an operator reads in the trace)."""
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET, "utf-8")
    from smolagents.local_python_executor import LocalPythonExecutor

    from smoltrace.agents import DEFAULT_AUTHORIZED_IMPORTS

    expected = {
        "open-etc-passwd": "open",
        "os-system": "os",
        "subprocess": "subprocess",
        "dunder-import": "__import__",
        "pathlib": "pathlib",
        "builtins-open": "builtins",
    }
    plan = attacks(secret, tmp_path / "pwned")
    for name, needle in expected.items():
        executor = LocalPythonExecutor(additional_authorized_imports=list(DEFAULT_AUTHORIZED_IMPORTS))
        executor.send_tools({})
        with pytest.raises(Exception) as err:
            executor(plan[name])
        assert type(err.value).__name__ == "InterpreterError", (name, err.value)
        assert needle in str(err.value), (name, str(err.value))
    assert not list(tmp_path.glob("pwned*"))


# -- where the services listen ----------------------------------------------------------------------
def listening(pid: int) -> list[tuple[str, int]]:
    try:
        conns = psutil.Process(pid).net_connections(kind="inet")
    except psutil.NoSuchProcess:
        return []
    return [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]


def assert_loopback(sockets: list[tuple[str, int]], what: str) -> None:
    assert sockets, f"{what}: no listening socket found"
    for ip, port in sockets:
        address = ipaddress.ip_address(ip)
        mapped = getattr(address, "ipv4_mapped", None)  # gRPC's dual-stack socket reports ::ffff:127.0.0.1
        assert (mapped or address).is_loopback, f"{what} listens on {ip}:{port}"


def test_exporter_and_collector_defaults_are_loopback() -> None:
    from smoltrace.collector import Collector
    from smoltrace.config import EvalConfig
    from smoltrace_gpu_exporter.config import ExporterConfig

    config = ExporterConfig()
    assert config.grpc_address.startswith("127.0.0.1:") and config.metrics_address.startswith("127.0.0.1:")
    assert EvalConfig.__dataclass_fields__["collector_address"].default == "127.0.0.1:0"
    import inspect

    assert inspect.signature(Collector).parameters["address"].default == "127.0.0.1:0"


def _default_process(command: list[str], ports: tuple[int, ...]) -> ReadyLineProcess:
    for port in ports:
        if any(c.laddr.port == port for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN):
            pytest.skip(f"default port {port} is taken on this machine")
    return ReadyLineProcess(command, env=child_env())


def test_exporter_cli_with_default_addresses_binds_loopback_only() -> None:
    proc = _default_process([sys.executable, "-m", "smoltrace_gpu_exporter.cli", "--backend", "simulated:1"], (50051, 9402))
    try:
        assert proc.ready["grpc"] == "127.0.0.1:50051" and proc.ready["metrics"] == "127.0.0.1:9402"
        sockets = listening(proc.proc.pid)
        assert {port for _, port in sockets} >= {50051, 9402}
        assert_loopback(sockets, "smoltrace-gpu-exporter")
    finally:
        proc.close()


def test_collector_cli_with_default_addresses_binds_loopback_only() -> None:
    proc = _default_process(collector_command(), (4317, 4319))
    try:
        sockets = listening(proc.proc.pid)
        assert {port for _, port in sockets} >= {4317, 4319}
        assert_loopback(sockets, "smoltrace-collector")
    finally:
        proc.close()


def test_a_runs_embedded_collector_and_local_exporter_bind_loopback(
    tmp_path: Path, runner_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a task runs: every socket the runner process and its local exporter child listen on."""
    monkeypatch.setenv("SMOLTRACE_GPU_EXPORTER_BACKEND", "simulated:1")
    seen: dict[str, Any] = {}

    def look() -> None:
        me = psutil.Process()
        seen["runner"] = listening(me.pid)
        seen["children"] = {c.pid: (c.cmdline(), listening(c.pid)) for c in me.children(recursive=True)}

    script = HookScript()
    script.add("Paris, France?", code("final_answer('20')"))
    script.on_start["Paris, France?"] = look
    dataset = write_jsonl(tmp_path / "t.jsonl", [task("p", "Weather in Paris, France?", agent_type="code")])
    with FakeOpenAIServer(script) as server:
        run = run_main(
            [
                "--model",
                "openai/fake",
                "--api-base",
                server.api_base,  # type: ignore[attr-defined]
                "--dataset-name",
                str(dataset),
                "--agent-type",
                "code",
                "--enable-otel",
                "--enable-gpu-metrics",
                "--quiet",
            ],
            tmp_path / "out",
        )
    assert run.rc == 0, run.stdout + run.stderr
    assert not script.hook_errors, script.hook_errors
    assert run.metadata["gpu_metrics"]["embedded_exporter"] is True
    assert_loopback(seen["runner"], "runner (embedded collector, fake model server)")
    exporters = [
        sockets
        for cmd, sockets in seen["children"].values()
        if any("smoltrace_gpu_exporter" in part or "smoltrace.gpu_child" in part for part in cmd)
    ]
    assert exporters, seen["children"]
    for sockets in exporters:
        assert_loopback(sockets, "the runner's local exporter")
    # and nothing keeps listening after the run: the local exporter child is gone
    for pid in seen["children"]:
        deadline = time.monotonic() + 10
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, f"child {pid} outlived the run"
