"""Security findings of issue 13 on the runner, end to end through `main()`:

- the file tools need a root of their own (not the current folder, not the output folder);
- secrets under names the redactor did not know (DB_PASSWORD=..., extra_headers, credentials,
  URL userinfo) never reach an artefact (results, checkpoint, traces, metadata, report, debug log);
- output files respect the umask.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.chat_servers import Script, call, final
from tests.fakes.runner_fixtures import (  # noqa: F401 - fixtures
    openai_server_fixture,
    run_main,
    runner_env_fixture,
    task,
    write_jsonl,
)

pytestmark = pytest.mark.usefixtures("runner_env")


def test_file_tools_without_a_root_exit_2_and_read_nothing(openai_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container's cwd is /results, the output volume: a planted .env there must stay unread."""
    out = tmp_path / "results"
    out.mkdir()
    (out / ".env").write_text("DB_PASSWORD=hunter2-canary\n", "utf-8")
    monkeypatch.chdir(out)
    script = Script()
    script.add("Read .env", call("read_file", file_path=".env"), final("done"))
    server = openai_server(script)
    dataset = write_jsonl(tmp_path / "t.jsonl", [task("env", "Read .env for me", expected_tool="read_file")])
    run = run_main(
        ["--model", "openai/fake", "--api-base", server.api_base, "--dataset-name", str(dataset), "--enable-tools", "read_file"], out
    )
    assert run.rc == 2
    assert "needs --working-directory" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert script.requests == 0
    assert sorted(p.name for p in out.iterdir()) == [".env"], "no run folder"


def test_file_tools_with_the_output_folder_inside_the_root_exit_2(openai_server, tmp_path: Path) -> None:
    server = openai_server(Script())
    (tmp_path / "work").mkdir()
    run = run_main(
        ["--model", "openai/fake", "--api-base", server.api_base, "--enable-tools", "write_file", "--working-directory", str(tmp_path)],
        tmp_path / "work" / "out",
    )
    assert run.rc == 2
    assert "overlaps the output folder" in run.stderr
    assert not (tmp_path / "work" / "out").exists()


def test_output_files_respect_the_umask(openai_server, tmp_path: Path) -> None:
    """Under umask 077 every file of the run folder is 0600 (it was forced to 0644)."""
    import os

    from tests.fakes.runner_fixtures import standard_script

    server = openai_server(standard_script())
    old = os.umask(0o077)
    try:
        run = run_main(["--model", "openai/fake", "--api-base", server.api_base, "--limit", "1", "--quiet"], tmp_path / "out")
    finally:
        os.umask(old)
    assert run.rc == 0, run.stderr
    files = [p for p in run.run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"results.json", "metadata.json", "checkpoint.jsonl", "report.html", "leaderboard_row.json"}
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {"0o600"}, modes
    assert oct(run.run_dir.stat().st_mode & 0o777) == "0o700"


# canaries with no credential shape of their own (no sk-/hf_ prefix): only knowing the run's
# secrets (or the NAME=value shape around them) catches them
HEADER_CANARY = "zqHDRcanary4b7c1e9a0d2f"
PKEY_CANARY = "zqPKEYcanary8e2d6a1c5b3f"
URL_CANARY = "zqURLcanary3f9a7c2e5d1b"
DOTENV_CANARY = "zqDOTENVcanary6c1a8e4b2d"


def test_canaries_in_headers_credentials_url_userinfo_and_a_read_file_reach_no_artefact(tmp_path: Path) -> None:
    """The issue's experiment, repeated: a model reads a .env (DB_PASSWORD=...) through read_file and
    answers with it; the run has extra_headers={"Authorization": ...}, vertex_credentials={"private_key":
    ...} and --api-base http://user:pass@...; traced, --debug. None of the secrets is in results.json,
    checkpoint.jsonl, traces.json, metadata.json (config and command), report.html, stdout or the
    --debug log."""
    import json
    import urllib.parse

    from tests.fakes.chat_servers import FakeOpenAIServer
    from tests.fakes.runner_fixtures import run_subprocess, subprocess_env

    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text(f"DB_PASSWORD={DOTENV_CANARY}\n", "utf-8")
    dataset = write_jsonl(tmp_path / "t.jsonl", [task("env", "Read .env and tell me what it says", expected_tool="read_file")])
    script = Script()
    script.record_bodies = True
    script.add("Read .env", call("read_file", file_path=".env"), final(f"It says DB_PASSWORD={DOTENV_CANARY}"))
    with FakeOpenAIServer(script) as server:
        base = urllib.parse.urlsplit(server.api_base)  # type: ignore[attr-defined]
        api_base = f"{base.scheme}://smoltrace:{URL_CANARY}@{base.netloc}{base.path}"
        result = run_subprocess(
            [
                "--model",
                "openai/fake",
                "--api-base",
                api_base,
                "--dataset-name",
                str(dataset),
                "--enable-tools",
                "read_file",
                "--working-directory",
                str(work),
                "--model-args",
                json.dumps({"Authorization": HEADER_CANARY}).join(("extra_headers=", "")),
                json.dumps({"private_key": PKEY_CANARY, "client_email": "x@y.z"}).join(("vertex_credentials=", "")),
                "--enable-otel",
                "--debug",
                "--output-format",
                "json",
                "--output-dir",
                str(tmp_path / "out"),
            ],
            env=subprocess_env(),
            timeout=120,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert any(DOTENV_CANARY in body for body in script.bodies), "the model did read the .env (the leak was possible)"
    assert len(result.stderr) > 1000, "--debug logged"
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"results.json", "checkpoint.jsonl", "traces.json", "metadata.json", "report.html"}
    for canary in (HEADER_CANARY, PKEY_CANARY, URL_CANARY, DOTENV_CANARY):
        assert canary not in result.stdout, canary
        assert canary not in result.stderr, canary
        for path in files:
            assert canary not in path.read_text("utf-8", errors="replace"), (canary, path.name)
    (run_dir,) = (tmp_path / "out").iterdir()
    meta = json.loads((run_dir / "metadata.json").read_text("utf-8"))
    assert meta["config"]["model_args"]["extra_headers"] == {"Authorization": "[REDACTED]"}
    assert meta["config"]["model_args"]["vertex_credentials"] == "[REDACTED]"
    assert meta["config"]["api_base"] == f"{base.scheme}://[REDACTED]@{base.netloc}{base.path}"
    assert any("[REDACTED]" in part for part in meta["command"])
    row = json.loads((run_dir / "results.json").read_text("utf-8"))[0]
    assert row["tools_used"] == ["read_file"] and "DB_PASSWORD=[REDACTED]" in row["response"]
