"""Where a registry lives and whether its blobs are whole: `init`, `migrate`, `verify`, `gc`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from registry import errors as e
from registry import render
from registry.blob_location import record_blobs
from registry.commands.options import command_location, location_option, open_for_command
from registry.durations import parse_duration
from registry.location import location_path, open_local, scheme
from registry.server_location import open_store, without_password
from registry.settings import RegistrySettings


@click.command()
@location_option
@click.option(
    "--store",
    metavar="postgresql://USER@HOST:PORT/DB",
    default=None,
    help="Keep the records in this PostgreSQL database (created empty beforehand); with "
    "--blobs, what many `registry serve` processes share. Default: a registry directory.",
)
@click.option(
    "--blobs",
    "blobs",
    metavar="s3://BUCKET/PREFIX",
    default=None,
    help="Keep the blobs in S3-compatible object storage (endpoint and credentials from "
    "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...); default: blobs/ in the registry directory.",
)
def init(location: str | None, store: str | None, blobs: str | None) -> None:
    """Create a registry in a new or empty directory or database (or migrate one).

    Example: registry init --registry ./reg --blobs s3://models/loraport

    Example: registry init --store postgresql://loraport@db/loraport --blobs s3://models/reg
    """
    given = command_location(location)
    if given and scheme(given) == "http":
        raise e.UnsupportedLocationError(
            f"{given} is a registry service: its registry is created where it runs "
            "(`registry init --registry DIR`, then `registry serve --registry DIR` there)"
        )
    if store is None and given and scheme(given) == "postgresql":
        store = given
    elif store is not None and location is not None:
        raise e.UnsupportedLocationError("give --registry DIR or --store URL, not both")
    if store is not None:
        if blobs is None:
            raise e.UnsupportedLocationError(
                "a registry in PostgreSQL needs somewhere for its blobs: add "
                "--blobs s3://BUCKET/PREFIX"
            )
        with open_store(store, blobs, create=True) as reg:
            click.echo(f"registry ready at {reg.location} (blobs in {blobs})")
        return
    if blobs is not None:
        record_blobs(location_path(given, RegistrySettings()), blobs)
    with open_for_command(location, create=True) as reg:
        where = f" (blobs in {blobs})" if blobs is not None else ""
        click.echo(f"registry ready at {reg.location}{where}")


@click.command()
@location_option
@click.option(
    "--to",
    "to",
    required=True,
    metavar="DIR | postgresql://USER@HOST:PORT/DB",
    help="A new or empty directory, or an empty PostgreSQL database (with --blobs).",
)
@click.option(
    "--blobs",
    "blobs",
    metavar="s3://BUCKET/PREFIX",
    default=None,
    help="Put the new registry's blobs in S3-compatible object storage (as `init --blobs`); "
    "default: blobs/ in DIR. Required with a postgresql:// --to.",
)
def migrate(location: str | None, to: str, blobs: str | None) -> None:
    """Copy a registry directory, every record and blob, to a new location, verified.

    Example: registry migrate --registry ./reg --to /srv/reg --blobs s3://models/loraport

    Example: registry migrate --registry ./reg --to postgresql://loraport@db/loraport
    --blobs s3://models/loraport
    """
    from registry.migrate import migrate as run_migration
    from registry.migrate import migrate_to_store

    settings = RegistrySettings()
    given = command_location(location)
    if given and scheme(given) == "http":
        raise e.UnsupportedLocationError(
            f"{given} is a registry service: migrate the directory it serves, where it runs"
        )
    if given and scheme(given) == "postgresql":
        raise e.UnsupportedLocationError(
            f"registry migrate copies from a registry directory; {given} keeps its records "
            "in PostgreSQL (back it up with pg_dump instead)"
        )
    target = scheme(to)
    if target == "http":
        raise e.UnsupportedLocationError(
            f"--to {to}: migrate into a directory (with --blobs s3://... for object storage) "
            "or a postgresql:// database, then serve that with `registry serve`"
        )
    if target == "postgresql" and blobs is None:
        raise e.UnsupportedLocationError(
            f"--to {without_password(to)}: a registry in PostgreSQL needs somewhere for its "
            "blobs: add --blobs s3://BUCKET/PREFIX"
        )
    with (
        open_local(location_path(given, settings), settings=settings, create=False) as reg,
        _blob_progress() as on_blob,
    ):
        if target == "postgresql":
            report = migrate_to_store(reg, to, blobs=blobs, settings=settings, on_blob=on_blob)
            shown = without_password(to)
        else:
            dest = location_path(to, settings)
            report = run_migration(reg, dest, blobs=blobs, settings=settings, on_blob=on_blob)
            shown = to
    click.echo(
        f"copied {report.copied} blob(s), {report.copied_bytes} bytes "
        f"({report.present} already there) and every record to {shown}"
    )
    for line in render.verify_lines(report.verify):
        click.echo(line)
    if not report.verify.ok:
        raise e.IntegrityError(f"the migrated registry at {shown} failed verify")


@contextmanager
def _blob_progress() -> Iterator[Callable[[int, int], None] | None]:
    """A bar of blobs copied, on stderr when it is a terminal (else nothing)."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(desc="blobs", unit="blob", file=sys.stderr) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield advance


@click.command()
@click.argument("ref", required=False)
@click.option("--gc", is_flag=True, help="Delete orphan blobs and stale temp files.")
@click.option("--grace", default=3600.0, show_default=True, help="Seconds an orphan must age.")
@location_option
def verify(ref: str | None, gc: bool, grace: float, location: str | None) -> None:
    """Re-hash stored blobs (all, or REF's); exit 12 on damage.

    Example: registry verify support@2
    """
    with open_for_command(location) as reg:
        report = reg.verify(ref, gc=gc, gc_grace_s=grace)
    for line in render.verify_lines(report):
        click.echo(line)
    if not report.ok:
        raise e.IntegrityError(f"verify found {len(report.errors)} problem(s)")


@click.command()
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    help="Keep orphans younger than this (a write in flight): 90s, 30m, 1h, 2d, or 0.",
)
@location_option
def gc(grace: str, location: str | None) -> None:
    """Remove blobs no record references, and the temp files and unfinished uploads of
    killed writes, once older than the grace period (directory or S3 blobs alike).

    Example: registry gc --grace 1h
    """
    seconds = parse_duration(grace)
    with open_for_command(location) as reg:
        report = reg.gc(grace_s=seconds)
    for line in render.gc_lines(report, grace):
        click.echo(line)
