"""loraport's registry: base models, datasets, LoRA adapter versions, aliases, events.

Open one with :func:`registry.open` (a directory today; ``http(s)://`` later); callers
depend on the :class:`registry.Registry` protocol, never on an implementation::

    import registry
    with registry.open("/srv/registry", create=False) as reg:
        version = reg.adapter("support")          # support@production
        vllm_name = registry.lora_name(version)   # support@3+1a2b3c4d5e6f
"""

from registry.bases import pick_base
from registry.digest import Digest
from registry.errors import (
    AdapterProblem,
    AliasInUseError,
    AmbiguousRefError,
    DestinationExistsError,
    DestinationUnwritableError,
    IntegrityError,
    InUseError,
    InvalidAdapterError,
    InvalidBaseModelError,
    InvalidDatasetError,
    InvalidRefError,
    InvalidRolloutError,
    LeaseHeldError,
    NameConflictError,
    NotARegistryError,
    ReadOnlyRegistryError,
    RefNotFoundError,
    RegistryError,
    RolloutConflictError,
    SchemaVersionError,
    SourceChangedError,
    StorageFullError,
    UnsupportedLocationError,
    VersionConflictError,
    error_class,
    error_classes,
)
from registry.location import open_registry as open
from registry.protocol import Registry
from registry.records import (
    AdapterVersion,
    Analysis,
    BaseModel,
    CodeLineage,
    Dataset,
    Event,
    Lineage,
    PairInput,
    PairResult,
    PeftSummary,
    PushResult,
    Resolved,
    Rollout,
    VariantInfo,
    VerifyReport,
)
from registry.refs import (
    MAX_VERSION,
    PRODUCTION,
    LoraName,
    format_ref,
    lora_name,
    parse_lora_name,
    parse_ref,
    routable_refs,
)
from registry.settings import RegistrySettings

__all__ = [
    "MAX_VERSION",
    "PRODUCTION",
    "AdapterProblem",
    "AdapterVersion",
    "AliasInUseError",
    "AmbiguousRefError",
    "Analysis",
    "BaseModel",
    "CodeLineage",
    "Dataset",
    "DestinationExistsError",
    "DestinationUnwritableError",
    "Digest",
    "Event",
    "InUseError",
    "IntegrityError",
    "InvalidAdapterError",
    "InvalidBaseModelError",
    "InvalidDatasetError",
    "InvalidRefError",
    "InvalidRolloutError",
    "LeaseHeldError",
    "Lineage",
    "LoraName",
    "NameConflictError",
    "NotARegistryError",
    "PairInput",
    "PairResult",
    "PeftSummary",
    "PushResult",
    "ReadOnlyRegistryError",
    "RefNotFoundError",
    "Registry",
    "RegistryError",
    "RegistrySettings",
    "Resolved",
    "Rollout",
    "RolloutConflictError",
    "SchemaVersionError",
    "SourceChangedError",
    "StorageFullError",
    "UnsupportedLocationError",
    "VariantInfo",
    "VerifyReport",
    "VersionConflictError",
    "error_class",
    "error_classes",
    "format_ref",
    "lora_name",
    "open",
    "parse_lora_name",
    "parse_ref",
    "pick_base",
    "routable_refs",
]
