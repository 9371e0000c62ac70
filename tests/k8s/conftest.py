"""The rendered manifests: each overlay through `kubectl kustomize` once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
#: What `kubectl apply -k` takes: both overlays and the quantize job template.
OVERLAYS = {"cpu": K8S / "overlays" / "cpu", "gpu": K8S / "overlays" / "gpu"}
QUANTIZE_RUN = K8S / "jobs" / "quantize-run"
POSTGRES_S3 = K8S / "components" / "registry-postgres-s3"
IN_FLIGHT_HPA = K8S / "components" / "gateway-hpa-in-flight"

Doc = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl is not installed: `scripts/test-deps.sh` installs it (apt-get install kubectl)"
        )
    return found


def render(directory: Path) -> list[Doc]:
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, f"kubectl kustomize {directory}: {done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def render_with(tmp: Path, components: list[Path]) -> list[Doc]:
    """The base with ``components`` (an overlay a user writes)."""
    names = "".join(f"  - {os.path.relpath(p, tmp)}\n" for p in components)
    (tmp / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(K8S / 'base', tmp)}\ncomponents:\n{names}"
    )
    return render(tmp)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    out = {name: render(path) for name, path in OVERLAYS.items()}
    out["quantize-run"] = render(QUANTIZE_RUN)
    out["postgres-s3"] = render_with(
        tmp_path_factory.mktemp("postgres-s3"), [POSTGRES_S3, IN_FLIGHT_HPA]
    )
    return out


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_spec(doc: Doc) -> Doc | None:
    """The pod template of a workload (None for other kinds)."""
    spec = doc.get("spec", {})
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        return spec["template"]["spec"]  # type: ignore[no-any-return]
    if doc["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return None


def containers(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec["containers"]]
