"""The leaderboard's GPU columns: one documented rule each over the run's GPUs (per-GPU averages
and maxima; totals only for energy, CO2 and cost), stated in the leaderboard dataset card."""

from __future__ import annotations

from datetime import UTC, datetime

from smoltrace.cards import DESCRIPTIONS
from smoltrace.outputs import GPU_COLUMN_RULES, gpu_columns, leaderboard_row
from smoltrace.records import GpuSummary, ResultRow

MIB = 1024 * 1024


def stats(avg: float, mx: float, count: int = 10) -> dict[str, float]:
    return {"avg": avg, "min": 0.0, "max": mx, "count": count}


# Two GPUs: a busy one and an idle one. The exporter's run-level stats combine them per sweep in
# four different ways (utilisation averaged, memory and power summed, temperature the hottest).
SUMMARY = {
    "gpu_available": True,
    "energy_joules": 5000.0,
    "co2_grams": 0.66,
    "power_cost_usd": 0.0002,
    "utilization_percent": stats(50.0, 60.0),
    "memory_used_bytes": stats(42_000 * MIB, 44_000 * MIB),
    "temperature_celsius": stats(70.0, 75.0),
    "power_watts": stats(500.0, 760.0),
    "devices": [
        {
            "uuid": "GPU-a",
            "utilization_percent": stats(90.0, 100.0),
            "memory_used_bytes": stats(40_000 * MIB, 42_000 * MIB),
            "temperature_celsius": stats(70.0, 75.0),
            "power_watts": stats(420.0, 700.0),
        },
        {
            "uuid": "GPU-b",
            "utilization_percent": stats(10.0, 20.0),
            "memory_used_bytes": stats(2_000 * MIB, 2_000 * MIB),
            "temperature_celsius": stats(40.0, 41.0),
            "power_watts": stats(80.0, 90.0),
        },
    ],
}


def test_per_gpu_averages_and_maxima() -> None:
    assert gpu_columns(SUMMARY) == {
        "gpu_utilization_avg": 50.0,
        "gpu_utilization_max": 100.0,
        "gpu_memory_avg_mib": 21_000.0,  # per GPU, not the 42 000 MiB both held together
        "gpu_memory_max_mib": 42_000.0,  # the most one GPU held
        "gpu_temperature_avg": 55.0,  # not the hottest GPU's average
        "gpu_temperature_max": 75.0,
        "gpu_power_avg_w": 250.0,  # per GPU, not the 500 W sum
    }


def test_the_leaderboard_row_uses_the_rule_and_totals_only_energy_co2_and_cost() -> None:
    result = {"model": "m", "evaluation_date": "x", "task_id": "t", "test_case_uid": "tool:t", "agent_type": "tool", "prompt": "p"}
    result |= {"run_id": "r", "success": True, "duration_ms": 1.0, "total_tokens": 1, "cost_usd": 0.0}
    board = leaderboard_row(
        [ResultRow.model_validate(result)],
        run_id="r",
        model="m",
        agent_type="tool",
        provider="transformers",
        dataset_used="d",
        submitted_by="local",
        grouping={},
        datasets={},
        gpu_summary=GpuSummary.model_validate(SUMMARY),
        timestamp=datetime(2026, 12, 4, tzinfo=UTC),
    )
    row = board.to_json()
    assert row["gpu_power_avg_w"] == 250.0 and row["gpu_memory_max_mib"] == 42_000.0 and row["gpu_temperature_avg"] == 55.0
    assert row["energy_j"] == 5000.0


def test_missing_readings_and_no_devices() -> None:
    assert set(gpu_columns(None).values()) == {None}
    only_run_level = {k: v for k, v in SUMMARY.items() if k != "devices"}
    assert gpu_columns(only_run_level)["gpu_power_avg_w"] == 500.0  # nothing per GPU: the run's own figure
    no_power = {"devices": [{"uuid": "GPU-a", "utilization_percent": stats(5.0, 9.0)}]}
    assert gpu_columns(no_power)["gpu_power_avg_w"] is None and gpu_columns(no_power)["gpu_utilization_avg"] == 5.0


def test_every_rule_is_stated_in_the_dataset_card() -> None:
    assert set(GPU_COLUMN_RULES) >= set(gpu_columns(SUMMARY))
    for column, rule in GPU_COLUMN_RULES.items():
        assert f"`{column}` {rule}" in DESCRIPTIONS["leaderboard"]


def test_a_mig_instance_inside_a_gpu_the_run_also_samples_is_not_a_gpu_of_its_own() -> None:
    parent = {"uuid": "GPU-p", "memory_used_bytes": stats(30_000 * MIB, 32_000 * MIB), "power_watts": stats(400.0, 500.0)}
    inside = {
        "uuid": "MIG-p1",
        "is_mig": True,
        "parent_uuid": "GPU-p",
        "split_method": "in_parent",
        "memory_used_bytes": stats(2_000 * MIB, 3_000 * MIB),
        "power_watts": stats(400.0, 500.0),
    }
    cols = gpu_columns({"gpu_available": True, "devices": [parent, inside]})
    assert cols["gpu_memory_avg_mib"] == 30_000.0  # not the mean of the GPU and a slice of it
    alone = gpu_columns({"gpu_available": True, "devices": [{**inside, "split_method": "exclusive"}]})
    assert alone["gpu_memory_avg_mib"] == 2_000.0 and alone["gpu_power_avg_w"] == 400.0  # the instance's memory, its GPU's power
