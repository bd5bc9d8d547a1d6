"""Write deploy/k8s/monitoring/prometheusrule.yaml from deploy/prometheus/rules.yml (the one copy of
the rules): `python scripts/gen_prometheusrule.py`. A test fails when the two differ."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
OUT = ROOT / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml"
HEADER = """\
# GENERATED from deploy/prometheus/rules.yml by scripts/gen_prometheusrule.py: edit that file, then
# rerun the script. The exporter's recording rules and alerts for the Prometheus Operator
# (monitoring.coreos.com CRDs): `kubectl apply -k deploy/k8s/monitoring`. Your Prometheus selects
# PrometheusRules by label (kube-prometheus-stack: `release: <helm release>`): add it below if needed.
"""


def render() -> str:
    groups = yaml.safe_load(RULES.read_text("utf-8"))["groups"]
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "smoltrace-gpu-exporter", "labels": {"app.kubernetes.io/name": "smoltrace"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


if __name__ == "__main__":
    OUT.write_text(render(), "utf-8")
    print(OUT)
