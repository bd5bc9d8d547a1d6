"""smoltrace.gpu: the GPU-metrics rule (docs/DESIGN.md, exact) for every provider and flag, and
the exact console lines."""

from __future__ import annotations

import pytest

from smoltrace.gpu import DISABLED_MESSAGE, GpuDecision, GpuSession, decide, otel_console_line
from tests.fakes.runner_fixtures import closed_port

PROVIDERS = ("litellm", "inference", "transformers", "ollama")
FLAGS = ("none", "disable", "enable")


def expected(provider: str, flag: str) -> bool:
    """The rule, written out again from the design document."""
    is_local_model = provider in ["transformers", "ollama"]
    if flag == "disable":
        return False
    if is_local_model:
        return True
    return flag == "enable"  # API models only when forced on


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_rule_for_every_provider_and_flag(provider: str, flag: str) -> None:
    decision = decide(provider, disable_flag=flag == "disable", enable_flag=flag == "enable")
    assert decision.enabled is expected(provider, flag)
    assert decision.reason
    if flag == "disable":
        assert decision.console == "[INFO] GPU metrics disabled by user (--disable-gpu-metrics flag)"
    else:
        assert decision.console is None


def test_disable_wins_over_enable() -> None:
    for provider in PROVIDERS:
        decision = decide(provider, disable_flag=True, enable_flag=True)
        assert not decision.enabled
        assert decision.console == DISABLED_MESSAGE


def test_the_exact_console_lines() -> None:
    assert DISABLED_MESSAGE == "[INFO] GPU metrics disabled by user (--disable-gpu-metrics flag)"
    assert otel_console_line(True) == "[OK] genai_otel_instrument enabled (GPU metrics: True)"
    assert otel_console_line(False) == "[OK] genai_otel_instrument enabled (GPU metrics: False)"


def test_reasons_say_why() -> None:
    assert "local provider ollama" in decide("ollama", False).reason
    assert "--disable-gpu-metrics" in decide("transformers", True).reason
    assert "--enable-gpu-metrics" in decide("litellm", False, True).reason
    assert "API provider inference" in decide("inference", False).reason


def test_a_disabled_session_does_nothing() -> None:
    session = GpuSession(GpuDecision(False, "off"), "run-1", address=f"127.0.0.1:{closed_port()}")
    session.start()
    report = session.stop()
    assert report.as_dict() == {
        "scope": None,
        "sampling_run_id": "run-1",
        "tls": False,
        "enabled": False,
        "reason": "off",
        "exporter": None,
        "embedded_exporter": False,
        "gpu_available": None,
        "devices": [],
        "summary": None,
        "warning": None,
    }


def test_an_unreachable_exporter_is_a_warning_not_an_error() -> None:
    address = f"127.0.0.1:{closed_port()}"
    session = GpuSession(GpuDecision(True, "local provider ollama"), "run-2", address=address, rpc_timeout_s=1.0)
    session.start()
    report = session.stop()
    assert report.enabled
    assert report.exporter == address
    assert report.summary is None
    assert report.warning and address in report.warning
