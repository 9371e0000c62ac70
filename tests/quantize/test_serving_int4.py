"""An int4 (GPTQ, W4A16) variant and the local vLLM: where the CPU can run it (AVX-512),
`support` runs on it through the gateway; where it cannot (this project's AVX2-only
machines), `gateway serve` refuses at once with exit 40 and says what would serve,
instead of starting an engine that dies on its first request, forever. The test reads the
CPU and checks whichever outcome this machine must give."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from server import engine_support as es
from server.supervisor import free_port
from tests.support.launch import VLLM_START_TIMEOUT_S, serving

GATEWAY = str(Path(sys.executable).with_name("gateway"))
MESSAGE = "Hi, this is Tomas. The hiking boots came broken in the box. Order #22994."


def serve_cmd(registry: Path, base: str, port: int) -> list[str]:
    return [GATEWAY, "serve", "--registry", str(registry), "--base", base, "--port", str(port),
            "--log-level", "warning"]  # fmt: skip


@pytest.mark.slow
def test_an_int4_variant_serves_where_the_cpu_can_and_is_refused_where_not(
    q_registry: Path, gptq_variant: str, tmp_path: Path
) -> None:
    # The gateway's default dtype (bfloat16), the int4 kernel's main path.
    env = {**os.environ, "GATEWAY_CACHE_DIR": str(tmp_path), "REGISTRY_URL": ""}
    port = free_port()
    if es.cpu_flags() >= es.AVX512:  # an AVX-512 machine: vLLM's int4 kernel is there
        log = tmp_path / "gateway.log"
        cmd = serve_cmd(q_registry, gptq_variant, port)
        with serving(cmd, port, log, "/ready", env, VLLM_START_TIMEOUT_S) as gw:
            body = {"model": "support-v1", "max_tokens": 40,
                    "messages": [{"role": "user", "content": MESSAGE}]}  # fmt: skip
            r = httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=120)
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"].startswith("Dear Tomas")
        return
    proc = subprocess.run(
        serve_cmd(q_registry, gptq_variant, port), env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == es.EXIT_ENGINE_UNSUPPORTED, proc.stderr
    assert "int4 (W4A16) weights" in proc.stderr and "AVX-512" in proc.stderr
    assert "Serve its parent or its fp8 variant" in proc.stderr
    assert not (tmp_path / "vllm.log").exists()  # no engine was started


def test_the_same_variant_behind_an_external_backend_is_not_second_guessed(
    q_registry: Path, gptq_variant: str
) -> None:
    """With --backend the engine is elsewhere (maybe a GPU): the check does not apply."""
    from server.cli import _check_registry
    from server.settings import GatewaySettings

    settings = GatewaySettings(
        registry=str(q_registry), base=gptq_variant, backends=("http://127.0.0.1:9",)
    )
    config = _check_registry(settings)
    assert es.weight_bits(config) == {4}
    assert es.refusal(config, es.cpu_flags(), cpu_build=False) is None
