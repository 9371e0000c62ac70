"""Quarantined adapter versions: `quarantine add`, `quarantine rm`, `quarantine ls`."""

from __future__ import annotations

import json

import click

from registry import render
from registry.commands.options import RegistryGroup, location_option, open_for_command, who_option


@click.group(cls=RegistryGroup)
def quarantine() -> None:
    """Adapter versions every gateway refuses (error code adapter_quarantined).

    A gateway quarantines a version that corrupted its engine or answers degenerately;
    only a person lifts it, after looking at why (`registry show REF`).

    Example: registry quarantine ls
    """


@quarantine.command("add")
@click.argument("ref")
@click.option("--reason", required=True, help="Why: what the adapter did.")
@location_option
@who_option
def quarantine_add(ref: str, reason: str, location: str | None, who: str | None) -> None:
    """Quarantine the adapter version REF names (a version already quarantined keeps
    its first reason).

    Example: registry quarantine add support@3 --reason "answers in the wrong language"
    """
    with open_for_command(location) as reg:
        before = reg.adapter(ref).quarantine
        record = reg.quarantine(ref, reason=reason, who=who)
        q = record.quarantine
        assert q is not None
        if before is None:
            click.echo(f"{record.ref} quarantined: {q.reason}")
        else:
            click.echo(
                f"{record.ref} was already quarantined ({q.at} by {q.who}): {q.reason}; "
                "the first reason stands"
            )


@quarantine.command("rm")
@click.argument("ref")
@location_option
@who_option
def quarantine_rm(ref: str, location: str | None, who: str | None) -> None:
    """Lift the quarantine of the adapter version REF names; gateways serve it again
    within seconds.

    Example: registry quarantine rm support@3
    """
    with open_for_command(location) as reg:
        record = reg.lift_quarantine(ref, who=who)
        click.echo(f"{record.ref} is no longer quarantined")


@quarantine.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@location_option
def quarantine_ls(as_json: bool, location: str | None) -> None:
    """List quarantined adapter versions with their reasons.

    Example: registry quarantine ls --json
    """
    with open_for_command(location) as reg:
        records = reg.quarantined()
        if as_json:
            click.echo(json.dumps([render.to_json(r) for r in records], indent=2))
            return
        for r in records:
            assert r.quarantine is not None
            click.echo(f"{r.ref}  {r.quarantine.at}  {r.quarantine.who}  {r.quarantine.reason}")
        if not records:
            click.echo("no adapter version is quarantined")
