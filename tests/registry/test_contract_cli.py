"""The `registry` CLI says the same thing on a directory and through a service: the same
``--json`` of ``ls``/``show``/``log`` for one registry read both ways, and the same output
and exit codes of ``push``/``ls``/``show``/``alias`` run as subprocesses with
``REGISTRY_URL=http://...`` against a real ``registry serve``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import registry
from registry.cli import main
from registry.local import LocalRegistry
from registry.settings import RegistrySettings
from tests.registry.conftest import RECORDS
from tests.support.mounted_service import MountedServer
from tests.support.registry_service import registry_service

REGISTRY = str(Path(sys.executable).with_name("registry"))


@pytest.fixture(params=RECORDS)
def records(request: pytest.FixtureRequest) -> str:
    """Every test here runs with its records in SQLite and in PostgreSQL."""
    return str(request.param)


@pytest.fixture
def rich(
    local_reg: LocalRegistry, base_dir: Path, make_adapter: Callable[..., Path], tmp_path: Path
) -> LocalRegistry:
    """A registry with something of everything ``show`` renders."""
    local_reg.push_adapter(make_adapter("support"), dataset="support-data", meta={"epochs": "3"})
    local_reg.push_adapter(make_adapter("support", seed=1), dataset="support-data", alias="canary")
    local_reg.quarantine("support@2", reason="answers in French")
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object"}')
    local_reg.push_adapter(
        make_adapter("triage", seed=2), allow_unknown_dataset=True, schema=schema
    )
    local_reg.add_variant(
        base_dir,
        name="tiny-base-fp8",
        parent="tiny-base",
        quantization={"method": "fp8", "recipe_digest": "sha256:" + "a" * 64},
        fidelity={"size_ratio": 0.36, "failed_gates": []},
        passed=True,
        forced=False,
        pairs=[registry.PairInput("support@1", False, ("task_score",), {"task_score": 0.2})],
    )
    return local_reg


@pytest.fixture
def url(rich: LocalRegistry, settings: RegistrySettings, service: MountedServer) -> Iterator[str]:
    with service.serve(rich, settings) as served:
        yield served


READS = [
    ["ls", "--json"],
    ["ls"],
    ["show", "support", "--json"],
    ["show", "support@2", "--json"],
    ["show", "triage", "--json"],
    ["show", "tiny-base", "--json"],
    ["show", "tiny-base-fp8", "--json"],
    ["show", "support-data", "--json"],
    ["show", "support"],
    ["show", "tiny-base"],
    ["log", "--json"],
    ["log", "support", "--json"],
    ["log"],
    ["quarantine", "ls"],
    ["show", "nosuch", "--json"],
    ["show", "Bad Name"],
]


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_reads_print_the_same_on_both(args: list[str], rich: LocalRegistry, url: str) -> None:
    runner = CliRunner()
    on_directory = runner.invoke(main, [*args, "--registry", rich.location])
    over_http = runner.invoke(main, [*args, "--registry", url])
    assert over_http.exit_code == on_directory.exit_code, over_http.output
    assert over_http.output.replace(url, "LOCATION") == on_directory.output.replace(
        rich.location, "LOCATION"
    )


#: ISO times and durations: the only things two registries given the same commands differ in.
_TIMES = re.compile(
    r"\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:\d\d)?|\d{4}-\d\d-\d\d \d\d:\d\d(?::\d\d)?"
)


def _both(args: list[str], *envs: dict[str, str]) -> list[tuple[int, str, str]]:
    """``registry ARGS`` once per environment, side by side (a CLI start is ~1 s)."""
    procs = [
        subprocess.Popen(
            [REGISTRY, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for env in envs
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        done.append((proc.returncode, _TIMES.sub("TIME", out), _TIMES.sub("TIME", err)))
    return done


@pytest.mark.slow
def test_cli_commands_against_a_served_registry_match_the_directory(
    tmp_path: Path, base_dir: Path, dataset_file: Path, make_adapter: Callable[..., Path]
) -> None:
    """Two fresh registries, the same commands: one by path, one by REGISTRY_URL."""
    support, again, other = (
        make_adapter("support"),
        make_adapter("support", seed=1),
        make_adapter("helpdesk", seed=2),
    )
    commands = [
        ["push", str(support), "--dataset", "support-data"],
        ["push", str(again), "--dataset", "support-data", "--alias", "canary"],
        ["push", str(support), "--dataset", "support-data"],  # already there
        ["push", str(other), "--dataset", "nosuch"],  # refused
        ["alias", "set", "support", "production", "2"],
        ["alias", "set", "support", "production", "9"],
        ["alias", "rm", "support", "canary"],
        ["ls"],
        ["show", "support", "--json"],
        ["show", "nosuch"],
        ["log", "support", "--json"],
    ]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    base_env["REGISTRY_USER"] = "tester"
    directory, served = tmp_path / "by-path", tmp_path / "served"
    for root in (directory, served):
        with registry.open(root, settings=RegistrySettings(user="tester")) as reg:
            reg.add_base(base_dir, name="tiny-base", license="apache-2.0")
            reg.add_dataset(dataset_file, name="support-data")
    with registry_service(served, tmp_path / "serve.log") as proc:
        http_env = {**base_env, "REGISTRY_URL": proc.url}
        path_env = {**base_env, "REGISTRY_URL": str(directory)}
        for args in commands:
            want, got = _both(args, path_env, http_env)
            assert got[0] == want[0], (args, want, got)
            assert got[1] == want[1], (args, want, got)
            assert got[2].replace(http_env["REGISTRY_URL"], "LOC") == want[2].replace(
                str(directory), "LOC"
            ), (args, want, got)
