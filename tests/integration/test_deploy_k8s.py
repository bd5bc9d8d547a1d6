"""deploy/k8s: every manifest validates strictly against the Kubernetes 1.33 OpenAPI schemas bundled
in the pinned kubernetes-validate (the PodMonitor CRD is not a core type: it gets a structural check
of the fields used, against the monitoring.coreos.com/v1 API); the kustomization lists files that
exist (and renders with `kubectl kustomize` where kubectl is installed); and the pods are what the
docs say: the runner with one GPU, the exporter as a native sidecar without one, identity from the
downward API, the task ConfigMap, the optional token Secret, non-root, read-only roots, probes. The
runner's arguments go through smoltrace-eval's parser and the exporter's environment through its
config loader, so a flag or variable that does not exist fails here."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.33.0"
CRD_KINDS = {"PodMonitor"}
UID = 10001  # USER of both Dockerfiles
DOWNWARD = {
    "k8s.pod.name": "metadata.name",
    "k8s.pod.uid": "metadata.uid",
    "k8s.namespace.name": "metadata.namespace",
    "k8s.node.name": "spec.nodeName",
    "k8s.job.name": "metadata.labels['batch.kubernetes.io/job-name']",
}
EVAL_JOBS = ("job.yaml", "indexed-job.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d]


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def all_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{p.name}:{d['kind']}/{d['metadata']['name']}", d) for p in manifest_files() for d in documents(p)]


def one(name: str) -> dict[str, Any]:
    (doc,) = documents(K8S / name)
    return doc


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"] if doc["kind"] == "Job" else doc["spec"]


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    return found


def literal_env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in c.get("env", []) if "value" in e}


def env_sources(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e["valueFrom"] for e in c.get("env", []) if "valueFrom" in e}


def kubelet_expand(text: str, values: dict[str, str]) -> str:
    """$(VAR) references as the kubelet expands them in args."""
    return re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], text)


# -- schemas ----------------------------------------------------------------------------------
def test_manifests_are_found() -> None:
    names = {p.name for p in manifest_files()}
    assert {"job.yaml", "indexed-job.yaml", "merge-job.yaml", "configmap-tasks.yaml", "secret.example.yaml", "podmonitor.yaml"} <= names


@pytest.mark.parametrize(
    ("name", "doc"), [d for d in all_documents() if d[1]["kind"] not in CRD_KINDS], ids=lambda v: v if isinstance(v, str) else ""
)
def test_manifest_validates_strictly_for_kubernetes_1_33(name: str, doc: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.33"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePullPolice="Always"),
        lambda d: d["spec"]["template"]["spec"]["initContainers"][0]["ports"][0].update(containerPort="metrics"),
        lambda d: d["spec"].update(backoffLimit="none"),
        lambda d: d["spec"]["template"]["spec"].update(runtimeClass="nvidia"),
    ],
    ids=["unknown field", "wrong type", "wrong type in the job spec", "misspelt runtimeClassName"],
)
def test_strict_validation_catches_mistakes(mutate: Any) -> None:
    doc = copy.deepcopy(one("job.yaml"))
    mutate(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# The fields of monitoring.coreos.com/v1 PodMonitor this project uses, as the operator's API defines
# them (kubernetes-validate has no CRDs); unknown fields are errors as in a structural CRD schema.
RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "replacement": {"type": "string"},
        "separator": {"type": "string"},
        "action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep", "hashmod", "lowercase", "uppercase"]},
    },
}
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
PODMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}, "labels": {"type": "object"}},
        },
        "spec": {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "namespaceSelector": {"type": "object"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "matchExpressions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["key", "operator"],
                                "additionalProperties": False,
                                "properties": {
                                    "key": {"type": "string"},
                                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                                    "values": {"type": "array", "items": {"type": "string"}},
                                },
                            },
                        },
                    },
                },
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array", "items": RELABEL},
                            "metricRelabelings": {"type": "array", "items": RELABEL},
                        },
                    },
                },
            },
        },
    },
}


def test_podmonitor_is_structurally_valid_and_selects_the_exporter_sidecars() -> None:
    monitor = one("podmonitor.yaml")
    jsonschema.validate(monitor, PODMONITOR_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):  # the check above is real
        jsonschema.validate({**monitor, "spec": {**monitor["spec"], "podMetricEndpoints": []}}, PODMONITOR_SCHEMA)
    selector = monitor["spec"]["selector"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for name in EVAL_JOBS:
        template = one(name)["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert selector["matchLabels"].items() <= labels.items(), name
        for expression in selector.get("matchExpressions", []):
            assert expression["operator"] == "In" and labels.get(expression["key"]) in expression["values"], (name, expression)
        exporter = container(template["spec"], "gpu-exporter")
        ports = {p["name"]: p["containerPort"] for p in exporter["ports"]}
        assert endpoint["port"] in ports, ports
        assert endpoint["path"] == "/metrics"
    # the merge Job and the reader have no exporter: not selected
    for name in ("merge-job.yaml", "results-reader.yaml"):
        doc = one(name)
        labels = (doc["spec"]["template"]["metadata"] if doc["kind"] == "Job" else doc["metadata"])["labels"]
        assert not all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])), name


# -- the evaluation pods ----------------------------------------------------------------------
@pytest.mark.parametrize("name", EVAL_JOBS)
def test_runner_gets_one_gpu_and_the_exporter_is_a_native_sidecar_without_one(name: str) -> None:
    spec = pod_spec(one(name))
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["restartPolicy"] == "Never"
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == "gpu-exporter" and sidecar["restartPolicy"] == "Always"
    assert "nvidia.com/gpu" not in {**sidecar["resources"].get("requests", {}), **sidecar["resources"].get("limits", {})}
    (runner,) = spec["containers"]
    assert runner["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert runner["resources"]["requests"]["nvidia.com/gpu"] == 1
    env = literal_env(sidecar)
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    assert sidecar["image"].startswith("smoltrace/gpu-exporter:") and runner["image"].startswith("smoltrace/runner:")
    assert runner["image"].endswith("-cuda"), "transformers on a GPU needs the cuda variant"


@pytest.mark.parametrize("name", EVAL_JOBS)
def test_runner_reaches_the_sidecar_and_the_sidecar_config_loads(name: str) -> None:
    from smoltrace_gpu_exporter.config import load_config

    template = one(name)["spec"]["template"]
    spec = template["spec"]
    sidecar, runner = container(spec, "gpu-exporter"), container(spec, "runner")
    config = load_config([], environ={k: v for k, v in literal_env(sidecar).items() if k.startswith("SMOLTRACE_GPU_EXPORTER_")})
    grpc_host = config.grpc_address.rsplit(":", 1)[0]
    assert grpc_host == "127.0.0.1", "the unauthenticated control API stays on the pod's loopback"
    metrics_host, metrics_port = config.metrics_address.rsplit(":", 1)
    assert metrics_host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports == {"metrics": int(metrics_port)}
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == metrics_port and annotations["prometheus.io/path"] == "/metrics"
    args = [re.sub(r"\$\(\w+\)", "0", a) for a in runner["args"]]  # $(VAR)s get values from the kubelet
    from smoltrace.config import build_parser, config_from_args

    runner_cfg = config_from_args(build_parser().parse_args(args))
    assert runner_cfg.gpu_exporter == config.grpc_address
    assert runner_cfg.provider == "transformers" and runner_cfg.enable_otel
    # the task file is the ConfigMap's key under its mount
    mounts = {m["name"]: m for m in runner["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    (tasks_volume,) = [n for n, v in volumes.items() if "configMap" in v]
    configmap = one("configmap-tasks.yaml")
    assert volumes[tasks_volume]["configMap"]["name"] == configmap["metadata"]["name"]
    assert mounts[tasks_volume]["readOnly"] is True
    key = Path(runner_cfg.dataset_name).relative_to(mounts[tasks_volume]["mountPath"]).as_posix()
    assert key in configmap["data"], (key, list(configmap["data"]))
    assert runner_cfg.output_dir.startswith("/results") and mounts["results"]["mountPath"] == "/results"


@pytest.mark.parametrize("name", EVAL_JOBS)
def test_the_runner_takes_its_gpu_from_the_device_plugin(name: str) -> None:
    """No variable or flag on the runner overrides the device plugin's NVIDIA_VISIBLE_DEVICES, the
    seed rule holds (no forced --enable-gpu-metrics), and the plugin's UUID is the run's scope on a
    4-GPU node whose sidecar sees every GPU."""
    from smoltrace.config import build_parser, config_from_args
    from smoltrace.gpu_scope import ExporterDevice, ScopeInputs, resolve_scope

    runner = container(pod_spec(one(name)), "runner")
    env_names = {e["name"] for e in runner.get("env", [])}
    assert not env_names & {"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "SMOLTRACE_GPUS"}
    args = [re.sub(r"\$\(\w+\)", "0", a) for a in runner["args"]]
    assert not any(a.startswith(("--gpus", "--enable-gpu-metrics")) for a in args)
    cfg = config_from_args(build_parser().parse_args(args))
    node = [ExporterDevice(i, f"GPU-5170a7ed-0000-4000-8000-{i:012d}") for i in range(4)]
    injected = {"NVIDIA_VISIBLE_DEVICES": node[2].uuid}  # what the device plugin sets in the container
    scope = resolve_scope(ScopeInputs.read(cfg.gpus, injected), node, embedded=cfg.gpu_exporter is None)
    assert (scope.source, scope.uuids) == ("nvidia_visible_devices", (node[2].uuid,))


@pytest.mark.parametrize("name", EVAL_JOBS)
def test_exporter_probes_use_the_grpc_health_service(name: str) -> None:
    sidecar = container(pod_spec(one(name)), "gpu-exporter")
    grpc_address = literal_env(sidecar)["SMOLTRACE_GPU_EXPORTER_GRPC_ADDRESS"]
    startup = sidecar["startupProbe"]
    # exec the image's healthcheck (grpc.health.v1 over the loopback address), or kubelet's own grpc probe
    if "exec" in startup:
        assert startup["exec"]["command"] == ["python", "-m", "smoltrace_gpu_exporter.healthcheck", grpc_address]
    else:
        assert startup["grpc"]["port"] == int(grpc_address.rsplit(":", 1)[1])
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 30, "give the exporter time to start"
    assert "readinessProbe" in sidecar
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


@pytest.mark.parametrize("name", EVAL_JOBS)
def test_identity_comes_from_the_downward_api(name: str) -> None:
    spec = pod_spec(one(name))
    for c in (container(spec, "gpu-exporter"), container(spec, "runner")):
        names = [e["name"] for e in c["env"]]
        value = literal_env(c)["OTEL_RESOURCE_ATTRIBUTES"]
        pairs = dict(pair.split("=", 1) for pair in value.split(","))
        assert DOWNWARD.keys() <= pairs.keys(), pairs
        sources = env_sources(c)
        for attribute, field_path in DOWNWARD.items():
            ref = re.fullmatch(r"\$\((\w+)\)", pairs[attribute])
            assert ref, f"{attribute}={pairs[attribute]} is not a $(VAR) reference"
            var = ref.group(1)
            assert sources[var]["fieldRef"]["fieldPath"] == field_path, (attribute, sources[var])
            # the kubelet expands $(VAR) only from variables defined before it
            assert names.index(var) < names.index("OTEL_RESOURCE_ATTRIBUTES"), (c["name"], var)


@pytest.mark.parametrize("name", EVAL_JOBS)
def test_hf_token_comes_from_the_optional_example_secret(name: str) -> None:
    secret = one("secret.example.yaml")
    runner = container(pod_spec(one(name)), "runner")
    ref = env_sources(runner)["HF_TOKEN"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert ref["optional"] is True, "a public model runs without the Secret"


def test_example_secret_holds_no_real_token() -> None:
    secret = one("secret.example.yaml")
    for value in secret["stringData"].values():
        assert not re.fullmatch(r"hf_[A-Za-z0-9]{30,}", value), "a real-looking token in the example"
        assert "REPLACE" in value
    assert "secret.example.yaml" not in yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]


def all_pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [(n, pod_spec(d)) for n, d in all_documents() if d["kind"] in ("Job", "Pod")]


@pytest.mark.parametrize(("name", "spec"), all_pod_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_pods_are_non_root_without_privilege_escalation_and_read_only(name: str, spec: dict[str, Any]) -> None:
    assert spec["automountServiceAccountToken"] is False
    context = spec["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == UID and context["seccompProfile"]["type"] == "RuntimeDefault"
    writable = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v or "persistentVolumeClaim" in v}
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert "memory" in c["resources"]["limits"], c["name"]
        if c["name"] in ("runner", "merge"):
            # everything the runner image writes (HOME=/tmp, outputs) lands on a volume
            mounted = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounted.get("/tmp") in writable and mounted.get("/results") in writable, mounted
    if any(c["name"] == "runner" for c in spec["containers"]):
        mounted = {m["mountPath"]: m["name"] for m in container(spec, "runner")["volumeMounts"]}
        assert mounted.get("/cache") in writable, "HF_HOME=/cache/huggingface needs a writable volume"


def test_single_job_keeps_results_in_an_emptydir_and_the_tasks_in_the_configmap() -> None:
    from smoltrace.tasks import load_tasks

    spec = pod_spec(one("job.yaml"))
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["results"] and "emptyDir" in volumes["tmp"]
    tasks = one("configmap-tasks.yaml")["data"]["tasks.jsonl"]
    assert tasks == (ROOT / "deploy" / "tasks" / "tasks.jsonl").read_text("utf-8"), "the ConfigMap and the compose task file differ"
    assert len(load_tasks(str(ROOT / "deploy" / "tasks" / "tasks.jsonl")).tasks) == len(tasks.splitlines())


# -- sharded evaluation -----------------------------------------------------------------------
def test_indexed_job_shards_one_run_over_n_pods_on_the_shared_volume() -> None:
    job = one("indexed-job.yaml")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    n = spec["completions"]
    assert n >= 2 and spec["parallelism"] == n
    runner = container(spec["template"]["spec"], "runner")
    args = runner["args"]
    assert args[args.index("--shard") + 1] == f"$(JOB_COMPLETION_INDEX)/{n}"
    assert "--run-id=$(SMOLTRACE_RUN_ID)" in args
    run_id = literal_env(runner)["SMOLTRACE_RUN_ID"]
    output = next(a.split("=", 1)[1] for a in args if a.startswith("--output-dir="))
    assert output == "/results/$(SMOLTRACE_RUN_ID)/shards/$(JOB_COMPLETION_INDEX)"
    # every shard parses as smoltrace-eval's own flags, with the values the kubelet substitutes
    from smoltrace.config import build_parser, config_from_args

    for index in (0, n - 1):
        values = {"JOB_COMPLETION_INDEX": str(index), "SMOLTRACE_RUN_ID": run_id}
        config = config_from_args(build_parser().parse_args([kubelet_expand(a, values) for a in args]))
        assert config.shard == (index, n) and config.run_id == run_id
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    pvc = one("pvc-results.yaml")
    assert volumes["results"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "shards on several nodes write the same volume"
    # the merge Job reads the same run, the same volume, all N shards
    merge = one("merge-job.yaml")
    merge_spec = merge["spec"]["template"]["spec"]
    merge_env = literal_env(container(merge_spec, "merge"))
    assert merge_env["SMOLTRACE_RUN_ID"] == run_id and merge_env["SHARD_COUNT"] == str(n)
    assert {v["persistentVolumeClaim"]["claimName"] for v in merge_spec["volumes"] if "persistentVolumeClaim" in v} == {
        pvc["metadata"]["name"]
    }
    assert "smoltrace-eval merge" in container(merge_spec, "merge")["args"][0]
    assert "runtimeClassName" not in merge_spec and not merge_spec.get("initContainers")
    assert "nvidia.com/gpu" not in str(merge_spec), "merging needs no GPU"


def test_indexed_job_does_not_retry_shards_blindly() -> None:
    spec = one("indexed-job.yaml")["spec"]
    assert spec.get("backoffLimitPerIndex", spec.get("backoffLimit")) == 0
    assert one("job.yaml")["spec"]["backoffLimit"] == 0


# -- kustomize --------------------------------------------------------------------------------
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text("utf-8"))


def test_kustomization_lists_existing_resources_and_the_images_they_use() -> None:
    kust = kustomization()
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kust["kind"] == "Kustomization"
    resources = kust["resources"]
    assert resources and len(set(resources)) == len(resources)
    for resource in resources:
        assert (K8S / resource).is_file(), f"kustomization.yaml lists {resource}, which does not exist"
    assert {"configmap-tasks.yaml", "job.yaml"} <= set(resources)
    used = {
        c["image"].split(":")[0]
        for r in resources
        for d in documents(K8S / r)
        if d["kind"] in ("Job", "Pod")
        for c in [*pod_spec(d).get("initContainers", []), *pod_spec(d)["containers"]]
    }
    assert {i["name"] for i in kust["images"]} == used


def test_manifests_left_out_of_the_kustomization_are_documented_there_and_in_the_docs() -> None:
    listed = set(kustomization()["resources"])
    header = (K8S / "kustomization.yaml").read_text("utf-8")
    docs = (ROOT / "docs" / "DEPLOYMENT.md").read_text("utf-8")
    for path in manifest_files():
        if path.name in listed:
            continue
        assert path.name in header, f"kustomization.yaml should say why {path.name} is applied by hand"
        assert f"deploy/k8s/{path.name}" in docs, f"docs/DEPLOYMENT.md does not say how to use {path.name}"


def kubectl() -> str | None:
    found = shutil.which("kubectl")
    if not found:
        return None
    try:
        probe = subprocess.run([found, "kustomize", "--help"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found if probe.returncode == 0 else None


@pytest.mark.skipif(kubectl() is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_kustomize_renders_and_the_result_validates() -> None:
    rendered = subprocess.run([kubectl() or "kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    expected = sorted(f"{d['kind']}/{d['metadata']['name']}" for r in kustomization()["resources"] for d in documents(K8S / r))
    assert kinds == expected
    tags = {i["name"]: i["newTag"] for i in kustomization()["images"]}
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "smoltrace"
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        if doc["kind"] == "Job":
            for c in [*pod_spec(doc).get("initContainers", []), *pod_spec(doc)["containers"]]:
                name, tag = c["image"].split(":")
                assert tag == tags[name], c["image"]
