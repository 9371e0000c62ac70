"""`quantize eval --pending` catches up on every adapter x variant pair with no result, on
the session's real FP8 variant: on a directory after `registry push --no-eval`, and on a
real `registry serve` after a push over HTTP (which leaves its pairs and says so), where
the gateway's resolver refuses the pair before and accepts it after. And on a synthetic
registry (no worker run): one variant failing lets the others run, then exit 25."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import registry
from quantize.cli import main as quantize_cli
from quantize.errors import PairsNotEvaluatedError, QuantizeEnvironmentError
from registry.location import open_local
from server.errors import InvalidRequestError
from server.resolver import Resolver
from tests.quantize.conftest import QUANTIZE, REGISTRY, quantize_env
from tests.support.registry_service import registry_service
from tests.support.synthetic import write_adapter, write_base
from tests.support.zoo import adapter_dir

TOKEN = "test-quantize-pending-token"
EVAL = Path(__file__).resolve().parents[2] / "examples" / "data" / "eval.jsonl"


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


@pytest.fixture
def two_variants(tmp_path: Path) -> Path:
    """A synthetic registry: one adapter, an FP8 variant and a variant recorded with a
    method this quantize does not know (as from a newer one)."""
    location = tmp_path / "reg"
    with open_local(location) as reg:
        reg.add_base(write_base(tmp_path / "tiny-base"), name="tiny-base")
        reg.push_adapter(write_adapter(tmp_path / "support"), allow_unknown_dataset=True)
        for name, method in (("tiny-base-fp8", "fp8"), ("tiny-base-odd", "int3")):
            reg.add_variant(
                write_base(tmp_path / name, random=True),
                name=name,
                parent="tiny-base",
                quantization={"method": method},
                fidelity={},
                passed=True,
                forced=False,
                pairs=[],
            )
    return location


def test_one_variant_failing_lets_the_others_run_then_exits_25(
    two_variants: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fails = tmp_path / "fails"
    fails.write_text("#!/bin/sh\nexit 3\n")
    fails.chmod(0o755)
    monkeypatch.setenv("QUANTIZE_PYTHON", str(fails))  # a worker that dies at once
    args = ["eval", "--pending", "--eval-set", str(EVAL), "--registry", str(two_variants)]
    result = CliRunner().invoke(quantize_cli, args)
    assert result.exit_code == PairsNotEvaluatedError.exit_code, result.output
    message = result.output
    assert "measured 0 of 2 waiting pair(s); 2 on 2 variant(s) could not be" in message
    assert "tiny-base-fp8: the eval worker failed (exit 3)" in message
    assert "tiny-base-odd: unknown method 'int3'" in message  # tried although fp8 failed
    with registry.open(two_variants, create=False) as reg:
        assert reg.pairs_on("tiny-base-fp8") == [] and reg.pairs_on("tiny-base-odd") == []

    monkeypatch.setenv("QUANTIZE_PYTHON", str(tmp_path / "missing"))  # stops at once
    result = CliRunner().invoke(quantize_cli, args)
    assert result.exit_code == QuantizeEnvironmentError.exit_code, result.output
    assert "tiny-base-odd" not in result.output
