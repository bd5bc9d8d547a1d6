"""Each task's share of the run's GPU energy (`apportion_energy`): properties over random energy
series and task windows, and the cases the runner meets (sequential tasks, parallel tasks, gaps)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smoltrace.collector.documents import apportion_energy, energy_at

REL = 1e-9


@st.composite
def energy_series(draw: st.DrawFn) -> list[tuple[int, float]]:
    """A cumulative energy series: strictly increasing times, non-decreasing joules."""
    n = draw(st.integers(1, 12))
    gaps = draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n))
    steps = draw(st.lists(st.floats(0, 500, allow_nan=False), min_size=n, max_size=n))
    start = draw(st.integers(0, 10_000))
    t, e, out = start, draw(st.floats(0, 1000, allow_nan=False)), []
    for gap, step in zip(gaps, steps, strict=True):
        t += gap
        e += step
        out.append((t, e))
    return out


@st.composite
def windows_for(draw: st.DrawFn, series: list[tuple[int, float]]) -> dict[str, tuple[int, int]]:
    """Task windows anywhere around the series (inside, overlapping, before, after, zero length)."""
    lo, hi = series[0][0] - 5_000, series[-1][0] + 5_000
    count = draw(st.integers(1, 6))
    out = {}
    for i in range(count):
        a = draw(st.integers(lo, hi))
        b = draw(st.integers(a, hi))
        out[f"task{i}"] = (a, b)
    return out


@st.composite
def series_and_windows(draw: st.DrawFn) -> tuple[list[tuple[int, float]], dict[str, tuple[int, int]], float | None]:
    series = draw(energy_series())
    windows = draw(windows_for(series))
    measured = series[-1][1] - series[0][1]
    total = draw(st.one_of(st.none(), st.floats(0, 2 * measured + 1, allow_nan=False)))
    return series, windows, total


@settings(max_examples=300, deadline=None)
@given(series_and_windows())
def test_shares_sum_to_the_total_and_are_never_negative(case) -> None:
    series, windows, total = case
    shares = apportion_energy(series, windows, total)
    expected = series[-1][1] - series[0][1] if total is None else total
    assert set(shares) == set(windows)
    assert sum(shares.values()) == pytest.approx(expected, rel=REL, abs=1e-9)
    assert all(v >= 0 for v in shares.values()), shares


@settings(max_examples=200, deadline=None)
@given(energy_series(), st.integers(0, 5_000), st.integers(0, 5_000), st.booleans())
def test_one_task_covering_the_run_gets_all_of_it(series, before: int, after: int, given_total: bool) -> None:
    window = {"only": (series[0][0] - before, series[-1][0] + after)}
    measured = series[-1][1] - series[0][1]
    shares = apportion_energy(series, window, measured if given_total else None)
    assert shares["only"] == pytest.approx(measured, rel=REL, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(energy_series(), st.floats(0, 1e6, allow_nan=False))
def test_one_task_gets_the_summary_total_when_it_differs_from_the_series(series, total: float) -> None:
    """The exporter's summary (exact counter deltas) wins over the pushed samples."""
    shares = apportion_energy(series, {"only": (series[0][0], series[-1][0])}, total)
    assert shares["only"] == pytest.approx(total, rel=REL, abs=1e-9)


def test_sequential_tasks_get_what_was_used_while_they_ran() -> None:
    series = [(0, 0.0), (10, 100.0), (20, 400.0)]  # 10 J/unit, then 30 J/unit
    shares = apportion_energy(series, {"a": (0, 10), "b": (10, 20)})
    assert shares == {"a": pytest.approx(100.0), "b": pytest.approx(300.0)}


def test_overlapping_tasks_share_equally_what_they_used_together() -> None:
    series = [(0, 0.0), (30, 300.0)]  # 10 J per unit of time
    shares = apportion_energy(series, {"a": (0, 20), "b": (10, 30)})
    # a alone 0-10: 100; both 10-20: 100 split; b alone 20-30: 100
    assert shares == {"a": pytest.approx(150.0), "b": pytest.approx(150.0)}


def test_idle_energy_is_spread_in_proportion_to_each_tasks_own_energy() -> None:
    series = [(0, 0.0), (10, 100.0), (20, 100.0 + 10.0), (30, 100.0 + 10.0 + 90.0)]
    # a: 0-10 (100 J), gap 10-20 (10 J), b: 20-30 (90 J)
    shares = apportion_energy(series, {"a": (0, 10), "b": (20, 30)})
    assert sum(shares.values()) == pytest.approx(200.0)
    assert shares["a"] == pytest.approx(100.0 + 10.0 * 100 / 190)
    assert shares["b"] == pytest.approx(90.0 + 10.0 * 90 / 190)


def test_no_energy_inside_any_window_splits_by_duration() -> None:
    series = [(0, 0.0), (10, 50.0), (100, 50.0)]  # everything before the tasks
    shares = apportion_energy(series, {"a": (20, 30), "b": (40, 70)})
    assert shares == {"a": pytest.approx(12.5), "b": pytest.approx(37.5)}


def test_no_energy_inside_windows_with_an_instant_task_still_sums_to_the_total() -> None:
    series = [(0, 0.0), (10, 50.0), (100, 50.0)]
    shares = apportion_energy(series, {"a": (20, 30), "instant": (40, 40)})
    assert sum(shares.values()) == pytest.approx(50.0)
    assert all(v >= 0 for v in shares.values())


def test_nothing_measured_gives_zeros() -> None:
    assert apportion_energy([], {"a": (0, 1)}) == {"a": 0.0}
    assert apportion_energy([(0, 1.0)], {}) == {}


def test_interpolation_is_monotone_between_samples() -> None:
    series = [(0, 0.0), (10, 5.0), (30, 5.0), (40, 25.0)]
    values = [energy_at(series, t) for t in range(-5, 50)]
    assert all(a <= b for a, b in itertools.pairwise(values))
