"""Adapter versions: `push`, `ls`, `show`, `pull`, `rm`, `log`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from registry import render
from registry.commands.options import location_option, open_for_command, who_option
from registry.hooks import after_push_hooks, runs_here
from registry.pending import PendingPair, pending_for
from registry.protocol import Registry
from registry.records import AdapterVersion, BaseModel


def _parse_meta(pairs: tuple[str, ...]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--meta")
        meta[key] = value
    return meta


@click.command()
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


@click.command("ls")
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


@click.command()
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


@click.command()
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


@click.command()
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


@click.command()
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
