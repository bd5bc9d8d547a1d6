"""`smoltrace-eval leaderboard hub:owner/smoltrace-leaderboard` reads the published leaderboard
dataset (one Parquet file per run) from a fake Hub and marks the front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smoltrace.cli import main as cli_main
from smoltrace.hub import HubPublisher
from tests.fakes.hub_env import fake_hub_fixture  # noqa: F401 - fixture
from tests.unit.test_leaderboard import PLANTED, plant


def test_leaderboard_from_the_hub(fake_hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = plant(tmp_path / "runs", {k: PLANTED[k] for k in ("A", "B", "C")})
    publisher = HubPublisher(fake_hub.hub.token)
    for name in ("A", "B", "C"):
        publisher.publish(runs / f"run_{name}", force=True)  # planted folders: integrity is not what this tests
    monkeypatch.setenv("HF_TOKEN", fake_hub.hub.token)
    out = tmp_path / "lb.json"
    assert cli_main(["leaderboard", f"hub:{fake_hub.hub.user}/smoltrace-leaderboard", "--json", str(out)]) == 0
    entries = json.loads(out.read_text("utf-8"))["entries"]
    assert sorted(e["model"] for e in entries) == ["model-A", "model-B", "model-C"]
    assert {e["model"] for e in entries if e["front"]} == {"model-A", "model-B"}
    a = next(e for e in entries if e["model"] == "model-A")
    assert a["cost_usd"] == pytest.approx(0.01) and a["success_rate"] == 90.0
