"""`smoltrace-eval compare` reads a published results dataset (`hub:owner/smoltrace-results-…`)
from a fake Hub with the real huggingface_hub client, and pairs it with a local run folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from smoltrace.cli import main as cli_main
from smoltrace.hub import HubPublisher
from tests.fakes.hub_env import fake_hub_fixture  # noqa: F401 - fixture
from tests.unit.test_compare import planted, two_runs


def test_compare_a_published_run_with_a_folder(
    fake_hub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = two_runs(tmp_path, *planted([(True, False)] * 4 + [(True, True)] * 2))
    report = HubPublisher(fake_hub.hub.token).publish(a, force=True)  # a planted folder: integrity is not what this tests
    results_repo = report.datasets["results"]
    assert results_repo
    assert cli_main(["compare", f"hub:{results_repo}", str(b)]) == 2  # private, no token
    assert "dataset not found (or private: set HF_TOKEN)" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", fake_hub.hub.token)
    code = cli_main(["compare", f"hub:{results_repo}", str(b), "--json", str(tmp_path / "c.json")])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    assert "6 paired task execution(s); left out: 0 only in A, 0 only in B" in out
    assert "A passed 6/6, B passed 2/6" in out
    assert cli_main(["compare", f"hub:{fake_hub.hub.user}/smoltrace-results-missing", str(b)]) == 2
    assert "dataset not found" in capsys.readouterr().err
