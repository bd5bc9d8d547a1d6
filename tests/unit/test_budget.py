"""Budgets: flags checked, the spend counted (prior processes of a resumed run included, live GPU
energy/CO2), the first budget reached reported, and budgets that cannot be enforced refused."""

from __future__ import annotations

import pytest

from smoltrace.budget import BudgetError, BudgetTracker, Spend, budgets_of, check_enforceable, prior_spend
from smoltrace.config import ConfigError, build_parser, config_from_args


def config(*flags: str):
    return config_from_args(build_parser().parse_args(["--model", "openai/fake", *flags]))


def test_flags_become_budgets() -> None:
    cfg = config("--max-tokens", "5000", "--max-cost-usd", "0.5", "--max-energy-j", "2e6", "--max-co2-g", "12.5")
    assert [(b.kind.kind, b.limit) for b in budgets_of(cfg)] == [("tokens", 5000), ("cost_usd", 0.5), ("energy_j", 2e6), ("co2_g", 12.5)]
    assert budgets_of(config()) == []
    assert cfg.public_dict()["max_cost_usd"] == 0.5  # recorded in metadata.config, so --resume keeps it


@pytest.mark.parametrize("flags", [["--max-tokens", "0"], ["--max-cost-usd", "-1"], ["--max-energy-j", "nan"], ["--max-co2-g", "inf"]])
def test_bad_budget_flags(flags: list[str]) -> None:
    with pytest.raises(ConfigError, match="must be a positive number"):
        config(*flags)


def test_tokens_and_cost_reach_their_budget() -> None:
    cfg = config("--max-tokens", "1000", "--max-cost-usd", "0.05")
    tracker = BudgetTracker(budgets_of(cfg))
    tracker.add({"total_tokens": 400, "cost_usd": 0.004})
    assert tracker.exhausted() is None
    tracker.add({"total_tokens": 600, "cost_usd": None})  # 1,000 tokens: the token budget is reached (cost 0.004 is not)
    hit = tracker.exhausted()
    assert hit is not None and hit.as_dict() == {"kind": "tokens", "flag": "--max-tokens", "limit": 1000.0, "used": 1000.0}
    assert hit.describe() == "budget reached: tokens 1000 of 1000 tokens (--max-tokens)"


def test_prior_spend_of_a_resumed_run_counts() -> None:
    rows = [{"total_tokens": 400, "cost_usd": 0.02}, {"total_tokens": 500, "cost_usd": None}]
    prior = prior_spend(rows, {"spend": {"energy_j": 1500.0, "co2_g": 0.2}})
    assert prior == Spend(tokens=900, cost_usd=0.02, energy_j=1500.0, co2_g=0.2)
    assert prior_spend([], {"gpu_metrics": {"summary": {"energy_joules": 99.0, "co2_grams": 0.01}}}).energy_j == 99.0
    tracker = BudgetTracker(budgets_of(config("--max-tokens", "1000")), prior=prior)
    assert tracker.exhausted() is None
    tracker.add({"total_tokens": 100})
    assert tracker.exhausted() is not None


def test_energy_and_co2_use_the_live_gpu_reading() -> None:
    readings = iter([(400.0, 0.05), (1200.0, 0.15), None])
    tracker = BudgetTracker(
        budgets_of(config("--max-energy-j", "1000", "--max-co2-g", "1")), prior=Spend(energy_j=100.0), live_gpu=lambda: next(readings)
    )
    assert tracker.exhausted() is None  # 500 J
    hit = tracker.exhausted()  # 1,300 J
    assert hit is not None and hit.budget.kind.kind == "energy_j" and hit.used == 1300.0
    assert tracker.exhausted() is not None  # the exporter did not answer: the last reading stands


def test_budgets_that_cannot_be_enforced_are_refused() -> None:
    budgets = budgets_of(config("--max-energy-j", "10"))
    with pytest.raises(BudgetError, match=r"--max-energy-j needs GPU metrics for this run, and they are off \(API models"):
        check_enforceable(budgets, gpu_metrics=False, gpu_reason="API models don't use the local GPU", cost_priced=True, model="m")
    check_enforceable(budgets, gpu_metrics=True, gpu_reason="", cost_priced=False, model="m")
    with pytest.raises(BudgetError, match="litellm has no price for openai/fake"):
        check_enforceable(
            budgets_of(config("--max-cost-usd", "1")), gpu_metrics=False, gpu_reason="", cost_priced=False, model="openai/fake"
        )
