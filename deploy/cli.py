"""The ``deploy`` command line: canary rollouts of adapter versions.

``deploy canary`` starts a rollout (or resumes the active one to the same version) and
runs its controller in the foreground until the rollout is promoted or rolled back (with
``--detach`` it only records it); ``deploy run`` is the long-lived controller that drives
every active rollout in the registry (:mod:`deploy.supervisor`, the in-cluster form);
``status``, ``history``, ``promote`` and ``abort`` read or end a rollout. Every verb takes
``--registry LOCATION`` (else ``REGISTRY_URL``). Registry errors exit with the registry's
own codes (``docs/registry.md``), deploy's own with theirs (:mod:`deploy.errors`); a
refused option is click's usage error (2); a rollout that ends rolled back or aborted
exits 1.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click

from deploy import evaluation
from deploy.backoff import Backoff, retrying
from deploy.controller import Controller
from deploy.errors import DeployError, EvalSetError, EvalSetUnusableError
from deploy.gateway_scrape import GatewayScrapeSource
from deploy.plan import Plan, PlanError, parse_duration, parse_steps
from deploy.prometheus import PrometheusSource
from deploy.source import MetricsSource
from deploy.supervisor import Supervisor
from registry import Registry, RegistryError, RegistryUnavailableError, Rollout
from registry import open as open_registry
from registry.commands.options import (
    RegistryGroup,
    command_location,
    location_option,
    open_for_command,
    remember_location,
    who_option,
)
from registry.rollout_rules import lease_live, to_resume

T = TypeVar("T")


class DeployGroup(RegistryGroup):
    """Turns deploy's and the registry's errors into exits with their own codes."""

    exits_with_code = (DeployError, RegistryError)


@click.group(cls=DeployGroup)
@click.version_option(package_name="loraport")
@click.option("--registry", "location", metavar="LOCATION", default=None,
              help="Registry for every verb (default: $REGISTRY_URL, else per-user).")  # fmt: skip
@click.pass_context
def main(ctx: click.Context, location: str | None) -> None:
    """loraport deploy: canary rollouts judged from Prometheus, promoted or rolled back.

    Example: deploy canary support --to 2 --steps 10,25,50,100 --interval 10m
    --prometheus http://prometheus:9090
    """
    remember_location(ctx, location)


def _option(value: str, parse: Any, flag: str) -> Any:
    try:
        return parse(value)
    except PlanError as e:
        raise click.BadParameter(str(e), param_hint=flag) from None


def _source(prometheus: str | None, gateways: tuple[str, ...]) -> MetricsSource:
    if prometheus and gateways:
        raise click.UsageError("give --prometheus URL or --gateway URL ..., not both")
    if prometheus:
        return PrometheusSource(prometheus)
    if gateways:
        return GatewayScrapeSource(list(gateways))
    raise click.UsageError("where are the figures? give --prometheus URL or --gateway URL ...")


@main.command()
@click.argument("name")
@click.option("--to", "version", required=True, type=int, help="The canary version (NAME@N).")
@click.option(
    "--steps",
    default="10,25,50,100",
    show_default=True,
    help="Canary weights in percent, increasing.",
)
@click.option(
    "--interval",
    default="10m",
    show_default=True,
    help="How long each step is watched before it is judged (10m, 30s, ...).",
)
@click.option(
    "--min-requests",
    default=20,
    show_default=True,
    type=int,
    help="Fewer requests on either arm in an interval: hold.",
)
@click.option(
    "--max-error-rate",
    default=0.05,
    show_default=True,
    type=float,
    help="Canary 5xx share above this: roll back.",
)
@click.option(
    "--max-latency-ratio",
    default=1.5,
    show_default=True,
    type=float,
    help="Canary p95 over stable p95 above this: roll back.",
)
@click.option(
    "--max-json-violation-rate",
    default=0.05,
    show_default=True,
    type=float,
    help="Canary JSON-contract failures share above this: roll back.",
)
@click.option(
    "--max-degenerate-rate",
    default=0.05,
    show_default=True,
    type=float,
    help="Canary share of answers that are empty or one piece repeated above this: roll "
    "back (1 turns the rule off).",
)
@click.option("--prometheus", default=None, metavar="URL", help="Read figures with PromQL.")
@click.option(
    "--gateway",
    "gateways",
    multiple=True,
    metavar="URL",
    help="Without Prometheus: scrape these gateways' /metrics (repeat).",
)
@click.option(
    "--eval",
    "eval_file",
    default=None,
    type=click.Path(path_type=Path),
    help="Canary set (JSON Lines chats) scored on both versions before step 1.",
)
@click.option(
    "--max-regression",
    default=0.05,
    show_default=True,
    type=float,
    help="The canary may score at most this much (relative) below stable.",
)
@click.option(
    "--eval-gateway",
    default=None,
    metavar="URL",
    help="Gateway to run the eval through (default: the first --gateway).",
)
@click.option(
    "--lease-ttl",
    default="15s",
    show_default=True,
    help="How long a dead controller blocks another from resuming.",
)
@click.option(
    "--detach",
    is_flag=True,
    help="Record the rollout and return; an in-cluster `deploy run` drives it.",
)
@location_option
@who_option
def canary(
    name: str,
    version: int,
    steps: str,
    interval: str,
    min_requests: int,
    max_error_rate: float,
    max_latency_ratio: float,
    max_json_violation_rate: float,
    max_degenerate_rate: float,
    prometheus: str | None,
    gateways: tuple[str, ...],
    eval_file: Path | None,
    max_regression: float,
    eval_gateway: str | None,
    lease_ttl: str,
    detach: bool,
    location: str | None,
    who: str | None,
) -> None:
    """Roll NAME out to version --to, step by step, and drive it to the end.

    Run it again after a crash to resume the active rollout (its plan is the stored one).
    With --detach it only records the rollout (and runs the eval gate, if asked): a
    `deploy run` (the in-cluster controller) drives it; watch it with `deploy status`.

    Example: deploy canary support --to 2 --steps 10,50,100 --interval 5m
    --prometheus http://127.0.0.1:9090
    """
    weights = _option(steps, parse_steps, "--steps")
    ttl = _option(lease_ttl, parse_duration, "--lease-ttl")
    try:
        plan = Plan.checked(
            interval_s=_option(interval, parse_duration, "--interval"),
            min_requests=min_requests,
            max_error_rate=max_error_rate,
            max_latency_ratio=max_latency_ratio,
            max_json_violation_rate=max_json_violation_rate,
            max_degenerate_rate=max_degenerate_rate,
        )
    except PlanError as e:
        raise click.BadParameter(str(e)) from None
    source = None if detach else _source(prometheus, gateways)
    with open_for_command(location) as reg:
        resumed = to_resume(_waiting(lambda: reg.rollout(name), f"reading {name}"), version)
        if resumed is not None:
            rollout = resumed
            click.echo(f"resuming rollout #{rollout.id} at step {rollout.step} "
                       f"({rollout.weight:g}%); its stored plan applies")  # fmt: skip
        else:
            if eval_file is not None:
                gate = _eval_gate(reg, name, version, eval_file, max_regression,
                                  eval_gateway or next(iter(gateways), None))  # fmt: skip
                plan = plan.model_copy(update={"eval_gate": gate})
            rollout = _start(reg, name, version, weights, plan, who)
            click.echo(f"rollout #{rollout.id}: {name}@{rollout.stable} -> {name}@{version} "
                       f"at {rollout.weight:g}%")  # fmt: skip
        if source is None:
            click.echo(f"recorded; a `deploy run` controller drives it (`deploy status {name}`)")
            return
        controller = Controller(reg, source, name, lease_ttl_s=ttl, say=click.echo)
        _stop_on_sigterm()
        final = controller.run(rollout.id)
    click.echo(f"{name}: {final.state}: {final.reason}")
    if final.state != "promoted":
        sys.exit(1)


@main.command()
@click.option("--prometheus", default=None, metavar="URL", help="Read figures with PromQL.")
@click.option(
    "--gateway",
    "gateways",
    multiple=True,
    metavar="URL",
    help="Without Prometheus: scrape these gateways' /metrics (repeat).",
)
@click.option(
    "--lease-ttl",
    default="15s",
    show_default=True,
    help="How long a dead controller blocks another from taking its rollouts over.",
)
@click.option(
    "--scan",
    default="5s",
    show_default=True,
    help="Look for new rollouts at least this often (a registry write wakes it sooner).",
)
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(1, 65535),
    help="Serve the rollouts' state on /metrics at this port (all interfaces).",
)
@location_option
def run(
    prometheus: str | None,
    gateways: tuple[str, ...],
    lease_ttl: str,
    scan: str,
    metrics_port: int | None,
    location: str | None,
) -> None:
    """Drive every active rollout recorded in the registry, until SIGTERM.

    The in-cluster controller: rollouts recorded with `deploy canary ... --detach` (or
    left by a `deploy canary` that died) are driven here, each under its own lease.

    Example: deploy run --prometheus http://prometheus:9090
    """
    ttl = _option(lease_ttl, parse_duration, "--lease-ttl")
    scan_s = _option(scan, parse_duration, "--scan")
    _source(prometheus, gateways)  # refuse a missing or doubled source before starting
    where = command_location(location)
    supervisor = Supervisor(
        open_registry=lambda: open_registry(where, create=False),
        source=lambda: _source(prometheus, gateways),
        lease_ttl_s=ttl,
        scan_s=scan_s,
        say=click.echo,
    )
    with open_registry(where, create=False) as reg:  # a wrong location fails here, plainly
        click.echo(f"deploy run: registry {reg.location}")
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="0.0.0.0", registry=supervisor.metrics.registry)
        click.echo(f"deploy run: /metrics on port {metrics_port}")

    def stop(signum: int, frame: object) -> None:
        supervisor.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    supervisor.run()
    click.echo("deploy run: stopped")


def _waiting(call: Callable[[], T], what: str) -> T:
    """A registry read, retried with deploy's back-off while the registry is unavailable."""
    return retrying(call, Backoff(), what=what, sleep=time.sleep, say=click.echo)


def _start(
    reg: Registry, name: str, version: int, weights: list[float], plan: Plan, who: str | None
) -> Rollout:
    """Start the rollout. If the registry's answer is lost, read whether it started (this
    run's request did it, or another's: the same canary is resumed either way); a
    rollout that did not start is not retried blindly: run `deploy canary` again."""
    try:
        return reg.start_rollout(name, version, steps=weights, plan=plan.model_dump(), who=who)
    except RegistryUnavailableError:
        started = to_resume(_waiting(lambda: reg.rollout(name), f"reading {name}"), version)
        if started is None:
            raise
        return started


def _eval_gate(
    reg: Registry,
    name: str,
    version: int,
    path: Path,
    max_regression: float,
    gateway: str | None,
) -> dict[str, float | int | str]:
    """Score both versions on the canary set through ``gateway``; refuse an unusable set
    or a regression (see :mod:`deploy.evaluation`). Nothing is written before it passes."""
    if gateway is None:
        raise click.UsageError("--eval needs a gateway to ask: --eval-gateway URL or --gateway")
    if not 0 <= max_regression < 1:
        raise click.BadParameter("must be at least 0 and below 1", param_hint="--max-regression")
    try:
        examples = evaluation.load(path)
    except EvalSetError as e:
        raise click.BadParameter(str(e), param_hint="--eval") from None
    stable = reg.aliases(name).get("production")
    reg.adapter(f"{name}@{version}")  # RefNotFoundError before any request is sent
    if stable is None:
        return {}  # start_rollout refuses it, with its own message
    stable_score = evaluation.score(gateway, f"{name}@{stable}", examples)
    problem = evaluation.stable_problem(stable_score)
    if problem is not None:  # before the canary is asked: the set cannot judge it
        raise EvalSetUnusableError(f"eval set unusable: {problem}; nothing was rolled out")
    result = evaluation.GateResult(
        stable=stable_score,
        canary=evaluation.score(gateway, f"{name}@{version}", examples),
        max_regression=max_regression,
    )
    click.echo(result.reason())
    result.check()
    return {"file": path.name, "examples": len(examples), "stable": round(result.stable, 4),
            "canary": round(result.canary, 4), "max_regression": max_regression}  # fmt: skip


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the lease is released on the way out."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _json(rollout: Rollout) -> dict[str, Any]:
    return asdict(rollout)


def _lines(r: Rollout, *, analyses: int | None, now: float) -> list[str]:
    """A rollout for people; ``now`` is the registry's clock (whether a lease is live)."""
    steps = ",".join(f"{w:g}" for w in r.steps)
    out = [
        f"rollout #{r.id} of {r.name}: {r.name}@{r.stable} -> {r.name}@{r.canary}  {r.state}"
        f"  step {r.step} of {len(r.steps)} [{steps}]  canary weight {r.weight:g}%",
        f"  started {r.started_at} by {r.started_by}"
        + (f"; ended {r.ended_at}: {r.reason}" if r.ended_at else ""),
    ]
    if r.holder:
        out.append(f"  controller {r.holder}" + ("" if lease_live(r, now) else " (lease expired)"))
    shown = r.analyses if analyses is None else r.analyses[-analyses:]
    for a in shown:
        out.append(f"  {a.at} step {a.step} ({a.weight:g}%) {a.verdict}: {a.reason}")
    return out


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@location_option
def status(name: str, as_json: bool, location: str | None) -> None:
    """The active rollout of NAME (else its last one) and its latest analyses.

    Example: deploy status support --json
    """
    with open_for_command(location) as reg:
        found = reg.rollout(name) or next(iter(reversed(reg.rollouts(name))), None)
        production = reg.aliases(name).get("production")
        now = reg.clock()
    if as_json:
        click.echo(json.dumps({"name": name, "production": production,
                               "rollout": _json(found) if found else None}, indent=2))  # fmt: skip
        return
    click.echo(f"{name}: production is {name}@{production}")
    if found is None:
        click.echo("  no rollout yet")
        return
    for line in _lines(found, analyses=5, now=now):
        click.echo(line)


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@location_option
def history(name: str, as_json: bool, location: str | None) -> None:
    """Every rollout of NAME, oldest first, with every analysis.

    Example: deploy history support
    """
    with open_for_command(location) as reg:
        found = reg.rollouts(name)
        now = reg.clock()
    if as_json:
        click.echo(json.dumps([_json(r) for r in found], indent=2))
        return
    if not found:
        click.echo(f"{name}: no rollouts")
    for r in found:
        for line in _lines(r, analyses=None, now=now):
            click.echo(line)


@main.command()
@click.argument("name")
@click.option("--reason", default="promoted by hand", show_default=True)
@location_option
@who_option
def promote(name: str, reason: str, location: str | None, who: str | None) -> None:
    """Promote the active rollout now: production moves to the canary version.

    Example: deploy promote support
    """
    with open_for_command(location) as reg:
        done = reg.end_rollout(name, None, "promoted", reason=reason, who=who)
    click.echo(f"{name}: production -> {name}@{done.canary} (rollout #{done.id} promoted)")


@main.command()
@click.argument("name")
@click.option("--reason", default="aborted by hand", show_default=True)
@location_option
@who_option
def abort(name: str, reason: str, location: str | None, who: str | None) -> None:
    """Abort the active rollout: the canary's weight drops to 0, production stays.

    Example: deploy abort support --reason "wrong dataset"
    """
    with open_for_command(location) as reg:
        done = reg.end_rollout(name, None, "aborted", reason=reason, who=who)
    click.echo(f"{name}: rollout #{done.id} aborted; production stays {name}@{done.stable}")
