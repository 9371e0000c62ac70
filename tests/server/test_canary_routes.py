"""The resolver's split against a real registry (no vLLM): which refs split, that a key
keeps its arm, and that a rollout's start, steps and end reach the routes on refresh."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import registry
from server.canary import sticky_key
from server.errors import GatewayError
from server.resolver import Resolver
from tests.support.synthetic import write_adapter, write_base


def make_registry(tmp_path: Path) -> Path:
    location = tmp_path / "reg"
    with registry.open(location) as reg:
        reg.add_base(write_base(tmp_path / "base"), name="tiny-base")
        for seed in range(2):
            reg.push_adapter(
                write_adapter(tmp_path / f"a{seed}" / "support", seed=seed),
                allow_unknown_dataset=True,
            )
        reg.set_alias("support", "staging", 1)
    return location


def test_split_routes(tmp_path: Path) -> None:
    location = make_registry(tmp_path)
    users = [sticky_key(f"user-{i}", None) for i in range(400)]

    async def arms(r: Resolver, model: str) -> list[tuple[str, str]]:
        return [((t := await r.resolve(model, u)).ref, t.arm) for u in users]

    async def run() -> None:
        r = Resolver(str(location))
        await r.open("tiny-base")
        try:
            assert set(await arms(r, "support")) == {("support@1", "stable")}
            with registry.open(location, create=False) as reg:
                rollout = reg.start_rollout("support", 2, steps=[30, 60])
            assert await r.refresh()  # what the gateway's refresh loop does every second
            for model in ("support", "support@production"):
                seen = await arms(r, model)
                assert set(seen) == {("support@1", "stable"), ("support@2", "canary")}
                share = sum(arm == "canary" for _, arm in seen) / len(seen)
                assert 0.2 < share < 0.4
                assert seen == await arms(r, model)  # the same key, the same arm
            for pinned in ("support@1", "support@2", "support@staging"):
                assert {t.arm for t in [await r.resolve(pinned, u) for u in users]} == {"stable"}
            before = {u for u, (_, arm) in zip(users, await arms(r, "support"), strict=True)
                      if arm == "canary"}  # fmt: skip
            with registry.open(location, create=False) as reg:
                reg.advance_rollout("support", rollout.id, 1)
            await r.refresh()
            after = {u for u, (_, arm) in zip(users, await arms(r, "support"), strict=True)
                     if arm == "canary"}  # fmt: skip
            assert before < after  # a higher weight only adds canary users
            with registry.open(location, create=False) as reg:
                reg.end_rollout("support", None, "rolled_back", reason="test")
            await r.refresh()
            assert set(await arms(r, "support")) == {("support@1", "stable")}
            unkeyed = {(await r.resolve("support")).arm for _ in range(50)}
            assert unkeyed == {"stable"}
        finally:
            await r.close()

    asyncio.run(run())


def test_unkeyed_requests_draw_per_request(tmp_path: Path) -> None:
    location = make_registry(tmp_path)

    async def run() -> set[str]:
        r = Resolver(str(location))
        await r.open("tiny-base")
        try:
            with registry.open(location, create=False) as reg:
                reg.start_rollout("support", 2, steps=[50])
            await r.refresh()
            return {(await r.resolve("support")).arm for _ in range(200)}
        finally:
            await r.close()

    assert asyncio.run(run()) == {"stable", "canary"}


def test_quarantine_refuses_the_version_and_leaves_its_canary_arm_to_stable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quarantine written by another gateway (or a person) reaches this one on refresh:
    the version is refused wherever it is named, its canary arm sends everyone to stable,
    and /v1/models stops listing it; lifting it serves it again."""
    location = make_registry(tmp_path)
    users = [sticky_key(f"user-{i}", None) for i in range(200)]

    async def outcome(r: Resolver, model: str, key: str | None = None) -> str:
        try:
            t = await r.resolve(model, key)
            return f"{t.ref}/{t.arm}"
        except GatewayError as e:
            return f"{e.status}/{e.code}"

    async def run() -> None:
        r = Resolver(str(location))
        await r.open("tiny-base")
        try:
            with registry.open(location, create=False) as reg:
                reg.start_rollout("support", 2, steps=[50])
            await r.refresh()
            assert {await outcome(r, "support", u) for u in users} == {
                "support@1/stable",
                "support@2/canary",
            }
            with registry.open(location, create=False) as reg:
                reg.quarantine("support@2", reason="answers degenerately", who="gw-2")
            assert await r.refresh()
            assert {await outcome(r, "support", u) for u in users} == {"support@1/stable"}
            assert await outcome(r, "support@2") == "403/adapter_quarantined"
            ids = [i for i, _ in await r.model_ids()]
            assert "support@2" not in ids and "support@1" in ids
            with registry.open(location, create=False) as reg:
                reg.lift_quarantine("support@2")
            await r.refresh()
            assert await outcome(r, "support@2") == "support@2/stable"
            # this gateway's own quarantine holds even where the registry cannot be written
            target = await r.resolve("support@1")

            def read_only(ref: str, **_: object) -> None:
                raise registry.ReadOnlyRegistryError("read-only mount")

            monkeypatch.setattr(r._reg, "quarantine", read_only)
            await r.quarantine(target, "corrupted the engine")
            with registry.open(location, create=False) as reg:
                assert reg.quarantined() == []  # the write failed
            assert await outcome(r, "support@1") == "403/adapter_quarantined"
            assert await outcome(r, "support@2") == "support@2/stable"
        finally:
            await r.close()

    asyncio.run(run())
