"""The gateway's registry side (server/resolver.py) on two `registry serve` processes of
one registry (``REGISTRY_URL=http://a,http://b``): one is killed with SIGKILL, and new
names still resolve, through the other."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import registry
from registry.location import open_local
from server.resolver import Resolver
from tests.support.registry_service import registry_service
from tests.support.served_registry import build_registry
from tests.support.synthetic import write_adapter


def _push(root: Path, name: str, work: Path) -> None:
    settings = registry.RegistrySettings(user="tester")
    with open_local(root, settings=settings, create=False) as reg:
        reg.push_adapter(write_adapter(work / name), dataset="support-data")


def test_new_names_resolve_through_the_other_server(tmp_path: Path) -> None:
    root = build_registry(tmp_path / "reg", tmp_path)
    with (
        registry_service(root, tmp_path / "a.log") as first,
        registry_service(root, tmp_path / "b.log") as second,
    ):

        async def run() -> tuple[str, str]:
            resolver = Resolver(f"{first.url},{second.url}", watch_s=1.0)
            await resolver.open(None)
            try:
                _push(root, "support", tmp_path)
                await resolver.refresh()
                before = (await resolver.resolve("support")).ref
                os.killpg(first.popen.pid, signal.SIGKILL)
                first.popen.wait()
                _push(root, "billing", tmp_path)
                await resolver.refresh()  # what its watch does, through the live server
                return before, (await resolver.resolve("billing")).ref
            finally:
                await resolver.close()

        assert asyncio.run(run()) == ("support@1", "billing@1")
