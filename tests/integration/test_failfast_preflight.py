"""Fail fast (issue 12): every provider is checked before the run folder exists and before any task
runs — the provider resolves, the credentials are there and accepted, the model is known, the
server answers — and a run whose credentials are refused mid-way stops instead of "completing"
with every row an auth error. Real clients (litellm, huggingface_hub) against fake servers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakes.chat_servers import Script, Turn, error
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    assert_no_traceback,
    closed_port,
    hub_online,
    openai_server_fixture,
    run_main,
    run_subprocess,
    runner_env_fixture,
    subprocess_env,
    task,
    write_jsonl,
)

pytestmark = pytest.mark.usefixtures("runner_env")


def tasks(tmp_path: Path, n: int = 3, difficulty: str = "easy") -> Path:
    rows = [task(f"t{i}", f"Task {i}: what's the weather in Paris, France?", difficulty=difficulty) for i in range(n)]
    return write_jsonl(tmp_path / "tasks.jsonl", rows)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("smoltrace-eval: error: "), stderr
    return lines[0]


def test_a_401_server_exits_3_before_any_task_naming_the_variable(openai_server, tmp_path: Path) -> None:
    script = Script(default=error(401))
    server = openai_server(script)
    run = run_main(["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(tasks(tmp_path))], tmp_path / "out")
    assert run.rc == 3, run.stdout + run.stderr
    line = one_error_line(run.stderr)
    assert "refused the credentials" in line and "OPENAI_API_KEY" in line
    assert "sk-fake" not in run.stdout + run.stderr
    assert script.requests == 0, "no task ran"
    assert script.preflight_requests == 1, "401 is not retried"
    assert not (tmp_path / "out").exists(), "no run folder"
    assert_no_traceback(run.stdout + run.stderr)


def test_a_403_server_exits_3(openai_server, tmp_path: Path) -> None:
    server = openai_server(Script(default=error(403)))
    run = run_main(["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(tasks(tmp_path))], tmp_path / "out")
    assert run.rc == 3
    assert "refused the credentials" in one_error_line(run.stderr)


def test_an_unknown_model_exits_3(openai_server, tmp_path: Path) -> None:
    server = openai_server(Script(default=error(404)))
    run = run_main(["--model", "openai/nope", "--api-base", server.api_base, "--dataset-name", str(tasks(tmp_path))], tmp_path / "out")
    assert run.rc == 3
    assert "does not know the model 'openai/nope'" in one_error_line(run.stderr)
    assert not (tmp_path / "out").exists()


def test_a_dead_port_exits_3_after_the_retries(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{closed_port()}/v1"
    args = ["--model", "openai/fake", "--api-base", base, "--max-retries", "1", "--dataset-name", str(tasks(tmp_path))]
    run = run_main(args, tmp_path / "out")
    assert run.rc == 3
    line = one_error_line(run.stderr)
    assert f"cannot reach the model server at {base} after 2 attempt(s)" in line
    assert not (tmp_path / "out").exists()


def test_no_network_for_a_hosted_model_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--model gpt-4o` without --api-base and no route to the API (a proxy that refuses)."""
    dead = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("OPENAI_BASE_URL", dead + "/v1")  # what the OpenAI client uses instead of api.openai.com
    run = run_main(["--model", "gpt-4o", "--max-retries", "0", "--dataset-name", str(tasks(tmp_path))], tmp_path / "out")
    assert run.rc == 3, run.stdout + run.stderr
    assert "cannot reach the model server" in one_error_line(run.stderr)


def test_an_unknown_provider_exits_2_with_litellms_list_in_one_line(tmp_path: Path) -> None:
    run = run_subprocess(["--model", "bogusprovider/x", "--dataset-name", str(tasks(tmp_path)), "--output-dir", str(tmp_path / "out")])
    assert run.returncode == 2, run.stdout + run.stderr
    line = one_error_line(run.stderr)
    assert "litellm does not know the provider of 'bogusprovider/x'" in line
    assert "openai" in line and "anthropic" in line and "ollama" in line
    assert "Provider List" not in run.stdout + run.stderr and "Give Feedback" not in run.stdout + run.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_key_exits_3_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    run = run_main(
        ["--model", "openai/fake", "--api-base", "http://127.0.0.1:9/v1", "--dataset-name", str(tasks(tmp_path))], tmp_path / "out"
    )
    assert run.rc == 3
    assert "needs OPENAI_API_KEY" in one_error_line(run.stderr)


def test_inference_with_hf_hub_offline_fails_in_preflight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_fake")  # runner_env sets HF_HUB_OFFLINE=1
    run = run_main(
        ["--model", "org/model", "--provider", "inference", "--output-format", "json", "--dataset-name", str(tasks(tmp_path))],
        tmp_path / "out",
    )
    assert run.rc == 3
    assert "HF_HUB_OFFLINE=1" in one_error_line(run.stderr)
    assert not (tmp_path / "out").exists()


def test_inference_endpoint_refusing_the_token_exits_3(openai_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub_online(monkeypatch)  # the fake endpoint is on 127.0.0.1
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    server = openai_server(Script(default=error(401)))
    args = [
        "--model",
        "org/model",
        "--provider",
        "inference",
        "--output-format",
        "json",
        "--api-base",
        server.api_base,
        "--dataset-name",
        str(tasks(tmp_path)),
    ]
    run = run_main(args, tmp_path / "out")
    assert run.rc == 3, run.stdout + run.stderr
    assert "HF_TOKEN" in one_error_line(run.stderr)


def test_transient_preflight_errors_are_retried(openai_server, tmp_path: Path) -> None:
    """A 503 then a reply: the probe is retried under the run's policy and the run goes on."""
    script = Script(default=Turn(content="ok"))
    script.add("smoltrace preflight", error(503, retry_after=0), Turn(content="ok"))
    server = openai_server(script)
    run = run_main(
        ["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(tasks(tmp_path, 1)), "--quiet"], tmp_path / "out"
    )
    assert run.rc == 0, run.stdout + run.stderr
    assert script.preflight_requests == 2


def test_skip_preflight_sends_no_probe(openai_server, tmp_path: Path) -> None:
    script = Script(default=Turn(content="ok"))
    server = openai_server(script)
    args = ["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(tasks(tmp_path, 1)), "--quiet"]
    run = run_main([*args, "--skip-preflight"], tmp_path / "out")
    assert run.rc == 0, run.stderr
    assert script.preflight_requests == 0


def test_a_burst_of_auth_errors_mid_run_stops_dispatch_exit_3_and_never_publishes(openai_server, tmp_path: Path) -> None:
    """Credentials accepted by the probe, then refused (a key revoked, a proxy that only lets the
    probe through): the first 3 executions are auth errors, dispatch stops, what is done is
    written, status failed, exit 3."""
    script = Script(default=error(401))
    script.add("smoltrace preflight", Turn(content="ok"))
    server = openai_server(script)
    args = ["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(tasks(tmp_path, 12)), "--quiet"]
    run = run_main([*args, "--output-format", "json"], tmp_path / "out")
    assert run.rc == 3, run.stdout + run.stderr
    assert "auth errors" in run.stderr and "nothing was published" in run.stderr
    rows = run.results
    assert 3 <= len(rows) < 12 and all(r["error_type"] == "auth_error" for r in rows)
    meta = run.metadata
    assert meta["status"] == "failed" and meta["stop_reason"]["kind"] == "auth_error"
    assert (run.run_dir / "report.html").exists()
    assert_no_traceback(run.stdout + run.stderr)


def test_litellm_banners_never_reach_the_console(openai_server, tmp_path: Path) -> None:
    """A run whose tasks fail inside litellm (400 on every agent call), not --quiet: litellm's
    "Give Feedback / Get Help" and "Provider List" banners stay off the console."""
    script = Script(default=error(400))
    script.add("smoltrace preflight", Turn(content="ok"))
    server = openai_server(script)
    args = ["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(tasks(tmp_path, 2)), "--max-retries", "0"]
    run = run_subprocess([*args, "--output-dir", str(tmp_path / "out")], env=subprocess_env())
    assert run.returncode == 0, run.stdout + run.stderr
    for banner in ("Give Feedback", "Provider List", "LiteLLM.Info"):
        assert banner not in run.stdout + run.stderr


def test_no_task_matching_the_filter_exits_2(tmp_path: Path) -> None:
    run = run_main(["--model", "openai/fake", "--dataset-name", str(tasks(tmp_path)), "--difficulty", "hard"], tmp_path / "out")
    assert run.rc == 2
    assert "no task matches --difficulty hard" in one_error_line(run.stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_output_dir_not_writable_exits_2_at_once(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target"
    if kind == "file":
        target.write_text("x")
        out = target
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes anywhere")
        target.mkdir()
        target.chmod(0o555)
        out = target / "runs"
    run = run_main(["--model", "openai/fake", "--dataset-name", str(tasks(tmp_path))], out)
    assert run.rc == 2, run.stdout + run.stderr
    assert "--output-dir" in one_error_line(run.stderr)
