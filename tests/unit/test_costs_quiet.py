"""Cost lookups never print litellm's banners, and local models' spans are never priced (no litellm
lookup for a model that has no API price). The demo run printed "Provider List: ..." on the console
for every model span of SmolLM2 before."""

from __future__ import annotations

import pytest

from smoltrace.costs import priced, token_cost
from smoltrace.telemetry import usage_attributes

LLM_SPAN = {"openinference.span.kind": "LLM", "llm.token_count.prompt": 12, "llm.token_count.completion": 3}


def test_an_unknown_model_is_unpriced_and_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert token_cost("/tmp/models/SmolLM2-135M-Instruct-not-a-provider", 10, 2) is None
    out = capsys.readouterr()
    assert "Provider List" not in out.out + out.err
    assert "Give Feedback" not in out.out + out.err


def test_local_model_spans_are_not_priced(monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[str] = []
    monkeypatch.setattr("smoltrace.costs.token_cost", lambda model, *a: looked_up.append(model) or 1.0)
    priced.cache_clear()
    local = usage_attributes({**LLM_SPAN, "llm.model_name": "/models/SmolLM2"}, price=False)
    assert "gen_ai.usage.cost.total" not in local and not looked_up
    assert local["gen_ai.usage.input_tokens"] == 12 and local["gen_ai.usage.output_tokens"] == 3
    api = usage_attributes({**LLM_SPAN, "llm.model_name": "gpt-4o-mini"})
    assert api["gen_ai.usage.cost.total"] == 1.0 and looked_up
    priced.cache_clear()
