"""The ``quantize`` command line: thin click commands over :mod:`quantize.stage` and
:mod:`quantize.merge`.

``quantize`` runs in the main environment; the llm-compressor work runs in
``.venv-quantize`` as a subprocess (docs/quantize.md says why). Errors exit with their
class's own code: the stage's (:mod:`quantize.errors`) or the registry's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from quantize.errors import QuantizeError
from quantize.fidelity import TASK_KINDS
from quantize.merge import merge
from quantize.pending import eval_pending
from quantize.progress import Relay
from quantize.recipes import METHODS, RecipeError
from quantize.register import Outcome
from quantize.settings import QuantizeSettings
from quantize.stage import eval_pairs, run
from registry import RegistryError
from registry.commands.options import RegistryGroup, location_option, open_for_command, who_option


class QuantizeGroup(RegistryGroup):
    """Turns the stage's and the registry's errors into exits with their own codes; a bad
    recipe is a usage error."""

    exits_with_code = (QuantizeError, RegistryError)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RecipeError as exc:
            raise click.UsageError(str(exc)) from exc


@click.group(cls=QuantizeGroup)
@click.version_option(package_name="loraport")
def main() -> None:
    """loraport quantize: AWQ, GPTQ and FP8 variants of a registered base model.

    Example: quantize run tiny-llama --method fp8 --registry ./reg
    """


F = TypeVar("F", bound=Callable[..., Any])


def where_and_who(func: F) -> F:
    """``--registry LOCATION`` and ``--who``, the same options every ``registry`` verb takes."""
    return location_option(who_option(func))


def _tasks(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    tasks: dict[str, str] = {}
    for value in values:
        adapter, sep, kind = value.partition("=")
        if not sep or not adapter or kind not in TASK_KINDS:
            raise click.BadParameter(
                f"{value!r}: give ADAPTER=KIND with KIND one of {', '.join(TASK_KINDS)} "
                "(e.g. --task triage=label --task extract=fields)",
                ctx,
                param,
            )
        tasks[adapter] = kind
    return tasks


def task_option(func: F) -> F:
    """``--task ADAPTER=KIND``: score that adapter's answers (added to ``QUANTIZE_TASKS``)."""
    return click.option(
        "--task",
        "tasks",
        multiple=True,
        callback=_tasks,
        metavar="ADAPTER=KIND",
        help="Give ADAPTER a task score: fields (JSON equal to the eval row's fields) or "
        "label (the row's label). Repeatable; adds to QUANTIZE_TASKS.",
    )(func)


def eval_set_option(func: F) -> F:
    """``--eval-set FILE``: the eval set to measure on (else ``QUANTIZE_EVAL_FILE``)."""
    return click.option(
        "--eval-set",
        "eval_set",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="JSON-lines eval set (messages + reference answers); else QUANTIZE_EVAL_FILE.",
    )(func)


def _settings(tasks: dict[str, str], eval_set: Path | None) -> QuantizeSettings:
    """The environment's settings, with the command line's eval set and tasks added."""
    env = QuantizeSettings()
    update: dict[str, Any] = {"tasks": {**env.tasks, **tasks}}
    if eval_set is not None:
        update["eval_file"] = eval_set
    return env.model_copy(update=update)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")(func)


def _echo_outcome(outcome: Outcome, as_json: bool, figures_line: str) -> None:
    """The registered variant: as JSON, or its name, digest, gate state and figures."""
    assert outcome.variant is not None
    if as_json:
        click.echo(json.dumps(_outcome_json(outcome), indent=2))
        return
    verdict = outcome.verdict
    state = "passed" if verdict.passed else "FORCED past " + ", ".join(verdict.failed)
    click.echo(f"{outcome.variant.name} {outcome.variant.digest} ({state})")
    click.echo(figures_line)


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    """What `--json` prints for a registered variant or merged deployment."""
    assert outcome.variant is not None
    return {
        "name": outcome.variant.name,
        "digest": outcome.variant.digest,
        "quantization": outcome.quantization,
        "fidelity": outcome.fidelity,
        "pairs": [
            {"adapter": p.adapter, "passed": p.passed, "failed_gates": p.failed_gates}
            for p in outcome.pairs
        ],
    }


@contextmanager
def _progress() -> Iterator[Relay]:
    """The stage's progress on stderr: a bar over the evaluation on a terminal."""
    relay = Relay(lambda line: click.echo(f"quantize: {line}", err=True))
    try:
        yield relay
    finally:
        relay.close()


@main.command("run")
@click.argument("base_ref")
@click.option("--method", type=click.Choice(METHODS), required=True, help="Scheme to apply.")
@click.option("--calibration", default=None, help="Calibration dataset ref (awq, gptq).")
@click.option("--name", default=None, help="Variant name (default: <base>-<method>).")
@click.option("--force", is_flag=True, help="Register even if the fidelity gate fails.")
@task_option
@eval_set_option
@where_and_who
@json_option
def run_cmd(
    base_ref: str,
    method: str,
    calibration: str | None,
    name: str | None,
    force: bool,
    tasks: dict[str, str],
    eval_set: Path | None,
    location: str | None,
    who: str | None,
    as_json: bool,
) -> None:
    """Quantize BASE_REF, measure it against its parent, register it if it passes.

    The variant is named <base>-<method> unless --name; every adapter pushed against the
    base is evaluated on it, and a pair that misses its gate is recorded as failed (the
    gateway then refuses it).

    Example: quantize run tiny-llama --method awq --calibration calibration --eval-set
    examples/data/eval.jsonl
    """
    with open_for_command(location) as reg, _progress() as progress:
        outcome = run(
            reg,
            base_ref,
            method,
            calibration=calibration,
            name=name,
            force=force,
            who=who,
            settings=_settings(tasks, eval_set),
            echo=progress,
        )
    figures = outcome.fidelity["base"]
    _echo_outcome(
        outcome,
        as_json,
        f"  size ratio {outcome.fidelity['size_ratio']}, perplexity ratio "
        f"{figures['perplexity_ratio']}, token agreement {figures['token_agreement']}",
    )
    for pair in [] if as_json else outcome.pairs:
        verdict = "ok" if pair.passed else "FAILED " + ", ".join(pair.failed_gates)
        click.echo(f"  {pair.adapter}: {verdict}")


@main.command("eval")
@click.argument("variant_ref", required=False)
@click.argument("adapter_refs", nargs=-1)
@click.option("--force", is_flag=True, help="Record failing pairs as passed (an override).")
@click.option(
    "--pending",
    is_flag=True,
    help="Measure every adapter x variant pair that has no result yet (after a push over "
    "HTTP, --no-eval, or a failed after-push evaluation).",
)
@click.option(
    "--variant",
    "only_variant",
    default=None,
    metavar="NAME",
    help="With --pending: only the pairs waiting on this variant.",
)
@task_option
@eval_set_option
@where_and_who
def eval_cmd(
    variant_ref: str | None,
    adapter_refs: tuple[str, ...],
    force: bool,
    pending: bool,
    only_variant: str | None,
    tasks: dict[str, str],
    eval_set: Path | None,
    location: str | None,
    who: str | None,
) -> None:
    """(Re)measure adapters on VARIANT_REF against its parent and record each pair.

    With no ADAPTER_REFS, every adapter pushed against the parent. A pair that misses its
    gate is recorded as failed and the gateway refuses it; --force records it as passed
    (marked forced in its figures and in the event log). --pending instead measures every
    pair that has no result yet, on every variant (or --variant NAME's), and exits 0
    saying so when there is none; a job runs it after pushes to a registry service.

    Example: quantize eval tiny-llama-awq extract@2

    Example: quantize eval --pending --registry http://reg:8700
    """
    settings = _settings(tasks, eval_set)
    if pending:
        _check_pending_usage(variant_ref, force)
        _eval_pending(location, only_variant, who, settings)
        return
    if variant_ref is None:
        raise click.UsageError("give VARIANT_REF (and ADAPTER_REFS), or --pending")
    if only_variant is not None:
        raise click.UsageError("--variant goes with --pending; otherwise name VARIANT_REF")
    with open_for_command(location) as reg, _progress() as progress:
        pairs = eval_pairs(
            reg, variant_ref, adapter_refs, force=force, who=who, settings=settings, echo=progress
        )
    for pair in pairs:
        verdict = "ok" if not pair.failed_gates else "FAILED " + ", ".join(pair.failed_gates)
        if pair.failed_gates and pair.passed:
            verdict += " (forced: served anyway)"
        click.echo(f"{pair.adapter} on {variant_ref}: {verdict}")


def _check_pending_usage(variant_ref: str | None, force: bool) -> None:
    if variant_ref is not None:
        raise click.UsageError(
            "--pending measures what the registry says is waiting: name no VARIANT_REF or "
            "ADAPTER_REFS (use --variant NAME to keep to one variant)"
        )
    if force:
        raise click.UsageError(
            "--force overrides one pair's gate at a time: `quantize eval VARIANT REF --force`"
        )


def _eval_pending(
    location: str | None, variant: str | None, who: str | None, settings: QuantizeSettings
) -> None:
    """Measure the waiting pairs; print each verdict and a summary line on stdout."""
    with open_for_command(location) as reg, _progress() as progress:
        outcome = eval_pending(reg, variant, who=who, settings=settings, echo=progress)
    where = f" on {variant}" if variant else ""
    if not outcome.pending:
        click.echo(f"nothing to measure: every adapter x variant pair{where} has a result")
        return
    for done in outcome.measured:
        pair = done.pair
        verdict = "ok" if pair.passed else "FAILED " + ", ".join(pair.failed_gates)
        click.echo(f"{pair.adapter} on {done.variant}: {verdict}")
    failed = sum(1 for m in outcome.measured if not m.pair.passed)
    variants = len({m.variant for m in outcome.measured})
    click.echo(
        f"measured {len(outcome.measured)} pair(s) on {variants} variant(s): "
        f"{len(outcome.measured) - failed} passed, {failed} failed (the gateway refuses those)"
    )


@main.command("merge")
@click.argument("adapter_ref")
@click.option("--method", type=click.Choice(METHODS), default=None, help="Quantize after merging.")
@click.option("--calibration", default=None, help="Calibration dataset ref (awq, gptq).")
@click.option("--name", default=None, help="Variant name (default: NAME-N-merged[-METHOD]).")
@click.option("--force", is_flag=True, help="Register even if the fidelity gate fails.")
@task_option
@eval_set_option
@where_and_who
@json_option
def merge_cmd(
    adapter_ref: str,
    method: str | None,
    calibration: str | None,
    name: str | None,
    force: bool,
    tasks: dict[str, str],
    eval_set: Path | None,
    location: str | None,
    who: str | None,
    as_json: bool,
) -> None:
    """Merge ADAPTER_REF into its base: a single-tenant deployment, registered as a variant.

    Optionally quantized after merging (--method). Its lineage names the base and the
    adapter digests; it is measured against adapter-mode serving of the same version and
    registered only if it passes its gate. Serve it with `gateway serve --base NAME`.

    Example: quantize merge support-v1@1 --method fp8
    """
    with open_for_command(location) as reg, _progress() as progress:
        outcome = merge(
            reg,
            adapter_ref,
            method=method,
            calibration=calibration,
            name=name,
            force=force,
            who=who,
            settings=_settings(tasks, eval_set),
            echo=progress,
        )
    figures = outcome.fidelity["merged"]
    _echo_outcome(
        outcome,
        as_json,
        f"  vs adapter mode: token agreement {figures['token_agreement']}, perplexity ratio "
        f"{figures['perplexity_ratio']['eval']}, exact match {figures['exact_match']}",
    )
