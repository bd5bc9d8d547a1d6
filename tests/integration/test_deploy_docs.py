"""The deployment docs say what the files do: README's Deployment section sits between the telemetry
section and Development, documents `docker compose up --exit-code-from runner`, every .env key,
every environment variable the code reads and every port; README and docs/DEPLOYMENT.md name only
files that exist, label selectors the pods carry and Jobs the manifests define."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "DEPLOYMENT.md"
K8S = ROOT / "deploy" / "k8s"
SECTION = "## Deployment: Docker Compose and Kubernetes"


def readme_sections() -> list[str]:
    return [line for line in README.read_text("utf-8").splitlines() if line.startswith("## ")]


def deployment_section() -> str:
    text = README.read_text("utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return text[start:end]


def table_cells(text: str, heading: str) -> str:
    """The text of the table(s) right after a ### heading."""
    start = text.index(heading)
    following = text[start + len(heading) :]
    stop = following.find("\n### ")
    return "\n".join(line for line in (following if stop < 0 else following[:stop]).splitlines() if line.startswith("|"))


def test_deployment_section_sits_after_telemetry_and_before_development() -> None:
    sections = readme_sections()
    at = sections.index(SECTION)
    assert sections[at - 1].startswith("## Traces, the collector and per-task energy"), sections
    assert sections[at + 1] == "## Development", sections


def test_readme_documents_compose_kubernetes_and_links_the_guide() -> None:
    section = deployment_section()
    for needle in (
        "docker compose up --exit-code-from runner",
        "--profile ollama",
        "--profile monitoring",
        "kubectl apply -k deploy/k8s",
        "kubectl logs -f job/smoltrace-eval -c runner",
        "deploy/k8s/podmonitor.yaml",
        "(docs/DEPLOYMENT.md)",
    ):
        assert needle in section, needle
    # how a pod's run is scoped to its own GPU is stated
    assert "the device plugin names the pod's GPU" in section and "measures that GPU only" in section
    assert "StartSampling.gpu_uuids" in GUIDE.read_text("utf-8")


def test_every_env_example_key_is_in_the_readme_table() -> None:
    keys = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text("utf-8"), flags=re.M))
    table = table_cells(deployment_section(), "### On a GPU host with Docker")
    missing = sorted(k for k in keys if f"`{k}`" not in table)
    assert not missing, f".env keys missing from README's .env table: {missing}"


def variables_read_by_the_code() -> set[str]:
    from smoltrace_gpu_exporter.config import _FLAGS, env_name

    names = {env_name(field) for _flag, field, _kind, _help in _FLAGS}
    for source in [*(ROOT / "runner" / "src").rglob("*.py"), *(ROOT / "gpu_exporter" / "src").rglob("*.py")]:
        names |= set(re.findall(r"[\"'](SMOLTRACE_[A-Z][A-Z0-9_]*[A-Z0-9])[\"']", source.read_text("utf-8")))
    names.discard("SMOLTRACE_GPU_EXPORTER_")  # the prefix itself
    return names | {
        "HF_TOKEN",
        "OLLAMA_HOST",
        "OPENAI_API_KEY",
        "OTEL_RESOURCE_ATTRIBUTES",
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
    }


def test_every_environment_variable_the_code_reads_is_in_the_table() -> None:
    table = table_cells(deployment_section(), "### Environment variables and ports")
    names = variables_read_by_the_code()
    assert len(names) >= 25, sorted(names)
    missing = sorted(n for n in names if f"`{n}`" not in table)
    assert not missing, f"environment variables missing from README's table: {missing}"


def test_every_port_of_the_deployments_is_in_the_ports_table() -> None:
    table = table_cells(deployment_section(), "### Environment variables and ports")
    ports = set(re.findall(r"^\| (\d+) \|", table, flags=re.M))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    published = {p.rsplit(":", 1)[1] for s in compose["services"].values() for p in s.get("ports", [])}
    container_ports = {
        str(p["containerPort"])
        for path in K8S.glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text("utf-8"))
        if doc and doc["kind"] in ("Job", "Pod")
        for c in [*(doc["spec"]["template"]["spec"] if doc["kind"] == "Job" else doc["spec"]).get("initContainers", [])]
        for p in c.get("ports", [])
    }
    assert published | container_ports | {"50051", "4317", "11434"} <= ports, (published, container_ports, ports)


def mentioned_paths(text: str) -> set[str]:
    found = set(re.findall(r"(?<![\w/.-])((?:deploy|docs|tests)/[\w./*-]*[\w*])", text))
    found |= set(re.findall(r"\]\(((?:docs|deploy)/[^)]+)\)", text))
    return {p for p in found if "<" not in p}


def test_docs_name_only_files_that_exist() -> None:
    for doc in (README, GUIDE):
        text = deployment_section() if doc == README else doc.read_text("utf-8")
        for path in sorted(mentioned_paths(text)):
            exists = any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()
            assert exists, f"{doc.name} mentions {path}, which does not exist"


def pod_labels_and_job_names() -> tuple[list[dict[str, str]], set[str]]:
    labels, jobs = [], set()
    for path in K8S.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            if not doc:
                continue
            if doc["kind"] == "Job":
                jobs.add(doc["metadata"]["name"])
                labels.append(doc["spec"]["template"]["metadata"]["labels"])
            elif doc["kind"] == "Pod":
                labels.append(doc["metadata"]["labels"])
    return labels, jobs


def test_kubectl_commands_in_the_docs_match_the_manifests() -> None:
    labels, jobs = pod_labels_and_job_names()
    text = deployment_section() + GUIDE.read_text("utf-8")
    selectors = re.findall(r"kubectl get pods -l ([\w./-]+)=([\w.-]+)", text)
    assert selectors
    for key, value in selectors:
        assert any(pod.get(key) == value for pod in labels), f"no pod carries {key}={value}"
    referenced = set(re.findall(r"job/([a-z0-9-]+)", text))
    assert referenced and referenced <= jobs, referenced - jobs
    for name in re.findall(r"kubectl (?:apply|create|delete) -f (deploy/k8s/[\w.-]+)", text):
        assert (ROOT / name).is_file(), name
