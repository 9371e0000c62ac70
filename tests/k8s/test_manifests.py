"""The manifests render and validate: both overlays, the quantize job template and the
PostgreSQL + S3 registry and in-flight HPA components go through `kubectl kustomize`; every object
validates against the Kubernetes API schema (kubernetes-validate, strict: an unknown
field fails) and the Prometheus Operator objects against the operator's published schemas,
made strict (tests/k8s/operator_schemas.py); every container runs non-root, read-only,
without privilege escalation, with requests and limits, and takes tokens from Secrets."""

from __future__ import annotations

import json
import re

import jsonschema
import kubernetes_validate
import pytest

from tests.k8s.conftest import ROOT, Doc, containers, find, pod_spec
from tests.k8s.operator_schemas import API_VERSION, SCHEMAS

#: The oldest Kubernetes these manifests are for (the `sleep` pre-stop action is GA in 1.32).
KUBERNETES = "1.32.0"
ALL = ["cpu", "gpu", "quantize-run", "postgres-s3"]
#: The API server's rule for an object's name (RFC 1123 subdomain).
DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
SECRET_VARS = {"REGISTRY_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "REGISTRY_STORE_URL", "REGISTRY_BLOBS_URL"}  # fmt: skip


@pytest.mark.parametrize("name", ALL)
def test_every_object_validates(rendered: dict[str, list[Doc]], name: str) -> None:
    problems = []
    for doc in rendered[name]:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            if doc["apiVersion"] == API_VERSION and doc["kind"] in SCHEMAS:
                jsonschema.validate(doc, SCHEMAS[doc["kind"]])
            elif doc["apiVersion"].startswith("monitoring.coreos.com/"):
                problems.append(f"{what}: no published schema for {doc['apiVersion']} here")
            else:
                kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as e:
            problems.append(f"{what}: {e.message}")  # type: ignore[union-attr]
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{what}: no schema for {doc['apiVersion']} {doc['kind']}")
    assert problems == []


@pytest.mark.parametrize("name", ALL)
def test_the_operator_objects_keep_what_their_schema_leaves_to_the_operator(
    rendered: dict[str, list[Doc]], name: str
) -> None:
    """What the CRD schema does not say: the API server wants a DNS-subdomain name (the
    schema's ObjectMeta has no pattern) and these objects live in the namespace; the
    operator's admission webhook refuses a rule with both or neither of `alert` and
    `record`; a ServiceMonitor with no endpoint, or a relative path, scrapes nothing."""
    for doc in rendered[name]:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            meta = doc["metadata"]
            assert re.fullmatch(DNS_SUBDOMAIN, meta["name"]) and len(meta["name"]) <= 253, meta
            assert meta.get("namespace") == "loraport", meta
        if doc["kind"] == "PrometheusRule":
            assert doc["apiVersion"] == API_VERSION
            for group in doc["spec"]["groups"]:
                assert group["rules"], group["name"]
                for rule in group["rules"]:
                    assert ("alert" in rule) != ("record" in rule), rule
        if doc["kind"] == "ServiceMonitor":
            assert doc["spec"]["endpoints"], doc["metadata"]["name"]
            for endpoint in doc["spec"]["endpoints"]:
                assert endpoint.get("path", "/metrics").startswith("/"), endpoint


def test_the_overlays_hold_every_object_the_system_needs(rendered: dict[str, list[Doc]]) -> None:
    wanted = {
        ("Namespace", "loraport"), ("Deployment", "vllm"), ("Service", "vllm-headless"),
        ("Deployment", "gateway"), ("Service", "gateway"),
        ("HorizontalPodAutoscaler", "gateway"), ("PodDisruptionBudget", "gateway"),
        ("StatefulSet", "registry"), ("Service", "registry"),
        ("Deployment", "rollout-controller"), ("Service", "rollout-controller"),
        ("CronJob", "quantize-eval-pending"), ("NetworkPolicy", "default-deny-ingress"),
        ("ServiceMonitor", "gateway"), ("ServiceMonitor", "vllm"),
        ("ServiceMonitor", "registry"), ("ServiceMonitor", "rollout-controller"),
        ("PrometheusRule", "loraport"), ("ConfigMap", "loraport-grafana-dashboard"),
    }  # fmt: skip
    for overlay in ("cpu", "gpu"):
        have = {(d["kind"], d["metadata"]["name"]) for d in rendered[overlay]}
        assert wanted - have == set(), overlay
        assert all(d["metadata"].get("namespace", "loraport") == "loraport"
                   for d in rendered[overlay])  # fmt: skip
    assert find(rendered["quantize-run"], "Job", "quantize-run")
    # the in-flight component adds a per-pod metric the gateway exports
    hpa = find(rendered["postgres-s3"], "HorizontalPodAutoscaler", "gateway")
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert f'"{pods["metric"]["name"]}"' in (ROOT / "server" / "metrics.py").read_text()
    registry = find(rendered["postgres-s3"], "Deployment", "registry")
    assert registry["spec"]["replicas"] > 1
    assert find(rendered["postgres-s3"], "PodDisruptionBudget", "registry")


def test_the_gpu_overlay_asks_for_gpus_as_its_tensor_parallel_setting(
    rendered: dict[str, list[Doc]],
) -> None:
    vllm = find(rendered["gpu"], "Deployment", "vllm")
    (c,) = vllm["spec"]["template"]["spec"]["containers"]
    settings = find(rendered["gpu"], "ConfigMap", "loraport-gpu-settings")
    tp = settings["data"]["tensor-parallel-size"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == tp
    assert "--tensor-parallel-size=$(TENSOR_PARALLEL_SIZE)" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["TENSOR_PARALLEL_SIZE"]["valueFrom"]["configMapKeyRef"]["key"] == (
        "tensor-parallel-size"
    )
    assert "gpu" in c["image"]
    cpu = find(rendered["cpu"], "Deployment", "vllm")["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"] and "--enforce-eager" in cpu["args"]


@pytest.mark.parametrize("name", ALL)
def test_every_container_is_locked_down(rendered: dict[str, list[Doc]], name: str) -> None:
    for doc in rendered[name]:
        spec = pod_spec(doc)
        if spec is None:
            continue
        what = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, what
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", what
        assert spec["automountServiceAccountToken"] is False, what
        mounted = {v["name"] for v in spec.get("volumes", [])}
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (what, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (what, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (what, c["name"])
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (what, c["name"], kind)
            # a read-only root: /tmp (and every cache) is a volume
            paths = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in paths, (what, c["name"])
            for m in c.get("volumeMounts", []):
                assert m["name"] in mounted or m["name"] in {
                    t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])
                }, (what, m["name"])
            for env in c.get("env", []):
                if env["name"] in SECRET_VARS:
                    assert "secretKeyRef" in env.get("valueFrom", {}), (what, env["name"])


def test_the_dashboard_is_grafana_json(rendered: dict[str, list[Doc]]) -> None:
    cm = find(rendered["cpu"], "ConfigMap", "loraport-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = cm["data"].values()
    dashboard = json.loads(text)
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(titles) == len(set(titles)) >= 10
    assert all(p["targets"] and p["targets"][0]["expr"] for p in dashboard["panels"])
