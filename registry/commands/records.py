"""Base models and datasets: `base add`, `dataset add`."""

from __future__ import annotations

from pathlib import Path

import click

from registry.commands.options import RegistryGroup, location_option, open_for_command, who_option


@click.group(cls=RegistryGroup)
def base() -> None:
    """Base models.

    Example: registry base add models/tiny-llama --name tiny-llama
    """


@base.command("add")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Name to record the base model under.")
@click.option("--license", "license_", default=None, help="License identifier.")
@location_option
@who_option
def base_add(
    directory: Path, name: str, license_: str | None, location: str | None, who: str | None
) -> None:
    """Hash and record a base model directory (config, weights, tokenizer).

    Example: registry base add models/tiny-llama --name tiny-llama --license apache-2.0
    """
    with open_for_command(location) as reg:
        record = reg.add_base(directory, name=name, license=license_, who=who, progress=None)
        click.echo(f"{record.name} {record.digest}")


@click.group(cls=RegistryGroup)
def dataset() -> None:
    """Datasets.

    Example: registry dataset add data/support.jsonl --name support-data
    """


@dataset.command("add")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Name to record the dataset under.")
@click.option("--license", "license_", default=None, help="License identifier.")
@location_option
@who_option
def dataset_add(
    file: Path, name: str, license_: str | None, location: str | None, who: str | None
) -> None:
    """Hash and record a dataset file.

    Example: registry dataset add data/support.jsonl --name support-data --license cc-by-4.0
    """
    with open_for_command(location) as reg:
        record = reg.add_dataset(file, name=name, license=license_, who=who)
        click.echo(f"{record.name} {record.digest} ({record.records} records)")
