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
