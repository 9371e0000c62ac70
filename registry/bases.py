"""Base-model rules: which base model (shared by ``registry push`` and ``gateway
serve``), and that what ``production`` serves stays on one base (shared by ``registry
alias set``, ``registry push --alias production`` and ``deploy canary``).

A ref picks exactly that base model. Without one, the registry's only base model is
the answer; with several, a hint (a push's ``base_model_name_or_path``) may pick the
one of that name, else the caller must choose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from registry.errors import AmbiguousRefError, BaseMismatchError, RefNotFoundError
from registry.records import AdapterVersion, BaseModel


class BaseSource(Protocol):
    """The two reads the rule needs (any :class:`registry.Registry` has them)."""

    def base(self, ref: str) -> BaseModel: ...

    def list_bases(self) -> list[BaseModel]: ...


def pick_base(reg: BaseSource, ref: str | None, *, hint: str | None = None) -> BaseModel:
    """``ref``'s base model, else the only one, else the one named like ``hint``'s last part.

    Raises RefNotFoundError when there is none (or ``ref`` names none) and
    AmbiguousRefError when several are registered and nothing picks one.
    """
    if ref is not None:
        return reg.base(ref)
    bases = reg.list_bases()
    if len(bases) == 1:
        return bases[0]
    if not bases:
        raise RefNotFoundError(
            "no base model is registered; add one with `registry base add DIR --name NAME`"
        )
    wanted = Path(hint).name if hint else None
    for candidate in bases:
        if candidate.name == wanted:
            return candidate
    names = ", ".join(b.name for b in bases)
    raise AmbiguousRefError(
        f"the registry holds {len(bases)} base models ({names}); choose one with --base NAME"
    )


def check_same_base(
    production: AdapterVersion, new: AdapterVersion, *, as_: Literal["production", "canary"]
) -> None:
    """Refuse ``new`` as the production version (or as a canary beside it) when it was
    trained on another base model than the version ``production`` points at now.

    The rule compares with what ``production`` serves now, not with every version of the
    name: versions of one name may span bases (a retrain on a new base), but the gateways
    that serve ``NAME`` run one base, and a version on another would be refused by each
    of them (400 ``adapter_base_mismatch``). A move with no production version to compare
    with (after ``registry alias rm NAME production``) is the deliberate way to switch.
    """
    if new.base_model.digest == production.base_model.digest:
        return
    name = new.name
    head = (
        f"{new.ref} was trained on base {new.base_model.name!r} and production "
        f"({production.ref}) on {production.base_model.name!r}: "
    )
    if as_ == "canary":
        raise BaseMismatchError(
            head + "one gateway serves one base, so the two arms cannot share traffic"
        )
    raise BaseMismatchError(
        head + f"the gateways serving {name} run {production.base_model.name!r} and would "
        f"refuse {new.ref} (400 adapter_base_mismatch). To move {name} to another base "
        f"model on purpose (with gateways serving it), first `registry alias rm {name} "
        f"production`, then set it"
    )
