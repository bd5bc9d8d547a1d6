"""Dashboards and alerts as dcgm-exporter users expect them: deploy/prometheus/rules.yml (recording
rules for energy and CO2 rates; alerts: exporter down, NVML down, a GPU lost, OTLP drops, a lease
expired) and deploy/grafana/ (the GPU dashboard), checked against a real /metrics scrape of a
simulated exporter with a run sampling: every query is valid PromQL (promtool) and names only
metrics the exporter exports; `promtool test rules` fires each alert on series taken from the scrape."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from smoltrace_gpu_exporter.app import ExporterApp
from tests.integration.conftest import Series, connect, http_get, scrape, sim_config, start_request, wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "smoltrace-gpu.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "smoltrace.yml"
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUSRULE = ROOT / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml"
JOB, INSTANCE = "smoltrace-gpu-exporter", "gpu-exporter:9402"
ALERTS = ("SmoltraceGpuExporterDown", "SmoltraceNvmlDown", "SmoltraceGpuLost", "SmoltraceOtlpSamplesDropped", "SmoltraceRunLeaseExpired")
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")


@pytest.fixture(scope="module")
def exported() -> Iterator[set[str]]:
    """Every metric name the exporter's /metrics declares (a counter with no series yet too)."""
    app = ExporterApp(sim_config())
    app.start()
    try:
        wait_until(lambda: app.sampler.health.sweeps >= 1, timeout=5.0, what="a sweep")
        _, _, body = http_get(f"http://{app.addresses.metrics}/metrics")
    finally:
        app.stop(deadline_s=2.0)
    names = set()
    for family in text_string_to_metric_families(body):
        names.add(family.name)
        names |= {f"{family.name}_total"} if family.type == "counter" else set()
        names |= {sample.name for sample in family.samples}
    yield names


@pytest.fixture(scope="module")
def scraped() -> Iterator[list[Series]]:
    """/metrics of a simulated 2-GPU exporter while a run samples."""
    app = ExporterApp(sim_config())
    app.start()
    client = connect(app.addresses.grpc)
    try:
        client.stub.StartSampling(start_request("run-monitoring"), timeout=5)
        wait_until(lambda: app.sampler.health.sweeps >= 3, timeout=5.0, what="three sweeps")
        time.sleep(0.2)
        yield scrape(app.addresses.metrics)
    finally:
        client.close()
        app.stop(deadline_s=2.0)


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text("utf-8"))["groups"]


def rules() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"]]


def panel_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text("utf-8"))
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric (and recording-rule) names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"label_values\(([^,]+),[^)]*\)", r"\1", expr)  # Grafana's variable query
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        after = expr[match.end() :].lstrip()
        if match.group() in _KEYWORDS or after.startswith("("):
            continue
        names.add(match.group())
    return names


def grafana_to_promql(expr: str) -> str:
    """A panel query as Prometheus gets it (Grafana's variables substituted; its label_values()
    variable query is the series selector Grafana sends)."""
    expr = re.sub(r"^label_values\(([^,]+),[^)]*\)$", r"\1", expr.strip())
    return expr.replace("$instance", ".*").replace("$__range", "1h")


# -- names ----------------------------------------------------------------------------------------
def test_every_panel_query_and_rule_names_only_exported_metrics(exported: set[str]) -> None:
    exported = exported | {"up"}  # `up` is Prometheus' own per target
    recorded = {r["record"] for r in rules() if "record" in r}
    for expr in [r["expr"] for r in rules()]:
        assert metric_names(expr) <= exported, (expr, metric_names(expr) - exported)
    queries = panel_queries()
    assert len(queries) >= 12
    used: set[str] = set()
    for expr in queries:
        names = metric_names(expr)
        assert names, expr
        assert names <= exported | recorded, (expr, names - exported - recorded)
        used |= names
    # the dashboard shows what the issue lists: utilisation, memory, power, energy, CO2, drops, NVML health
    for wanted in (
        "smoltrace_gpu_utilization_ratio",
        "smoltrace_gpu_memory_used_bytes",
        "smoltrace_gpu_power_watts",
        "smoltrace_gpu_energy_joules_total",
        "smoltrace_gpu_co2_emissions_grams_total",
        "smoltrace_gpu_exporter_otlp_dropped_samples_total",
        "smoltrace_gpu_exporter_nvml_up",
        "smoltrace_gpu_up",
        "smoltrace_gpu_exporter_active_runs",
    ):
        assert wanted in used, wanted


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (instance) (increase(smoltrace_gpu_energy_joules_total{instance=~"a|b"}[$__range]))') == {
        "smoltrace_gpu_energy_joules_total"
    }
    assert metric_names('up{job="x"} == 0') == {"up"}
    assert metric_names("instance:smoltrace_gpu_co2_grams:rate5m * 3600") == {"instance:smoltrace_gpu_co2_grams:rate5m"}


# -- promtool -------------------------------------------------------------------------------------
@needs_promtool
def test_rules_pass_promtool_check() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@needs_promtool
def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    group = {
        "name": "panels",
        "rules": [{"record": f"panel:query_{i}", "expr": grafana_to_promql(e)} for i, e in enumerate(panel_queries())],
    }
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}), "utf-8")
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _selector(s: Series, **extra: str) -> str:
    labels = {**s.labels, "instance": INSTANCE, "job": JOB, **extra}
    return s.name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _values(start: float, *then: float, minutes: int = 15) -> str:
    points = [start, *then]
    points += [points[-1]] * (minutes - len(points))
    return " ".join(repr(float(v)) for v in points)


@needs_promtool
def test_alerts_fire_on_series_from_a_real_scrape(scraped: list[Series], tmp_path: Path) -> None:
    """Every scraped series becomes promtool input (its scraped value, then held, or the fault);
    counters grow as they do. Healthy: no alert. Faults: each alert fires with the scrape's labels."""
    healthy: list[dict[str, str]] = [{"series": f'up{{instance="{INSTANCE}",job="{JOB}"}}', "values": _values(1)}]
    faulty: list[dict[str, str]] = [{"series": f'up{{instance="{INSTANCE}",job="{JOB}"}}', "values": _values(1, 1, 0)}]
    lost_gpu = next(s for s in scraped if s.name == "smoltrace_gpu_up" and s.labels["gpu"] == "1")
    for s in scraped:
        held = _values(s.value)
        fault = held
        if s.name == "smoltrace_gpu_exporter_nvml_up" or s is lost_gpu:
            fault = _values(1, 1, 0)
        elif s.name == "smoltrace_gpu_exporter_otlp_dropped_samples_total":
            fault = _values(s.value, s.value, s.value + 50, s.value + 120)
        elif s.name == "smoltrace_gpu_exporter_runs_expired_total":
            fault = _values(s.value, s.value, s.value + 1)
        elif s.name == "smoltrace_gpu_energy_joules_total":  # 6 kJ a minute: 100 W (exact in binary)
            held = fault = " ".join(repr(float(round(s.value) + 6000 * i)) for i in range(15))
        elif s.name.endswith("_total"):  # counters keep growing at their scraped value per minute
            held = fault = " ".join(repr(s.value * (1 + i)) for i in range(15))
        healthy.append({"series": _selector(s), "values": held})
        faulty.append({"series": _selector(s), "values": fault})
    gpu_labels = {k: v for k, v in lost_gpu.labels.items()} | {"instance": INSTANCE, "job": JOB}
    base = {"instance": INSTANCE, "job": JOB}
    expected = {
        "SmoltraceGpuExporterDown": [{"exp_labels": {**base, "severity": "critical"}}],
        "SmoltraceNvmlDown": [{"exp_labels": {**base, "severity": "critical"}}],
        "SmoltraceGpuLost": [{"exp_labels": {**gpu_labels, "severity": "critical"}}],
        "SmoltraceOtlpSamplesDropped": [{"exp_labels": {**base, "severity": "warning"}}],
        "SmoltraceRunLeaseExpired": [{"exp_labels": {**base, "severity": "warning"}}],
    }
    energy = next(s for s in scraped if s.name == "smoltrace_gpu_energy_joules_total" and s.labels["gpu"] == "0")
    energy_labels = {**energy.labels, **base}
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": healthy,
                "alert_rule_test": [{"eval_time": "10m", "alertname": name, "exp_alerts": []} for name in ALERTS],
                # the energy counter grows 6000 J a minute: the recorded rate is the mean power, 100 W
                "promql_expr_test": [
                    {
                        "expr": f'smoltrace:gpu_energy_joules:rate5m{{gpu="0",instance="{INSTANCE}"}}',
                        "eval_time": "10m",
                        "exp_samples": [{"labels": _selector_labels("smoltrace:gpu_energy_joules:rate5m", energy_labels), "value": 100.0}],
                    }
                ],
            },
            {
                "interval": "1m",
                "input_series": faulty,
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": name, "exp_alerts": [_annotated(name, e) for e in exp]}
                    for name, exp in expected.items()
                ],
            },
        ],
    }
    path = tmp_path / "rules_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False, width=1000), "utf-8")
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _annotated(alert: str, expected: dict[str, Any]) -> dict[str, Any]:
    """The expected alert with its annotations as Prometheus renders them for these labels."""
    (rule,) = [r for r in rules() if r.get("alert") == alert]
    labels = expected["exp_labels"]
    render = lambda text: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)  # noqa: E731
    return {**expected, "exp_annotations": {k: render(v) for k, v in rule["annotations"].items()}}


def _selector_labels(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


# -- where they are used --------------------------------------------------------------------------
def test_the_prometheusrule_carries_exactly_the_rules() -> None:
    from scripts.gen_prometheusrule import render

    assert PROMETHEUSRULE.read_text("utf-8") == render(), "run scripts/gen_prometheusrule.py"
    doc = yaml.safe_load(PROMETHEUSRULE.read_text("utf-8"))
    assert doc["kind"] == "PrometheusRule" and doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["spec"]["groups"] == rule_groups()
    kustomization = yaml.safe_load((PROMETHEUSRULE.parent / "kustomization.yaml").read_text("utf-8"))
    assert kustomization["resources"] == ["prometheusrule.yaml"]


def test_the_compose_monitoring_profile_provisions_rules_and_dashboard() -> None:
    services = yaml.safe_load(COMPOSE.read_text("utf-8"))["services"]
    prom, grafana = services["prometheus"], services["grafana"]
    assert prom["profiles"] == grafana["profiles"] == ["monitoring"]
    assert "./deploy/prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in prom["volumes"]
    assert "/etc/prometheus/rules.yml" in yaml.safe_load(PROMETHEUS.read_text("utf-8"))["rule_files"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"]), grafana["image"]
    assert all(p.startswith("127.0.0.1:") for p in grafana["ports"])
    (source,) = yaml.safe_load(DATASOURCES.read_text("utf-8"))["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    dash = json.loads(DASHBOARD.read_text("utf-8"))
    uids = {p["datasource"]["uid"] for p in dash["panels"] if "datasource" in p}
    assert uids == {source["uid"]}
    (provider,) = yaml.safe_load(DASHBOARD_PROVIDERS.read_text("utf-8"))["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
