"""The ``registry`` command line: thin click commands over :class:`registry.Registry`.

Every command takes ``--registry LOCATION`` (else ``REGISTRY_URL``, else the per-user
data directory). Only ``registry init`` creates a registry; every other verb on a missing
or foreign location says what is wrong. Registry errors become click errors whose exit
status is the error class's own ``exit_code`` (the table is :mod:`registry.errors`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import click

from registry import errors as e
from registry import render
from registry.blob_location import record_blobs
from registry.durations import parse_duration
from registry.hooks import after_push_hooks, runs_here
from registry.location import location_path, open_local, open_registry, scheme
from registry.pending import PendingPair, pending_for
from registry.protocol import Registry
from registry.records import AdapterVersion, BaseModel
from registry.refs import parse_version
from registry.server_location import open_store, without_password
from registry.service.commands import hash_token_cmd, serve_cmd
from registry.settings import RegistrySettings

F = TypeVar("F", bound=Callable[..., Any])


def exit_code(exc: e.RegistryError) -> int:
    """The exit status of ``exc``: its class's own ``exit_code``."""
    return exc.exit_code


class RegistryGroup(click.Group):
    """A group that turns the errors it names (each class carries its ``exit_code``) into
    click errors exiting with that code. ``deploy`` and ``quantize`` subclass it to add
    their own error classes to the registry's."""

    exits_with_code: ClassVar[tuple[type[Exception], ...]] = (e.RegistryError,)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except self.exits_with_code as exc:
            error = click.ClickException(str(exc))
            setattr(error, "exit_code", getattr(exc, "exit_code"))  # noqa: B009, B010
            raise error from exc


def location_option(func: F) -> F:
    return click.option(
        "--registry",
        "location",
        metavar="LOCATION",
        default=None,
        help="Registry directory (default: $REGISTRY_URL, else the per-user data dir).",
    )(func)


def who_option(func: F) -> F:
    return click.option("--who", default=None, help="Who to record (default: your user).")(func)


_GROUP_LOCATION = "loraport.registry"


def remember_location(ctx: click.Context, location: str | None) -> None:
    """Keep a group's ``--registry`` for its verbs (``registry --registry X push ...``);
    click shares ``meta`` with every context under the group."""
    ctx.meta[_GROUP_LOCATION] = location


def command_location(location: str | None) -> str | None:
    """The location a command names: its own ``--registry``, else its group's
    (:func:`remember_location`); None leaves it to ``REGISTRY_URL`` / the default."""
    ctx = click.get_current_context(silent=True)
    if location is None and ctx is not None:
        return ctx.meta.get(_GROUP_LOCATION)
    return location


def open_for_command(location: str | None, *, create: bool = False) -> Registry:
    """Open the registry a command names (:func:`command_location`, else ``REGISTRY_URL``,
    else the per-user default). Every CLI (registry, deploy, quantize) opens its registry
    here."""
    return open_registry(command_location(location), create=create)


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


@main.command()
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


@main.command()
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


@main.group(cls=RegistryGroup)
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


@main.group(cls=RegistryGroup)
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


def _parse_meta(pairs: tuple[str, ...]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--meta")
        meta[key] = value
    return meta


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Adapter name (default: the directory's name).")
@click.option("--base", "base_ref", default=None, help="Base model ref (default: the only one).")
@click.option(
    "--dataset",
    "dataset_ref",
    default=None,
    metavar="REF|PATH",
    help="A registered dataset's name, or a file to record, written as a path with a '/' "
    "or a leading '.' (./data.jsonl): a bare name is never taken for a file.",
)
@click.option("--allow-unknown-dataset", is_flag=True, help="Record the dataset as unknown.")
@click.option("--alias", default=None, help="Point this alias at the pushed version.")
@click.option("--schema", type=click.Path(path_type=Path), default=None, help="Output schema.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Training metadata.")
@click.option(
    "--code",
    type=click.Path(path_type=Path),
    default=None,
    help="A directory in the training code's git work tree (default: the adapter's own).",
)
@click.option("--git-sha", default=None, help="The training code's commit, given by hand.")
@click.option(
    "--no-eval",
    is_flag=True,
    help="Do not measure the version on its base's quantized variants now; the gateway "
    "refuses it there until `quantize eval --pending` has.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the result (and the pairs left) as JSON."
)
@location_option
@who_option
def push(
    directory: Path,
    name: str | None,
    base_ref: str | None,
    dataset_ref: str | None,
    allow_unknown_dataset: bool,
    alias: str | None,
    schema: Path | None,
    meta: tuple[str, ...],
    code: Path | None,
    git_sha: str | None,
    no_eval: bool,
    as_json: bool,
    location: str | None,
    who: str | None,
) -> None:
    """Validate a PEFT LoRA directory and record it as a new version.

    The first version of a name takes the production alias (plain NAME); later versions
    reach NAME only when the alias moves (`registry alias set NAME production N`).
    When the base has quantized variants, the version is then measured on each (as
    `quantize eval` does; minutes on a CPU) so the gateway may serve it there; a failed
    measurement leaves the push in place and says what to run. On a registry service
    (http://) the pairs are left for `quantize eval --pending`, and the push says how
    many (--json: its "pending_pairs").

    Example: registry push adapters/support --base tiny-llama --dataset data/support.jsonl
    --alias canary --meta epochs=3
    """
    with open_for_command(location) as reg:
        result = reg.push_adapter(
            directory,
            name=name,
            base=base_ref,
            dataset=dataset_ref,
            allow_unknown_dataset=allow_unknown_dataset,
            alias=alias,
            schema=schema,
            meta=_parse_meta(meta),
            code=code,
            git_sha=git_sha,
            who=who,
            progress=None,
        )
        note = "" if result.created else " (already existed)"
        if not as_json:
            click.echo(f"{result.adapter.ref} {result.adapter.digest}{note}")
        hooks_ran = not no_eval and runs_here(reg.location)
        if hooks_ran:
            _after_push(reg, result.adapter)
        left = pending_for(reg, result.adapter)
        if left and not hooks_ran:
            click.echo(f"registry: {_left_for_catch_up(left)}", err=True)
        if as_json:
            click.echo(json.dumps(_push_json(result.adapter, result.created, left), indent=2))


def _left_for_catch_up(left: list[PendingPair]) -> str:
    """The note a push prints when it leaves pairs unmeasured."""
    ref = left[0].adapter
    on = ", ".join(p.variant for p in left)
    return (
        f"{len(left)} pair(s) left for `quantize eval --pending`: {ref} on {on} (the gateway "
        f"refuses {ref} there until they are measured)"
    )


def _push_json(adapter: AdapterVersion, created: bool, left: list[PendingPair]) -> dict[str, Any]:
    """What `registry push --json` prints: the version, and the pairs still unmeasured."""
    return {
        "ref": adapter.ref,
        "digest": str(adapter.digest),
        "created": created,
        "pending_pairs": [{"adapter": p.adapter, "variant": p.variant} for p in left],
    }


def _after_push(reg: Registry, adapter: AdapterVersion) -> None:
    """Run the installed after-push hooks; a failing hook warns, the push stands."""
    for hook in after_push_hooks():
        try:
            hook.run(reg, adapter, lambda line: click.echo(f"registry: {line}", err=True))
        except Exception as exc:  # a hook's failure must not read as a failed push
            click.echo(
                f"registry: warning: {adapter.ref} is pushed, but after-push step "
                f"{hook.name!r} failed: {exc}",
                err=True,
            )


@main.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@location_option
def ls(as_json: bool, location: str | None) -> None:
    """List base models, datasets and live adapter versions.

    Example: registry ls --json
    """
    with open_for_command(location) as reg:
        records: list[render.Record] = [*reg.list_bases(), *reg.list_datasets()]
        records += reg.list_adapters()
        if as_json:
            click.echo(json.dumps([render.to_json(r) for r in records], indent=2))
        else:
            click.echo(render.table(records))


@main.group(cls=RegistryGroup)
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


@main.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@location_option
def show(ref: str, as_json: bool, location: str | None) -> None:
    """Show one base model, dataset or adapter version.

    Example: registry show support@production --json
    """
    with open_for_command(location) as reg:
        kind = reg.resolve(ref).kind
        record: render.Record = (
            reg.adapter(ref)
            if kind == "adapter"
            else reg.base(ref)
            if kind == "base"
            else reg.dataset(ref)
        )
        extra = _variant_extra(reg, record)
        if as_json:
            click.echo(json.dumps({**render.to_json(record), **extra}, indent=2))
        else:
            click.echo(render.describe(record) + render.describe_extra(extra))


def _variant_extra(reg: Registry, record: render.Record) -> dict[str, Any]:
    """What ``show`` adds for variants: a base's lineage and variants, an adapter's pairs."""
    if isinstance(record, BaseModel):
        return render.variant_json(reg.variant(record.name), reg.variants_of(record.name))
    if isinstance(record, AdapterVersion):
        return render.pairs_json(reg.pairs_of(record))
    return {}


@main.command()
@click.argument("ref")
@click.argument("dest", type=click.Path(path_type=Path))
@location_option
def pull(ref: str, dest: Path, location: str | None) -> None:
    """Rebuild a version's directory at DEST, verifying every file.

    Example: registry pull support@production ./support
    """
    with open_for_command(location) as reg:
        resolved = reg.resolve(ref)
        path = reg.pull(ref, dest, progress=None)
        click.echo(f"{path} {resolved.digest}")


@main.group(cls=RegistryGroup)
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


@main.command()
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


@main.command()
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


@main.command()
@click.argument("ref")
@location_option
@who_option
def rm(ref: str, location: str | None, who: str | None) -> None:
    """Remove a version (soft delete); refused while an alias points at it.

    Example: registry rm support@1
    """
    with open_for_command(location) as reg:
        target = reg.remove(ref, who=who)
        shown = target.name if target.version is None else f"{target.name}@{target.version}"
        click.echo(f"removed {target.kind} {shown}")


@main.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@location_option
def log(name: str | None, as_json: bool, location: str | None) -> None:
    """Show the event log (pushes, alias moves, removals), oldest first.

    Example: registry log support
    """
    with open_for_command(location) as reg:
        for event in reg.events(name):
            if as_json:
                click.echo(json.dumps(render.event_json(event), sort_keys=True))
            else:
                click.echo(render.event_line(event))


main.add_command(serve_cmd)
main.add_command(hash_token_cmd)
