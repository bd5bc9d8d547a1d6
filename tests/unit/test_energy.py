"""energy.py: counter deltas, resets, trapezoid integration, CO2/cost, method selection, stats."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smoltrace_gpu_exporter.energy import (
    DEFAULT_CARBON_INTENSITY_G_PER_KWH,
    JOULES_PER_KWH,
    METHOD_COUNTER,
    METHOD_INTEGRATED,
    METHOD_MIXED,
    METHOD_NONE,
    EnergyMeter,
    RunningStats,
    co2_grams,
    combine_methods,
    power_cost_usd,
)

joules = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)
increments = st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), min_size=1, max_size=50)
watts = st.floats(min_value=0.0, max_value=2000.0, allow_nan=False)
intensities = st.floats(min_value=0.0, max_value=5000.0, allow_nan=False)
pues = st.floats(min_value=1.0, max_value=10.0, allow_nan=False)
prices = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


@st.composite
def sample_times(draw: st.DrawFn, min_size: int = 2) -> list[float]:
    """Strictly increasing monotonic times (s)."""
    start = draw(st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
    steps = draw(st.lists(st.floats(min_value=1e-3, max_value=100.0, allow_nan=False), min_size=min_size - 1, max_size=40))
    times = [start]
    for step in steps:
        times.append(times[-1] + step)
    return times


# -- counter --------------------------------------------------------------------------------------
@given(start=joules, steps=increments)
def test_monotonic_counter_deltas_sum_to_last_minus_first(start: float, steps: list[float]) -> None:
    values = [start]
    for step in steps:
        values.append(values[-1] + step)
    meter = EnergyMeter()
    for i, value in enumerate(values):
        meter.add(float(i), None, value)
    assert meter.counter_joules == pytest.approx(values[-1] - values[0], rel=1e-9, abs=1e-6)
    assert meter.counter_first == values[0]
    assert meter.counter_last == values[-1]
    assert meter.counter_reset is False
    assert meter.method == METHOD_COUNTER
    assert meter.joules == meter.counter_joules


@given(data=st.data())
def test_counter_reset_adds_the_new_value_and_is_flagged(data: st.DataObject) -> None:
    """Segments of a monotonic counter separated by resets: each segment's growth plus each restart value."""
    segments = data.draw(st.integers(min_value=2, max_value=5))
    values: list[float] = []
    expected = 0.0
    for i in range(segments):
        if i == 0:
            first = data.draw(st.floats(min_value=1.0, max_value=1e9, allow_nan=False))
        else:  # the counter goes backwards: restarts somewhere below its last value
            first = data.draw(st.floats(min_value=0.0, max_value=values[-1], exclude_max=True, allow_nan=False))
            expected += first
        segment = [first]
        for step in [*data.draw(increments), 1.0]:  # ends above 0, so the next reset can go below it
            segment.append(segment[-1] + step)
        expected += segment[-1] - segment[0]
        values.extend(segment)
    meter = EnergyMeter()
    for i, value in enumerate(values):
        meter.add(float(i), None, value)
    assert meter.counter_reset is True
    assert meter.counter_joules == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert meter.joules == meter.counter_joules


def test_counter_reset_example() -> None:
    meter = EnergyMeter()
    for t, value in enumerate([100.0, 150.0, 20.0, 50.0]):
        meter.add(float(t), None, value)
    assert meter.counter_joules == 50.0 + 20.0 + 30.0
    assert meter.counter_reset is True


def test_equal_counter_reads_are_not_a_reset() -> None:
    meter = EnergyMeter()
    for t in range(3):
        meter.add(float(t), None, 42.0)
    assert meter.counter_joules == 0.0
    assert meter.counter_reset is False


# -- integration ----------------------------------------------------------------------------------
@given(times=sample_times(), power=watts)
def test_trapezoid_is_exact_for_constant_power(times: list[float], power: float) -> None:
    meter = EnergyMeter()
    for t in times:
        meter.add(t, power, None)
    assert meter.integrated_joules == pytest.approx(power * (times[-1] - times[0]), rel=1e-9, abs=1e-6)
    assert meter.method == METHOD_INTEGRATED
    assert meter.joules == meter.integrated_joules


@given(
    times=sample_times(),
    base=st.floats(min_value=0.0, max_value=500.0, allow_nan=False),
    slope=st.floats(min_value=-1.0, max_value=1.0, allow_nan=False),
)
def test_trapezoid_is_exact_for_linear_power(times: list[float], base: float, slope: float) -> None:
    t0 = times[0]

    def power(t: float) -> float:
        return base + slope * (t - t0)

    meter = EnergyMeter()
    for t in times:
        meter.add(t, power(t), None)
    span = times[-1] - t0
    exact = base * span + slope * span * span / 2.0
    assert meter.integrated_joules == pytest.approx(exact, rel=1e-7, abs=1e-4)


def test_trapezoid_example_and_zero_dt_is_ignored() -> None:
    meter = EnergyMeter()
    meter.add(0.0, 100.0, None)
    meter.add(2.0, 200.0, None)  # (100 + 200) / 2 * 2 = 300
    meter.add(2.0, 900.0, None)  # same instant: no area
    meter.add(3.0, 100.0, None)  # (900 + 100) / 2 * 1 = 500
    assert meter.integrated_joules == 800.0


def test_missing_power_samples_are_bridged() -> None:
    meter = EnergyMeter()
    meter.add(0.0, 100.0, None)
    meter.add(1.0, None, None)
    meter.add(2.0, 100.0, None)
    assert meter.integrated_joules == 200.0


# -- CO2 and cost ---------------------------------------------------------------------------------
def test_co2_and_cost_formulas() -> None:
    assert co2_grams(JOULES_PER_KWH, 475.0, 1.0) == 475.0
    assert co2_grams(JOULES_PER_KWH / 2, 400.0, 1.5) == pytest.approx(300.0)
    assert power_cost_usd(3 * JOULES_PER_KWH, 0.12) == pytest.approx(0.36)
    assert DEFAULT_CARBON_INTENSITY_G_PER_KWH == 475.0


@given(a=joules, b=joules, ci=intensities, pue=pues)
def test_co2_is_linear_and_non_negative(a: float, b: float, ci: float, pue: float) -> None:
    assert co2_grams(a, ci, pue) == pytest.approx(a / 3.6e6 * ci * pue, rel=1e-12, abs=1e-12)
    assert co2_grams(a, ci, pue) >= 0.0
    assert co2_grams(a + b, ci, pue) == pytest.approx(co2_grams(a, ci, pue) + co2_grams(b, ci, pue), rel=1e-9, abs=1e-9)
    assert co2_grams(2 * a, ci, pue) == pytest.approx(2 * co2_grams(a, ci, pue), rel=1e-12, abs=1e-12)
    assert co2_grams(0.0, ci, pue) == 0.0


@given(a=joules, b=joules, price=prices)
def test_cost_is_linear_and_non_negative(a: float, b: float, price: float) -> None:
    assert power_cost_usd(a, price) == pytest.approx(a / 3.6e6 * price, rel=1e-12, abs=1e-12)
    assert power_cost_usd(a, price) >= 0.0
    assert power_cost_usd(a + b, price) == pytest.approx(power_cost_usd(a, price) + power_cost_usd(b, price), rel=1e-9, abs=1e-9)


# -- method selection -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("samples", "method", "expected_joules"),
    [
        # (t, power, counter)
        pytest.param([(0, 100.0, 10.0), (1, 100.0, 60.0)], METHOD_COUNTER, 50.0, id="counter-at-both-ends"),
        pytest.param([(0, None, 10.0), (1, None, 60.0)], METHOD_COUNTER, 50.0, id="counter-without-power"),
        pytest.param([(0, 100.0, 10.0), (1, 100.0, None), (2, 100.0, 90.0)], METHOD_COUNTER, 80.0, id="counter-gap-in-middle"),
        pytest.param([(0, 100.0, None), (1, 100.0, 60.0), (2, 100.0, 70.0)], METHOD_INTEGRATED, 200.0, id="no-counter-at-start"),
        pytest.param([(0, 100.0, 10.0), (1, 100.0, 60.0), (2, 100.0, None)], METHOD_INTEGRATED, 200.0, id="no-counter-at-end"),
        pytest.param([(0, 100.0, None), (2, 300.0, None)], METHOD_INTEGRATED, 400.0, id="power-only"),
        pytest.param([(0, None, None), (1, None, None)], METHOD_NONE, 0.0, id="nothing"),
        pytest.param([], METHOD_NONE, 0.0, id="no-samples"),
    ],
)
def test_method_selection(samples: list[tuple[float, float | None, float | None]], method: str, expected_joules: float) -> None:
    meter = EnergyMeter()
    for t, power, counter in samples:
        meter.add(float(t), power, counter)
    assert meter.method == method
    assert meter.joules == pytest.approx(expected_joules)


@pytest.mark.parametrize(
    ("methods", "combined"),
    [
        ([], METHOD_NONE),
        ([METHOD_NONE, METHOD_NONE], METHOD_NONE),
        ([METHOD_COUNTER, METHOD_COUNTER], METHOD_COUNTER),
        ([METHOD_COUNTER, METHOD_NONE], METHOD_COUNTER),
        ([METHOD_INTEGRATED], METHOD_INTEGRATED),
        ([METHOD_COUNTER, METHOD_INTEGRATED], METHOD_MIXED),
    ],
)
def test_combine_methods(methods: list[str], combined: str) -> None:
    assert combine_methods(methods) == combined


# -- running stats --------------------------------------------------------------------------------
@given(st.lists(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), min_size=1, max_size=100))
def test_running_stats(values: list[float]) -> None:
    stats = RunningStats()
    for v in values:
        stats.add(v)
    assert stats.count == len(values)
    assert stats.minimum == min(values)
    assert stats.maximum == max(values)
    assert stats.average == pytest.approx(statistics.fmean(values), rel=1e-9, abs=1e-6)
    assert stats.minimum <= stats.average + 1e-6 and stats.average <= stats.maximum + 1e-6


def test_empty_running_stats() -> None:
    stats = RunningStats()
    assert stats.count == 0
    assert stats.average == 0.0
    assert stats.minimum == math.inf and stats.maximum == -math.inf
