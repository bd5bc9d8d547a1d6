"""Budgets that stop a run: `--max-tokens`, `--max-cost-usd`, `--max-energy-j`, `--max-co2-g`.

The run's spend is everything its executions used, previous processes of a resumed run included:
tokens and model cost from the finished executions (the cost priced with litellm's map, as the
rows are), energy and CO2 from the GPU exporter's live reading of this process's run (GetRun)
plus what earlier processes recorded. After each finished execution the tracker compares the spend
with every budget; the first one reached stops dispatch (the executions already running finish,
so the spend may pass the limit by at most theirs), the run is written with metadata
`status: budget_exhausted` and `budget {kind, limit, used}`, and the process exits 5.

Energy and CO2 budgets need GPU metrics for the run (refused otherwise); a cost budget needs a
price for the model (refused for a model litellm cannot price, since its cost would read 0)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

EXIT_BUDGET = 5
STATUS = "budget_exhausted"


@dataclass(frozen=True, slots=True)
class BudgetKind:
    kind: str  # the key in metadata `budget.kind` and `spend`
    field: str  # EvalConfig field
    flag: str
    unit: str


KINDS = (
    BudgetKind("tokens", "max_tokens", "--max-tokens", "tokens"),
    BudgetKind("cost_usd", "max_cost_usd", "--max-cost-usd", "USD"),
    BudgetKind("energy_j", "max_energy_j", "--max-energy-j", "J"),
    BudgetKind("co2_g", "max_co2_g", "--max-co2-g", "gCO2e"),
)
GPU_KINDS = ("energy_j", "co2_g")


class BudgetError(ValueError):
    """A budget that cannot be enforced for this run: one line, exit 2."""


@dataclass(frozen=True, slots=True)
class Budget:
    kind: BudgetKind
    limit: float


def budgets_of(config: Any) -> list[Budget]:
    """The budgets set on an EvalConfig (or anything with the max_* fields)."""
    return [Budget(k, float(getattr(config, k.field))) for k in KINDS if getattr(config, k.field, None) is not None]


def check_enforceable(budgets: Sequence[Budget], *, gpu_metrics: bool, gpu_reason: str, cost_priced: bool, model: str) -> None:
    for b in budgets:
        if b.kind.kind in GPU_KINDS and not gpu_metrics:
            raise BudgetError(
                f"{b.kind.flag} needs GPU metrics for this run, and they are off ({gpu_reason}); "
                "use --enable-gpu-metrics (with a GPU exporter that sees a GPU) or drop the flag"
            )
        if b.kind.kind == "cost_usd" and not cost_priced:
            raise BudgetError(f"--max-cost-usd: litellm has no price for {model}, so its cost cannot be counted; drop the flag")


@dataclass
class Spend:
    tokens: float = 0.0
    cost_usd: float = 0.0
    energy_j: float = 0.0
    co2_g: float = 0.0

    def get(self, kind: str) -> float:
        return float(getattr(self, kind))

    def as_dict(self) -> dict[str, float]:
        return {
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 10),
            "energy_j": round(self.energy_j, 6),
            "co2_g": round(self.co2_g, 9),
        }


def prior_spend(rows: Sequence[Mapping[str, Any]], previous_metadata: Mapping[str, Any] | None) -> Spend:
    """What earlier processes of a resumed run spent: tokens and cost of its finished rows, energy
    and CO2 as its metadata recorded them (`spend`, else the GPU summary)."""
    spend = Spend()
    for r in rows:
        spend.tokens += float(r.get("total_tokens") or 0)
        spend.cost_usd += float(r.get("cost_usd") or 0.0)
    meta = previous_metadata or {}
    recorded = meta.get("spend") if isinstance(meta.get("spend"), Mapping) else None
    if recorded:
        spend.energy_j = float(recorded.get("energy_j") or 0.0)
        spend.co2_g = float(recorded.get("co2_g") or 0.0)
    else:
        summary = (meta.get("gpu_metrics") or {}).get("summary") if isinstance(meta.get("gpu_metrics"), Mapping) else None
        if isinstance(summary, Mapping):
            spend.energy_j = float(summary.get("energy_joules") or 0.0)
            spend.co2_g = float(summary.get("co2_grams") or 0.0)
    return spend


@dataclass(frozen=True, slots=True)
class Exhausted:
    budget: Budget
    used: float

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.budget.kind.kind, "flag": self.budget.kind.flag, "limit": self.budget.limit, "used": self.used}

    def describe(self) -> str:
        b = self.budget
        return f"budget reached: {b.kind.kind} {self.used:.6g} of {b.limit:.6g} {b.kind.unit} ({b.kind.flag})"


@dataclass
class BudgetTracker:
    """The run's spend against its budgets. `live_gpu` returns this process's (energy J, CO2 g)
    so far, or None when the exporter cannot say."""

    budgets: list[Budget]
    prior: Spend = field(default_factory=Spend)
    live_gpu: Callable[[], tuple[float, float] | None] | None = None
    tokens: float = 0.0
    cost_usd: float = 0.0
    hit: Exhausted | None = None  # the budget that stopped the run
    _gpu: tuple[float, float] = (0.0, 0.0)

    def add(self, row: Mapping[str, Any]) -> None:
        """A finished execution's row (tokens; `cost_usd` as priced for the row, None counts 0)."""
        self.tokens += float(row.get("total_tokens") or 0)
        self.cost_usd += float(row.get("cost_usd") or 0.0)

    def spend(self) -> Spend:
        if self.live_gpu is not None and any(b.kind.kind in GPU_KINDS for b in self.budgets):
            reading = self.live_gpu()
            if reading is not None:
                self._gpu = reading
        return Spend(
            tokens=self.prior.tokens + self.tokens,
            cost_usd=self.prior.cost_usd + self.cost_usd,
            energy_j=self.prior.energy_j + self._gpu[0],
            co2_g=self.prior.co2_g + self._gpu[1],
        )

    def exhausted(self) -> Exhausted | None:
        """The first budget the spend has reached, if any."""
        if not self.budgets:
            return None
        spend = self.spend()
        for b in self.budgets:
            used = spend.get(b.kind.kind)
            if used >= b.limit:
                return Exhausted(b, used)
        return None

    def final_spend(self, rows: Sequence[Mapping[str, Any]], gpu_summary: Mapping[str, Any] | None) -> Spend:
        """The run's spend once written: tokens and cost of all its rows; energy and CO2 of earlier
        processes plus this one's exporter summary (else its last live reading)."""
        spend = prior_spend(rows, None)
        energy, co2 = self._gpu
        if gpu_summary:
            energy = float(gpu_summary.get("energy_joules") or energy)
            co2 = float(gpu_summary.get("co2_grams") or co2)
        spend.energy_j = self.prior.energy_j + energy
        spend.co2_g = self.prior.co2_g + co2
        return spend

    def report(self, spend: Spend) -> dict[str, Any] | None:
        """metadata `budget`: the budget that stopped the run, with what the run spent of it in the end."""
        if self.hit is None:
            return None
        return {
            "kind": self.hit.budget.kind.kind,
            "flag": self.hit.budget.kind.flag,
            "limit": self.hit.budget.limit,
            "used": spend.get(self.hit.budget.kind.kind),
        }
