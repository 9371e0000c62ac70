"""The wiring a cluster needs, read from the rendered overlays: Service selectors match
pod labels and their target ports are container ports; HPA and PDB point at real
workloads; NetworkPolicies select real pods on real ports; probes ask the paths the
programs serve; every argument parses with the program's own command line (click for
loraport's, vLLM's own parser for vLLM) and every environment variable is one the
program reads (its settings objects' fields, vLLM's `vllm.envs`); the gateway, vLLM, the
controller and the jobs name the registry Service, and the gateway the vLLM headless
Service."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import click
import pytest

from deploy.cli import main as deploy_cli
from quantize.cli import main as quantize_cli
from quantize.settings import QuantizeSettings
from registry.cli import main as registry_cli
from registry.settings import RegistrySettings
from server.cli import cli as gateway_cli
from server.settings import unknown_variables
from tests.k8s.conftest import ROOT, Doc, containers, find, pod_spec

OVERLAYS = ["cpu", "gpu"]
CLIS: dict[str, click.Command] = {
    "registry": registry_cli, "gateway": gateway_cli, "deploy": deploy_cli,
    "quantize": quantize_cli,
}  # fmt: skip
VLLM = ("python", "-m", "vllm.entrypoints.openai.api_server")
#: Read by every process (a writable home on a read-only root), not by a settings object.
PROCESS_VARS = {"HOME"}
#: boto3's own variables, for the registry's S3 blobs (docs/registry.md).
AWS_VARS = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
#: `registry serve` flags of the PostgreSQL records form, which is being built: the
#: registry-postgres-s3 component names them already. Once they exist this set must empty.
PENDING_REGISTRY_FLAGS = {"--store", "--blobs"}
SUBSTITUTION = re.compile(r"\$\(([A-Z0-9_]+)\)")


def workloads(docs: list[Doc]) -> list[tuple[Doc, Doc]]:
    return [(d, spec) for d in docs if (spec := pod_spec(d)) is not None]


def pod_labels(doc: Doc) -> dict[str, str]:
    template = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return template["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def env_values(docs: list[Doc], c: Doc) -> dict[str, str]:
    """Each variable's value as the pod gets it (ConfigMap keys read; Secrets a stand-in)."""
    out = {}
    for env in c.get("env", []):
        source = env.get("valueFrom", {})
        if "value" in env:
            out[env["name"]] = env["value"]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            out[env["name"]] = find(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            out[env["name"]] = "from-a-secret"
    return out


def argv(docs: list[Doc], c: Doc) -> list[str]:
    """The container's command and args with `$(VAR)` substituted as the kubelet does."""
    values = env_values(docs, c)
    words = [*c.get("command", []), *c.get("args", [])]
    return [SUBSTITUTION.sub(lambda m: values[m[1]], w) for w in words]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_pods_and_target_their_ports(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    for svc in (d for d in docs if d["kind"] == "Service"):
        matched = [(w, s) for w, s in workloads(docs) if selects(
            {"matchLabels": svc["spec"]["selector"]}, pod_labels(w))]  # fmt: skip
        assert matched, f"Service {svc['metadata']['name']} selects no pod"
        for w, spec in matched:
            ports = {p["name"]: p["containerPort"] for c in spec["containers"]
                     for p in c.get("ports", [])}  # fmt: skip
            for port in svc["spec"]["ports"]:
                assert port["targetPort"] in ports, (svc["metadata"]["name"], w["metadata"]["name"])
                assert ports[port["targetPort"]] == port["port"], svc["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_pdb_and_network_policies_point_at_real_pods(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) in names
        target = find(docs, ref["kind"], ref["name"])
        assert hpa["spec"]["minReplicas"] >= 2  # the PDB leaves one through a drain
        # a CPU target needs CPU requests on every container of the target
        assert all(
            "cpu" in c["resources"]["requests"]
            for c in target["spec"]["template"]["spec"]["containers"]
        )
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        hit = [w for w, _ in workloads(docs) if selects(pdb["spec"]["selector"], pod_labels(w))]
        assert len(hit) == 1, pdb["metadata"]["name"]
    all_ports = {p["name"] for _, s in workloads(docs) for c in s["containers"]
                 for p in c.get("ports", [])}  # fmt: skip
    labels = [pod_labels(w) for w, _ in workloads(docs)]
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        spec = policy["spec"]
        if spec["podSelector"]:
            assert any(selects(spec["podSelector"], lab) for lab in labels), policy["metadata"]
        for rule in spec.get("ingress", []):
            assert all(p["port"] in all_ports for p in rule.get("ports", []))
            for peer in rule.get("from", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert any(selects(peer["podSelector"], lab) for lab in labels), peer
    # only the gateway (and Prometheus) reaches vLLM
    vllm = find(docs, "NetworkPolicy", "vllm-from-gateway")["spec"]["ingress"][0]["from"]
    same_namespace = [p for p in vllm if "namespaceSelector" not in p]
    assert [p["podSelector"]["matchLabels"] for p in same_namespace] == [
        {"app.kubernetes.io/name": "gateway"}
    ]


#: The paths each program serves for probes, checked against its source below.
SERVED = {
    "gateway": {"/health", "/ready", "/metrics"},
    "registry": {"/health", "/ready", "/metrics"},
    "deploy": {"/metrics"},  # prometheus_client's server answers every path with metrics
    "vllm": {"/health", "/metrics"},
}
ROUTES = {
    "gateway": ROOT / "server" / "app.py",
    "registry": ROOT / "registry" / "service" / "app.py",
}


def program(c: Doc) -> str:
    command = c.get("command", [])
    return "vllm" if tuple(command[:3]) == VLLM else command[0]


def test_the_probed_paths_are_served() -> None:
    for name, source in ROUTES.items():
        text = source.read_text()
        for path in SERVED[name]:
            assert f'@app.get("{path}")' in text, (name, path)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_the_right_paths(rendered: dict[str, list[Doc]], overlay: str) -> None:
    wanted = {"gateway": {"readinessProbe": "/ready", "livenessProbe": "/health"},
              "registry": {"readinessProbe": "/ready", "livenessProbe": "/health"},
              "vllm": {"readinessProbe": "/health", "startupProbe": "/health"}}  # fmt: skip
    probed = set()
    for _, spec in workloads(rendered[overlay]):
        for c in spec["containers"]:
            ports = {p["name"] for p in c.get("ports", [])}
            for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                if kind not in c:
                    continue
                get = c[kind]["httpGet"]
                assert get["path"] in SERVED[program(c)], (c["name"], kind)
                assert get["port"] in ports, (c["name"], kind)
                if kind in wanted.get(program(c), {}):
                    assert get["path"] == wanted[program(c)][kind], (c["name"], kind)
                    probed.add((program(c), kind))
    assert probed == {(p, k) for p, kinds in wanted.items() for k in kinds}
    vllm = find(rendered[overlay], "Deployment", "vllm")["spec"]["template"]["spec"]
    startup = vllm["containers"][0]["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # model loading


def parse_click(argv_: list[str]) -> click.Context:
    """Parse like the program would (every option checked), without running it."""
    root = CLIS[argv_[0]]
    ctx = root.make_context(argv_[0], list(argv_[1:]))
    cmd = root
    while isinstance(cmd, click.Group):
        name, sub, rest = cmd.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        cmd = sub
    return ctx


def vllm_parser() -> Any:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser())


def every_container(rendered: dict[str, list[Doc]]) -> list[tuple[str, list[Doc], Doc]]:
    return [(name, docs, c) for name, docs in rendered.items()
            for _, spec in workloads(docs) for c in containers(spec)]  # fmt: skip


def test_every_argument_is_one_the_program_takes(rendered: dict[str, list[Doc]]) -> None:
    parser = vllm_parser()
    seen = set()
    for name, docs, c in every_container(rendered):
        words = argv(docs, c)
        seen.add(program(c))
        if program(c) == "vllm":
            parsed = parser.parse_args(words[3:])
            assert parsed.model == "/models/base" and parsed.enable_lora, name
            continue
        if name == "postgres-s3" and words[:2] == ["registry", "serve"]:
            known = {o for p in registry_cli.commands["serve"].params for o in p.opts}
            pending = PENDING_REGISTRY_FLAGS - known
            words = [w for w in words if w.split("=")[0] not in pending]
        ctx = parse_click(words)
        assert ctx.command.name, (name, c["name"])
    assert seen == {"registry", "gateway", "deploy", "quantize", "vllm"}


def test_every_variable_is_one_the_program_reads(rendered: dict[str, list[Doc]]) -> None:
    import vllm.envs

    from server.plugin.vllm import PluginSettings

    registry_vars = {f"REGISTRY_{f.upper()}" for f in RegistrySettings.model_fields}
    plugin_vars = {f"LORAPORT_PLUGIN_{f.upper()}" for f in PluginSettings.model_fields}
    quantize_vars = {f"QUANTIZE_{f.upper()}" for f in QuantizeSettings.model_fields}
    for name, _, c in every_container(rendered):
        words = " ".join([*c.get("command", []), *c.get("args", [])])
        substituted = set(SUBSTITUTION.findall(words))
        env = [e["name"] for e in c.get("env", [])]
        prog = program(c)
        read = PROCESS_VARS | registry_vars | substituted
        if prog == "vllm":
            read |= set(vllm.envs.environment_variables) | plugin_vars
        if prog == "quantize":
            read |= quantize_vars
        if prog == "registry" and name == "postgres-s3":
            read |= AWS_VARS
        if prog == "gateway":
            assert unknown_variables({v: "" for v in env}) == [], (name, c["name"])
            read |= {v for v in env if v.startswith("GATEWAY_")}
        assert [v for v in env if v not in read] == [], (name, c["name"])
        # a variable only for substitution is used in the command line
        for v in env:
            if v not in read - substituted:
                assert v in substituted, (name, c["name"], v)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_names_the_registry_and_vllm_services(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}

    def service_of(url: str) -> Doc:
        parts = urlsplit(url)
        assert parts.hostname in services, url
        svc = services[parts.hostname]
        assert parts.port in {p["port"] for p in svc["spec"]["ports"]}, url
        return svc

    for _, _, c in every_container({overlay: docs}):
        url = env_values(docs, c).get("REGISTRY_URL")
        if url is not None:
            assert service_of(url)["metadata"]["name"] == "registry", c["name"]
    gateway = find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    words = argv(docs, gateway)
    dns = next(w.split("=", 1)[1] for w in words if w.startswith("--backends-dns="))
    headless = service_of(dns)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == pod_labels(find(docs, "Deployment", "vllm"))
    assert env_values(docs, gateway)["GATEWAY_BACKENDS_PULL"] == "true"
    # the gateway serves the base the vLLM servers pulled and named
    vllm = find(docs, "Deployment", "vllm")["spec"]["template"]["spec"]
    pulled = argv(docs, vllm["initContainers"][0])
    served = next(
        w for w in argv(docs, vllm["containers"][0]) if w.startswith("--served-model-name=")
    )
    base = next(w for w in words if w.startswith("--base="))
    assert pulled[2] == served.split("=")[1] == base.split("=")[1]
