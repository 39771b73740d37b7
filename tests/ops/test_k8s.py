"""deploy/k8s: every document is a valid object of its kind, and the objects fit together."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from scripts.ops.metrics_catalog import SERVICE_NAMES, existing_services

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
IMAGE = re.compile(r"^wenzheng/platform(:[\w.-]+)?$")
HTTP_PORT = 8000

NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {"type": "object", "required": ["name"],
            "properties": {"name": NAME, "namespace": NAME, "labels": STRING_MAP, "annotations": STRING_MAP}}
NAMESPACED = {**METADATA, "required": ["name", "namespace"]}
QUANTITIES = {"type": "object", "required": ["cpu", "memory"],
              "properties": {"cpu": {"type": "string"}, "memory": {"type": "string"}}}
PROBE = {"type": "object", "required": ["httpGet"],
         "properties": {"httpGet": {"type": "object", "required": ["path", "port"],
                                    "properties": {"path": {"type": "string", "pattern": "^/"},
                                                   "port": {"type": ["string", "integer"]}}}}}
CONTAINER = {
    "type": "object",
    "required": ["name", "image", "ports", "livenessProbe", "readinessProbe", "resources", "envFrom"],
    "properties": {
        "name": NAME, "image": {"type": "string"},
        "args": {"type": "array", "items": {"type": "string"}},
        "ports": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["containerPort"],
            "properties": {"containerPort": {"type": "integer"}, "name": {"type": "string"}}}},
        "envFrom": {"type": "array", "items": {"type": "object", "minProperties": 1}},
        "env": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "livenessProbe": PROBE, "readinessProbe": PROBE,
        "resources": {"type": "object", "required": ["requests", "limits"],
                      "properties": {"requests": QUANTITIES, "limits": QUANTITIES}},
    },
}
WORKLOAD = {"required": ["metadata", "spec"], "properties": {
    "metadata": NAMESPACED,
    "spec": {"type": "object", "required": ["selector", "template"], "properties": {
        "replicas": {"type": "integer", "minimum": 1},
        "selector": {"type": "object", "required": ["matchLabels"], "properties": {"matchLabels": STRING_MAP}},
        "template": {"type": "object", "required": ["metadata", "spec"], "properties": {
            "metadata": {"type": "object", "required": ["labels", "annotations"],
                         "properties": {"labels": STRING_MAP, "annotations": STRING_MAP}},
            "spec": {"type": "object", "required": ["containers"], "properties": {
                "containers": {"type": "array", "minItems": 1, "items": CONTAINER}}}}}}}}}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
SCHEMAS = {
    ("v1", "Namespace"): {"required": ["metadata"], "properties": {"metadata": METADATA}},
    ("v1", "ConfigMap"): {"required": ["metadata", "data"], "properties": {
        "metadata": NAMESPACED,
        "data": {"type": "object", "propertyNames": {"pattern": "^WENZHENG_[A-Z0-9_]+$"},
                 "additionalProperties": {"type": "string"}}}},
    ("v1", "Secret"): {"required": ["metadata", "type", "stringData"], "properties": {
        "metadata": NAMESPACED, "type": {"const": "Opaque"},
        "stringData": {"type": "object", "additionalProperties": {"type": "string", "pattern": "REPLACE_ME"}}},
        "not": {"required": ["data"]}},
    ("apps/v1", "Deployment"): WORKLOAD,
    # stats: replicas keep their names (stats-0, stats-1, ...), which name their rollup logs and markers
    ("apps/v1", "StatefulSet"): {**WORKLOAD, "properties": {
        **WORKLOAD["properties"],
        "spec": {**WORKLOAD["properties"]["spec"], "required": ["selector", "template", "serviceName"]}}},
    ("v1", "Service"): {"required": ["metadata", "spec"], "properties": {
        "metadata": NAMESPACED,
        "spec": {"type": "object", "required": ["selector", "ports"], "properties": {
            "selector": STRING_MAP,
            "ports": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["port"]}}}}}},
    ("autoscaling/v2", "HorizontalPodAutoscaler"): {"required": ["metadata", "spec"], "properties": {
        "metadata": NAMESPACED,
        "spec": {"type": "object", "required": ["scaleTargetRef", "minReplicas", "maxReplicas", "metrics"],
                 "properties": {
                     "scaleTargetRef": {"type": "object", "required": ["apiVersion", "kind", "name"],
                                        "properties": {"apiVersion": {"const": "apps/v1"},
                                                       "kind": {"enum": list(WORKLOAD_KINDS)}}},
                     "minReplicas": {"type": "integer", "minimum": 1},
                     "maxReplicas": {"type": "integer", "minimum": 1},
                     "metrics": {"type": "array", "minItems": 1}}}}},
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): {"required": ["resources"], "properties": {
        "resources": {"type": "array", "items": {"type": "string"}}}},
}

DOCS = [(path.name, doc) for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def of_kind(kind: str) -> list[dict]:
    return [doc for _, doc in DOCS if doc["kind"] == kind]


def by_name(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in of_kind(kind)}


def workloads() -> list[dict]:
    return [doc for kind in WORKLOAD_KINDS for doc in of_kind(kind)]


def containers() -> list[tuple[str, dict]]:
    return [(d["metadata"]["name"], c) for d in workloads() for c in d["spec"]["template"]["spec"]["containers"]]


@pytest.mark.parametrize(("file", "doc"), DOCS, ids=[f"{f}:{d.get('kind')}" for f, d in DOCS])
def test_document_matches_the_schema_of_its_kind(file, doc):
    key = (doc.get("apiVersion"), doc.get("kind"))
    assert key in SCHEMAS, f"{file}: unexpected apiVersion/kind {key}"
    jsonschema.validate(doc, {"type": "object", "required": ["apiVersion", "kind"], **SCHEMAS[key]})


def test_each_service_has_a_workload_service_and_autoscaler():
    expected = {f"wenzheng-{s}" for s in SERVICE_NAMES}
    assert sorted(d["metadata"]["name"] for d in workloads()) == sorted(expected)
    for kind in ("Service", "HorizontalPodAutoscaler"):
        assert set(by_name(kind)) == expected, kind


def test_stats_replicas_keep_their_names_across_restarts():
    (stats,) = of_kind("StatefulSet")
    assert stats["metadata"]["name"] == "wenzheng-stats"
    assert stats["spec"]["serviceName"] in by_name("Service")
    assert by_name("HorizontalPodAutoscaler")["wenzheng-stats"]["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"


def test_kustomization_lists_every_manifest():
    (kustomization,) = of_kind("Kustomization")
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml")
                                                        if p.name != "kustomization.yaml")


def test_everything_lives_in_the_namespace():
    (namespace,) = of_kind("Namespace")
    for _, doc in DOCS:
        if doc["kind"] not in ("Namespace", "Kustomization"):
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"], doc["metadata"]["name"]


@pytest.mark.parametrize("deployment", workloads(), ids=lambda d: d["metadata"]["name"])
def test_selectors_match_the_pod_labels(deployment):
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = by_name("Service")[deployment["metadata"]["name"]]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_containers_run_the_platform_image_on_the_configured_port():
    config = of_kind("ConfigMap")[0]["data"]
    assert config["WENZHENG_PORT"] == str(HTTP_PORT)
    for name, container in containers():
        assert IMAGE.match(container["image"]), f"{name}: {container['image']}"
        assert container["args"][:3] == ["python", "-m", f"services.{name.removeprefix('wenzheng-')}"]
        assert [p["containerPort"] for p in container["ports"]] == [HTTP_PORT]


def _port_number(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def test_probes_point_at_health_endpoints_on_the_container_port():
    for name, container in containers():
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{name} {probe}"
            assert _port_number(container, get["port"]) == HTTP_PORT, f"{name} {probe}"


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_the_service_code_serves_the_probed_paths(service):
    if service not in existing_services():
        pytest.skip(f"services/{service} has no code yet")
    code = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "services" / service).rglob("*.py"))
    for path in ("/healthz", "/readyz", "/metrics"):
        assert f'"{path}"' in code or f"'{path}'" in code, f"services/{service} does not route {path}"


def test_the_scrape_annotations_name_the_metrics_port():
    for deployment in workloads():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(HTTP_PORT)
        assert annotations["prometheus.io/path"] == "/metrics"


def test_environment_comes_from_the_configmap_and_secret_that_exist():
    configmaps, secrets = by_name("ConfigMap"), by_name("Secret")
    for name, container in containers():
        for source in container["envFrom"]:
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in configmaps, name
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets, name
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]]["stringData"], f"{name}: {ref}"
    for deployment in workloads():
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in volume:
                secret = secrets[volume["secret"]["secretName"]]
                assert {i["key"] for i in volume["secret"].get("items", [])} <= set(secret["stringData"])


def test_intake_reads_its_credentials_from_the_mounted_secret():
    config = of_kind("ConfigMap")[0]["data"]
    (intake,) = [c for n, c in containers() if n == "wenzheng-intake"]
    mount = intake["volumeMounts"][0]["mountPath"]
    assert config["WENZHENG_INTAKE_CREDENTIALS_FILE"] == f"{mount}/credentials.json"


def test_autoscalers_target_existing_deployments_within_the_partition_count():
    deployments = {d["metadata"]["name"]: d for d in workloads()}
    partitions = int(of_kind("ConfigMap")[0]["data"]["WENZHENG_TOPIC_PARTITIONS"])
    for hpa in of_kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        assert target in deployments
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= partitions, target
        for container in deployments[target]["spec"]["template"]["spec"]["containers"]:
            assert container["resources"]["requests"]["cpu"], "CPU utilisation needs a CPU request"


def test_secret_holds_placeholders_only():
    (secret,) = of_kind("Secret")
    for key, value in secret["stringData"].items():
        assert "REPLACE_ME" in value, key
    text = (K8S / "secret.yaml").read_text(encoding="utf-8")
    assert "PLACEHOLDERS ONLY" in text
