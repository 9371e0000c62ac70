"""The ``registry`` command line: thin click commands over :class:`registry.Registry`.

Every command takes ``--registry LOCATION`` (else ``REGISTRY_URL``, else the per-user
data directory). Only ``registry init`` creates a registry; every other verb on a missing
or foreign location says what is wrong. Registry errors become click errors whose exit
status is the error class's own ``exit_code`` (the table is :mod:`registry.errors`).
The verbs live in :mod:`registry.commands`, one module per kind of thing they act on.
"""

from __future__ import annotations

import click

from registry.commands import aliases, quarantine, records, storage, versions
from registry.commands.options import RegistryGroup, remember_location
from registry.service.commands import hash_token_cmd, serve_cmd

__all__ = ["main"]


@click.group(cls=RegistryGroup)
@click.version_option(package_name="loraport")
@click.option(
    "--registry",
    "location",
    metavar="LOCATION",
    default=None,
    help="Registry for every verb (default: $REGISTRY_URL, else the per-user data dir).",
)
@click.pass_context
def main(ctx: click.Context, location: str | None) -> None:
    """loraport registry: base models, datasets and LoRA adapter versions.

    Example: registry --registry ./reg push examples/adapters/extract --base tiny-llama
    """
    remember_location(ctx, location)


for command in (
    storage.init, storage.migrate, storage.verify, storage.gc,
    records.base, records.dataset,
    versions.push, versions.ls, versions.show, versions.pull, versions.rm, versions.log,
    aliases.alias, quarantine.quarantine, serve_cmd, hash_token_cmd,
):  # fmt: skip
    main.add_command(command)
