"""`quantize` on a registry service: `quantize merge` against an `http://` location makes
and measures the variant where it runs, uploads it through the service, and the
service's directory then holds exactly what a directory run records."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.quantize.conftest import QUANTIZE, REGISTRY, quantize_env
from tests.support.registry_service import registry_service
from tests.support.zoo import fill_registry

TOKEN = "test-quantize-remote-token"


def show(location: str, ref: str, env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run(
        [REGISTRY, "show", ref, "--json", "--registry", location],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    data: dict[str, object] = json.loads(out.stdout)
    return data


def test_merge_over_http_registers_the_variant_with_its_lineage(tmp_path: Path) -> None:
    directory = tmp_path / "registry"
    fill_registry(directory)
    env = {**quantize_env(tmp_path), "REGISTRY_TOKEN": TOKEN}
    with registry_service(directory, tmp_path / "serve.log", token=TOKEN) as served:
        made = subprocess.run(
            [QUANTIZE, "merge", "support-v1@1", "--registry", served.url],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr[-3000:]
        assert made.stdout.startswith("support-v1-1-merged sha256:"), made.stdout
        remote = show(served.url, "support-v1-1-merged", env)
        adapter = show(served.url, "support-v1@1", env)
        again = subprocess.run(
            [QUANTIZE, "merge", "support-v1@1", "--registry", served.url],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    local = show(str(directory), "support-v1-1-merged", env)
    assert remote == local  # what the service says is what its directory holds
    lineage = remote["quantization"]
    assert isinstance(lineage, dict) and lineage["method"] == "merge"
    assert lineage["adapter_digest"] == adapter["digest"]
    assert remote["digest"] == made.stdout.split()[1]
    assert remote["created_by"] == "token"  # who: the server's name for the token, not a claim
    assert again.returncode != 0 and "support-v1-1-merged" in again.stderr  # name taken
    verified = subprocess.run(
        [REGISTRY, "verify", "--registry", str(directory)], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
