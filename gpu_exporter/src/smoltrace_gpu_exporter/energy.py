"""Energy, CO2 and cost arithmetic. Pure functions and small accumulators, no I/O.

Energy of a device over a window comes from the NVML total-energy counter (mJ since the driver
loaded, Volta and newer): the sum of the deltas between consecutive reads, the first and last
being boundary reads at the window's start and stop. A counter that goes backwards was reset
(driver reload): the energy after the reset is its new value, added on, and the reset is flagged.
Where the counter is not readable at both boundaries, energy is the trapezoid integral of power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from smoltrace_proto.summary import METHOD_COUNTER, METHOD_INTEGRATED, METHOD_MIXED, METHOD_NONE

JOULES_PER_KWH = 3_600_000.0
DEFAULT_CARBON_INTENSITY_G_PER_KWH = 475.0
DEFAULT_PUE = 1.0
DEFAULT_POWER_COST_USD_PER_KWH = 0.12


def co2_grams(energy_joules: float, carbon_intensity_g_per_kwh: float, pue: float) -> float:
    """gCO2e = kWh x grid carbon intensity (g/kWh) x PUE."""
    return energy_joules / JOULES_PER_KWH * carbon_intensity_g_per_kwh * pue


def power_cost_usd(energy_joules: float, usd_per_kwh: float) -> float:
    """USD = kWh x price. (PUE is not applied: the price is per kWh drawn by the GPU.)"""
    return energy_joules / JOULES_PER_KWH * usd_per_kwh


def combine_methods(methods: list[str]) -> str:
    """The run-level method from its devices' methods."""
    used = {m for m in methods if m != METHOD_NONE}
    if not used:
        return METHOD_NONE
    return used.pop() if len(used) == 1 else METHOD_MIXED


@dataclass(slots=True)
class RunningStats:
    """avg/min/max of a reading over a window, in O(1) memory."""

    count: int = 0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value

    @property
    def average(self) -> float:
        return self.total / self.count if self.count else 0.0


@dataclass(slots=True)
class EnergyMeter:
    """Energy of one device over a window, from the counter and from integrated power at once."""

    counter_first: float | None = None  # counter value at the first read, J
    counter_last: float | None = None
    counter_joules: float = 0.0
    counter_reset: bool = False
    counter_at_start: bool | None = None  # was the counter readable at the first sample?
    counter_at_last: bool = False  # ... and at the latest one?
    integrated_joules: float = 0.0
    since_counter_joules: float = 0.0  # integrated (and shared) energy since the last counter read
    _last_power: float | None = None
    _last_power_t: float | None = None
    _samples: int = field(default=0)

    def add(
        self, t_seconds: float, power_watts: float | None, counter_joules: float | None, share: float = 1.0, counter_read: bool = True
    ) -> None:
        """One sample: monotonic time (s), power (W) and the energy counter (J), either may be None.

        `share` is the fraction of the device's energy since the previous sample charged to this
        meter (1/k while k runs sample a shared device; a MIG instance's fraction of its parent).
        `counter_read` false: this sample did not try the counter (between the ~1 s counter reads)."""
        first = self._samples == 0
        self._samples += 1
        if first:
            self.counter_at_start = counter_joules is not None
        if counter_read:
            self.counter_at_last = counter_joules is not None
        if counter_joules is not None:
            self.since_counter_joules = 0.0
            if self.counter_last is None:
                self.counter_first = counter_joules
            elif counter_joules >= self.counter_last:
                self.counter_joules += (counter_joules - self.counter_last) * share
            else:  # the counter restarted (driver reload): it counts from 0 again
                self.counter_joules += counter_joules * share
                self.counter_reset = True
            self.counter_last = counter_joules
        if power_watts is not None:
            if self._last_power is not None and self._last_power_t is not None:
                dt = t_seconds - self._last_power_t
                if dt > 0:
                    step = (self._last_power + power_watts) / 2.0 * dt * share
                    self.integrated_joules += step
                    if counter_joules is None:
                        self.since_counter_joules += step
            self._last_power = power_watts
            self._last_power_t = t_seconds

    @property
    def uses_counter(self) -> bool:
        return bool(self.counter_at_start) and self.counter_at_last

    @property
    def method(self) -> str:
        if self.uses_counter:
            return METHOD_COUNTER
        if self._last_power is not None:
            return METHOD_INTEGRATED
        return METHOD_NONE

    @property
    def joules(self) -> float:
        """Counter deltas (plus integrated power since the last counter read, an estimate the next
        read replaces), else integrated power."""
        return self.counter_joules + self.since_counter_joules if self.uses_counter else self.integrated_joules
