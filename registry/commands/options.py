"""What every command line over a registry shares (`registry`, `deploy`, `quantize`):
the group class that maps errors to exit codes, the `--registry` and `--who` options, and
the one registry opener."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import click

from registry import errors as e
from registry.location import open_registry
from registry.protocol import Registry

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
