"""`quantize eval --pending` catches up on every adapter x variant pair with no result, on
the session's real FP8 variant: on a directory after `registry push --no-eval`, and on a
real `registry serve` after a push over HTTP (which leaves its pairs and says so), where
the gateway's resolver refuses the pair before and accepts it after."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from server.errors import InvalidRequestError
from server.resolver import Resolver
from tests.quantize.conftest import QUANTIZE, REGISTRY, quantize_env
from tests.support.registry_service import registry_service
from tests.support.zoo import adapter_dir

TOKEN = "test-quantize-pending-token"


def push(location: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REGISTRY, "push", str(adapter_dir("support-v2")), "--name", "pushed-late", "--base",
         "tiny-llama", "--allow-unknown-dataset", "--registry", location, *extra],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def pending(location: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QUANTIZE, "eval", "--pending", "--registry", location, *extra],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def show(location: str, ref: str, env: dict[str, str]) -> dict[str, dict[str, object]]:
    """``ref``'s pair results by variant, as `registry show --json` gives them."""
    out = subprocess.run(
        [REGISTRY, "show", ref, "--json", "--registry", location],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {e["variant"]: e for e in json.loads(out.stdout).get("variant_evals", [])}


@pytest.fixture
def registry_copy(q_registry: Path, fp8_variant: dict[str, object], tmp_path: Path) -> Path:
    """The session's registry with its FP8 variant, every zoo adapter measured on it."""
    copy = tmp_path / "registry"
    shutil.copytree(q_registry, copy)
    return copy


def test_pending_on_a_directory(registry_copy: Path, tmp_path: Path) -> None:
    env = quantize_env(tmp_path)
    location = str(registry_copy)
    idle = pending(location, env)
    assert idle.returncode == 0, idle.stderr
    assert idle.stdout == "nothing to measure: every adapter x variant pair has a result\n"

    pushed = push(location, env, "--no-eval")
    assert pushed.returncode == 0, pushed.stderr
    assert "1 pair(s) left for `quantize eval --pending`: pushed-late@1 on tiny-llama-fp8" in (
        pushed.stderr
    )
    misuse = pending(location, env, "--force")
    assert misuse.returncode == 2 and "one pair's gate at a time" in misuse.stderr

    done = pending(location, env, "--variant", "tiny-llama-fp8")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "pushed-late@1 on tiny-llama-fp8: ok",
        "measured 1 pair(s) on 1 variant(s): 1 passed, 0 failed (the gateway refuses those)",
    ]
    assert "quantize: 1 pair(s) to measure on 1 variant(s)" in done.stderr
    assert "variant tiny-llama-fp8 [1/1]: measuring pushed-late@1" in done.stderr
    pair = show(location, "pushed-late@1", env)["tiny-llama-fp8"]
    assert pair["passed"] is True and pair["failed_gates"] == []

    again = pending(location, env)
    assert again.returncode == 0 and again.stdout.startswith("nothing to measure"), again.stderr


def test_pending_over_http_after_a_push_over_http(
    registry_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGISTRY_TOKEN", TOKEN)  # the resolver's client, in this process
    env = {**quantize_env(tmp_path), "REGISTRY_TOKEN": TOKEN}
    with registry_service(registry_copy, tmp_path / "serve.log", token=TOKEN) as service:
        pushed = push(service.url, env, "--json")
        assert pushed.returncode == 0, pushed.stderr
        assert "evaluating" not in pushed.stderr  # no measurement from the pushing client
        assert json.loads(pushed.stdout)["pending_pairs"] == [
            {"adapter": "pushed-late@1", "variant": "tiny-llama-fp8"}
        ]
        assert show(service.url, "pushed-late@1", env) == {}
        assert refusal(service.url) == "variant_pair_not_evaluated"

        done = pending(service.url, env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == "pushed-late@1 on tiny-llama-fp8: ok"
        pair = show(service.url, "pushed-late@1", env)["tiny-llama-fp8"]
        assert pair["passed"] is True
        figures = pair["figures"]
        assert isinstance(figures, dict) and figures["token_agreement"] >= 0.99
        assert refusal(service.url) is None  # the gateway now serves the pair
        assert pending(service.url, env).stdout.startswith("nothing to measure")


def refusal(url: str) -> str | None:
    """The gateway resolver's refusal code for pushed-late@1 on the FP8 variant (None:
    it resolves)."""

    async def resolve() -> str | None:
        resolver = Resolver(url)
        try:
            await resolver.open("tiny-llama-fp8")
            target = await resolver.resolve("pushed-late@1")
            assert target.adapter is not None and target.adapter.ref == "pushed-late@1"
            return None
        except InvalidRequestError as exc:
            return exc.code
        finally:
            await resolver.close()

    return asyncio.run(resolve())
