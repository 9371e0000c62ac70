"""Which base model: the one rule shared by ``registry push`` and ``gateway serve``.

A ref picks exactly that base model. Without one, the registry's only base model is
the answer; with several, a hint (a push's ``base_model_name_or_path``) may pick the
one of that name, else the caller must choose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from registry.errors import AmbiguousRefError, RefNotFoundError
from registry.records import BaseModel


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
