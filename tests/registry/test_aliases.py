"""The rules for moving ``production``: never by hand during a rollout, never onto
another base model than the one production serves now (registry/aliases.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import registry
from registry.cli import main
from registry.protocol import Registry
from tests.support.synthetic import write_base

MakeAdapter = Callable[..., Path]


@pytest.fixture
def zt(reg: Registry, make_adapter: MakeAdapter) -> Registry:
    """``zt`` with versions 1 (production), 2 and 3, and a rollout zt@1 -> zt@2 at 10%."""
    for seed in range(3):
        reg.push_adapter(make_adapter("zt", seed=seed), dataset="support-data")
    reg.start_rollout("zt", 2, steps=[10, 50, 100])
    return reg


@pytest.mark.parametrize(
    "move",
    [
        lambda r: r.remove_alias("zt", "production"),
        lambda r: r.set_alias("zt", "production", 2),
        lambda r: r.set_alias("zt", "production", 3),
    ],
    ids=["rm", "set-to-canary", "set-to-other"],
)
def test_a_hand_move_of_production_during_a_rollout_is_refused(
    zt: Registry, move: Callable[[Registry], None]
) -> None:
    """Was: both exited 0 and stranded the rollout (all traffic on zt@2 as `stable`)."""
    token = zt.change_token()
    with pytest.raises(registry.RolloutConflictError) as caught:
        move(zt)
    message = str(caught.value)
    assert "deploy abort zt" in message and "deploy promote zt" in message
    assert "zt@1 -> zt@2 at 10%" in message
    assert zt.aliases("zt") == {"production": 1} and zt.change_token() == token
    assert zt.rollout("zt") is not None and zt.rollout("zt").state == "active"  # type: ignore[union-attr]


def test_during_a_rollout_other_aliases_move_and_a_no_op_passes(zt: Registry) -> None:
    zt.set_alias("zt", "staging", 3)
    zt.remove_alias("zt", "staging")
    zt.set_alias("zt", "production", 1)  # already there: not a move
    assert zt.aliases("zt") == {"production": 1}


def test_push_with_alias_production_during_a_rollout_is_refused(
    zt: Registry, make_adapter: MakeAdapter
) -> None:
    with pytest.raises(registry.RolloutConflictError, match="deploy abort zt"):
        zt.push_adapter(make_adapter("zt", seed=9), dataset="support-data", alias="production")
    assert [v.version for v in zt.list_adapters("zt")] == [1, 2, 3]  # nothing recorded


def test_the_rollouts_own_promotion_and_abort_still_move_production(zt: Registry) -> None:
    zt.end_rollout("zt", None, "promoted", reason="judged good")
    assert zt.aliases("zt") == {"production": 2}
    zt.set_alias("zt", "production", 3)  # no rollout now: a person may move it again
    zt.start_rollout("zt", 1, steps=[10])
    zt.end_rollout("zt", None, "aborted", reason="no")
    zt.remove_alias("zt", "production")
    assert zt.aliases("zt") == {}


@pytest.fixture
def mixed(reg: Registry, make_adapter: MakeAdapter, tmp_path: Path) -> Registry:
    """``support`` 1 (production) and 2 on tiny-base, 3 on other-base."""
    reg.push_adapter(make_adapter("support"), dataset="support-data")
    reg.push_adapter(make_adapter("support", seed=1), dataset="support-data")
    reg.add_base(write_base(tmp_path / "other", random=True), name="other-base")
    reg.push_adapter(make_adapter("support", seed=5), base="other-base", dataset="support-data")
    return reg


def test_production_onto_another_base_is_refused(mixed: Registry) -> None:
    """Was: exit 0, and every gateway then answered 400 adapter_base_mismatch."""
    with pytest.raises(registry.BaseMismatchError) as caught:
        mixed.set_alias("support", "production", 3)
    message = str(caught.value)
    assert "'other-base'" in message and "'tiny-base'" in message
    assert "registry alias rm support production" in message
    assert mixed.aliases("support") == {"production": 1}
    mixed.set_alias("support", "production", 2)  # same base: fine
    mixed.set_alias("support", "staging", 3)  # other aliases are not production
    assert mixed.aliases("support") == {"production": 2, "staging": 3}


def test_push_with_alias_production_onto_another_base_is_refused(
    mixed: Registry, make_adapter: MakeAdapter
) -> None:
    with pytest.raises(registry.BaseMismatchError, match="other-base"):
        mixed.push_adapter(
            make_adapter("support", seed=6), base="other-base", dataset="support-data",
            alias="production",
        )  # fmt: skip
    assert [v.version for v in mixed.list_adapters("support")] == [1, 2, 3]


def test_a_deliberate_base_switch_goes_through_removing_production(mixed: Registry) -> None:
    mixed.remove_alias("support", "production")
    mixed.set_alias("support", "production", 3)
    assert mixed.resolve("support").version == 3
    with pytest.raises(registry.BaseMismatchError):
        mixed.set_alias("support", "production", 1)  # and now the rule guards the new base


def test_deploy_and_alias_set_share_the_rule(mixed: Registry) -> None:
    """One rule: the same class, the same comparison, for a canary and for production."""
    with pytest.raises(registry.BaseMismatchError, match="cannot share traffic"):
        mixed.start_rollout("support", 3, steps=[10])
    with pytest.raises(registry.BaseMismatchError, match="would refuse support@3"):
        mixed.set_alias("support", "production", 3)


def test_the_cli_exit_codes(zt: Registry) -> None:
    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, [*args, "--registry", zt.location])
        return result.exit_code, result.output

    code, out = run("alias", "rm", "zt", "production")
    assert code == 30 and "deploy abort zt" in out
    code, out = run("alias", "set", "zt", "production", "2")
    assert code == 30 and "deploy promote zt" in out


@pytest.mark.parametrize(
    ("name", "alias"), [("bad name", "x"), ("zt", "1x"), ("zt", ""), ("", "p")]
)
def test_alias_rm_checks_its_arguments(zt: Registry, name: str, alias: str) -> None:
    """Non-canonical names and aliases are invalid refs (exit 4), not 'no such alias'."""
    with pytest.raises(registry.InvalidRefError):
        zt.remove_alias(name, alias)


@pytest.fixture
def zq(reg: Registry, make_adapter: MakeAdapter) -> Registry:
    """``zq`` 1 (production), 2 quarantined, 3 clean; no rollout."""
    for seed in range(3):
        reg.push_adapter(make_adapter("zq", seed=seed), dataset="support-data")
    reg.quarantine("zq@2", reason="answered '' and blanked the engine", who="gw-1")
    return reg


@pytest.mark.parametrize(
    "move",
    [
        lambda r: r.set_alias("zq", "production", 2),
        lambda r: r.start_rollout("zq", 2, steps=[10, 100]),
    ],
    ids=["alias-set", "rollout-start"],
)
def test_production_or_a_canary_onto_a_quarantined_version_is_refused(
    zq: Registry, move: Callable[[Registry], object]
) -> None:
    token = zq.change_token()
    with pytest.raises(registry.QuarantinedError) as caught:
        move(zq)
    message = str(caught.value)
    assert "answered '' and blanked the engine" in message
    assert "registry quarantine rm zq@2" in message
    assert zq.aliases("zq") == {"production": 1} and zq.rollout("zq") is None
    assert zq.change_token() == token
    zq.set_alias("zq", "staging", 2)  # other aliases move freely
    zq.lift_quarantine("zq@2")
    move(zq)  # lifted: allowed again


def test_a_canary_quarantined_during_its_rollout_is_not_promoted(zq: Registry) -> None:
    zq.start_rollout("zq", 3, steps=[10, 100])
    zq.quarantine("zq@3", reason="loops", who="gw-2")
    with pytest.raises(registry.QuarantinedError, match="registry quarantine rm zq@3"):
        zq.end_rollout("zq", None, "promoted", reason="by hand")
    assert zq.aliases("zq")["production"] == 1
    zq.end_rollout("zq", None, "rolled_back", reason="canary quarantined")
    assert zq.aliases("zq")["production"] == 1


def test_cli_alias_set_production_onto_a_quarantined_version(zq: Registry) -> None:
    result = CliRunner().invoke(
        main, ["--registry", zq.location, "alias", "set", "zq", "production", "2"]
    )
    assert result.exit_code == registry.QuarantinedError.exit_code == 36
    assert "quarantined (answered '' and blanked the engine" in result.output
    assert "registry quarantine rm zq@2" in result.output


@pytest.mark.parametrize("alias", ["Production", "PRODUCTION", "Staging"])
def test_an_alias_differing_only_in_case_is_refused(zq: Registry, alias: str) -> None:
    """Was: `alias set zq Production 2` exited 0, and plain `zq` kept serving production
    (aliases are case-sensitive), past the production rules and looking like a move."""
    zq.set_alias("zq", "staging", 3)
    token = zq.change_token()
    with pytest.raises(registry.InvalidRefError, match=f"write {alias.lower()}"):
        zq.set_alias("zq", alias, 2)
    assert zq.change_token() == token
    assert zq.aliases("zq") == {"production": 1, "staging": 3}


def test_push_with_an_alias_differing_only_in_case_is_refused(
    zq: Registry, make_adapter: MakeAdapter
) -> None:
    with pytest.raises(registry.InvalidRefError, match="write production"):
        zq.push_adapter(make_adapter("zq", seed=9), dataset="support-data", alias="Production")
    assert [v.version for v in zq.list_adapters("zq")] == [1, 2, 3]  # nothing recorded
