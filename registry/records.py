"""Frozen records the registry hands out (the library's public value types)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from registry.digest import Digest

Kind = Literal["base", "dataset", "adapter"]

_A_KIND: dict[str, str] = {"base": "a base model", "dataset": "a dataset", "adapter": "an adapter"}


def a_kind(kind: str) -> str:
    """The kind with its article, for messages: ``an adapter``, ``a base model``."""
    return _A_KIND.get(kind, f"a {kind}")


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a reference points at right now."""

    kind: Kind
    name: str
    version: int | None
    digest: Digest


@dataclass(frozen=True, slots=True)
class Lineage:
    """A link to a base model or dataset; both None for an explicitly unknown dataset."""

    name: str | None
    digest: Digest | None


@dataclass(frozen=True, slots=True)
class CodeLineage:
    """The training code's git commit, and whether its work tree had uncommitted changes.

    ``dirty`` is None when the commit was given by hand (``--git-sha``) and nobody looked.
    """

    commit: str
    dirty: bool | None


@dataclass(frozen=True, slots=True)
class PeftSummary:
    """The LoRA shape of an adapter, from its ``adapter_config.json`` and tensors."""

    r: int
    lora_alpha: float
    target_modules: tuple[str, ...]
    lora_dropout: float


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Why an adapter version is refused by every gateway, until a person lifts it."""

    reason: str
    who: str
    at: str


@dataclass(frozen=True, slots=True)
class AdapterVersion:
    """One immutable version of an adapter."""

    name: str
    version: int
    digest: Digest
    base_model: Lineage
    dataset: Lineage
    peft: PeftSummary
    schema: dict[str, Any] | None
    aliases: tuple[str, ...]
    meta: dict[str, Any]
    created_by: str
    created_at: str
    chat_template_digest: str | None = None
    removed_at: str | None = None
    code: CodeLineage | None = None
    quarantine: Quarantine | None = None
    kind: Literal["adapter"] = "adapter"

    @property
    def ref(self) -> str:
        """``NAME@N``."""
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class BaseModel:
    """A base model (or a variant of one: ``parent`` + ``quantization``; see VariantInfo)."""

    name: str
    digest: Digest
    architecture: dict[str, Any]
    license: str | None
    parent: str | None
    quantization: str | None
    created_at: str
    created_by: str = ""
    chat_template_digest: str | None = None
    kind: Literal["base"] = "base"


@dataclass(frozen=True, slots=True)
class Dataset:
    """A training dataset file."""

    name: str
    digest: Digest
    records: int
    size: int
    license: str | None
    created_at: str
    created_by: str = ""
    kind: Literal["dataset"] = "dataset"


@dataclass(frozen=True, slots=True)
class PushResult:
    """The version a push produced, and whether it is new (False: identical content existed)."""

    adapter: AdapterVersion
    created: bool


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the append-only event log."""

    id: int
    at: str
    who: str
    action: str
    name: str
    version: int | None
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Result of ``verify``: errors are real damage; orphans are harmless leftovers."""

    checked: int
    errors: tuple[str, ...]
    orphans: tuple[str, ...] = ()
    collected: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True, slots=True)
class GcReport:
    """Result of ``gc``: what was removed (orphan blobs as digests, temp files as
    ``tmp/NAME``), and the orphans kept because they are younger than the grace period
    (an upload or push that may still be in flight)."""

    removed: tuple[str, ...]
    kept: tuple[str, ...]


RolloutState = Literal["active", "promoted", "rolled_back", "aborted"]


@dataclass(frozen=True, slots=True)
class Analysis:
    """One judgement of a rollout step: the verdict, why, and the figures it read."""

    id: int
    at: str
    who: str
    step: int
    weight: float
    verdict: str
    reason: str
    figures: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rollout:
    """A canary rollout of ``name`` from version ``stable`` to ``canary``.

    ``steps`` are canary weights in percent, increasing; ``step`` indexes them and
    ``weight`` is the share the canary gets now (0 once it ended). ``plan`` is the
    controller's configuration, stored as given. ``holder``/``lease_until`` (epoch s) name
    the controller that may act on it.
    """

    id: int
    name: str
    stable: int
    canary: int
    steps: tuple[float, ...]
    plan: dict[str, Any]
    step: int
    weight: float
    state: RolloutState
    reason: str | None
    started_by: str
    started_at: str
    step_started_at: str
    ended_at: str | None
    holder: str | None
    lease_until: float | None
    analyses: tuple[Analysis, ...] = ()

    @property
    def active(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True, slots=True)
class VariantInfo:
    """What makes a base model a variant: parent, quantization lineage, fidelity."""

    name: str
    digest: Digest
    parent: str
    parent_digest: Digest
    quantization: dict[str, Any]
    fidelity: dict[str, Any]
    passed: bool
    forced: bool

    @property
    def merged(self) -> bool:
        """A merged deployment (``quantize merge``): one adapter folded in, so it takes
        no adapters; a quantized variant runs its parent's, pair permitting."""
        return str(self.quantization.get("method", "")).startswith("merge")


@dataclass(frozen=True, slots=True)
class PairResult:
    """One adapter version evaluated on one variant."""

    adapter: str
    adapter_digest: Digest
    variant: str
    variant_digest: Digest
    passed: bool
    failed_gates: tuple[str, ...]
    figures: dict[str, Any]
    evaluated_at: str


@dataclass(frozen=True, slots=True)
class PairInput:
    """A pair result to record: the adapter as ``NAME@N``."""

    adapter: str
    passed: bool
    failed_gates: tuple[str, ...]
    figures: dict[str, Any]
