"""--otlp-allow: where a run's otlp_endpoint may point (SSRF guard)."""

from __future__ import annotations

import re

import pytest

from smoltrace_gpu_exporter.config import ConfigError, load_config
from smoltrace_gpu_exporter.endpoints import AllowList, EndpointError, split_endpoint


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("127.0.0.1:4317", ("127.0.0.1", 4317)),
        ("http://LOCALHOST:4317", ("localhost", 4317)),
        ("https://collector.example:443/v1", ("collector.example", 443)),
        ("[::1]:4317", ("::1", 4317)),
        ("runner", ("runner", None)),
    ],
)
def test_split_endpoint(endpoint: str, expected: tuple[str, int | None]) -> None:
    assert split_endpoint(endpoint) == expected


@pytest.mark.parametrize("bad", ["ftp://x:1", "http://user:pw@host:1", "host:99999", "://"])
def test_split_endpoint_rejects(bad: str) -> None:
    with pytest.raises(EndpointError):
        split_endpoint(bad)


def test_default_allows_loopback_only() -> None:
    allow = AllowList()
    for ok in ("127.0.0.1:4317", "127.9.9.9:1", "localhost:4317", "[::1]:4317", "http://127.0.0.1:4317"):
        assert allow.allows(ok), ok
    for no in ("10.0.0.1:4317", "169.254.169.254:80", "metadata.google.internal:80", "example.com:4317", "[::ffff:10.0.0.1]:1"):
        assert not allow.allows(no), no
    with pytest.raises(EndpointError, match=re.escape("'169.254.169.254' is not allowed")):
        allow.check("http://169.254.169.254:80")


def test_entries_hosts_ports_networks_and_the_default_endpoint() -> None:
    allow = AllowList.parse("runner, collector:4317, 10.1.0.0/16", default_endpoint="otel.svc:4317")
    assert allow.allows("runner:4317") and allow.allows("runner:9999")
    assert allow.allows("collector:4317") and not allow.allows("collector:4318")
    assert allow.allows("10.1.2.3:4317") and not allow.allows("10.2.0.1:4317")
    assert allow.allows("otel.svc:1234")


def test_the_flag_and_its_variable() -> None:
    assert load_config(["--otlp-allow", "runner"], environ={}).allow_list().allows("runner:4317")
    assert load_config([], environ={"SMOLTRACE_GPU_EXPORTER_OTLP_ALLOW": "10.0.0.0/8"}).allow_list().allows("10.3.3.3:1")
    with pytest.raises(ConfigError, match="not a CIDR network"):
        load_config(["--otlp-allow", "10.0.0.0/99"], environ={})
