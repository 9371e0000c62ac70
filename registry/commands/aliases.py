"""Aliases: `alias set`, `alias rm`."""

from __future__ import annotations

import click

from registry.commands.options import RegistryGroup, location_option, open_for_command, who_option
from registry.refs import parse_version


@click.group(cls=RegistryGroup)
def alias() -> None:
    """Aliases: mutable pointers such as production, canary, staging.

    Example: registry alias set support production 2
    """


@alias.command("set")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.argument("version")
@location_option
@who_option
def alias_set(
    name: str, alias_name: str, version: str, location: str | None, who: str | None
) -> None:
    """Point NAME@ALIAS at VERSION.

    Example: registry alias set support production 2
    """
    number = parse_version(version)
    with open_for_command(location) as reg:
        reg.set_alias(name, alias_name, number, who=who)
        click.echo(f"{name}@{alias_name} -> {name}@{version}")


@alias.command("rm")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@location_option
@who_option
def alias_rm(name: str, alias_name: str, location: str | None, who: str | None) -> None:
    """Delete NAME@ALIAS.

    Example: registry alias rm support canary
    """
    with open_for_command(location) as reg:
        reg.remove_alias(name, alias_name, who=who)
        click.echo(f"removed {name}@{alias_name}")
