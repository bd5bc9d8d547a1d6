"""Shared fixtures for the GPU-exporter unit tests: a fake clock, a 2-GPU FakeNvml, sampler, registry."""

from __future__ import annotations

import pytest

from smoltrace_gpu_exporter.runs import RunRegistry
from smoltrace_gpu_exporter.sampler import Sampler
from tests.fakes.fake_nvml import FakeClock, FakeNvml


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def nvml(clock: FakeClock) -> FakeNvml:
    return FakeNvml(2, clock=clock)


@pytest.fixture
def sampler(nvml: FakeNvml, clock: FakeClock) -> Sampler:
    return Sampler(nvml, clock=clock)


@pytest.fixture
def registry(sampler: Sampler, clock: FakeClock) -> RunRegistry:
    reg = RunRegistry(sampler, clock=clock)
    return reg
