"""loraport's registry: base models, datasets, LoRA adapter versions, aliases, events.

Open one with :func:`registry.open` (a directory today; ``http(s)://`` later)::

    import registry
    reg = registry.open("/srv/registry")
    version = reg.adapter("support@production")
"""

from registry.errors import (
    AdapterProblem,
    AliasInUseError,
    AmbiguousRefError,
    DestinationExistsError,
    IntegrityError,
    InUseError,
    InvalidAdapterError,
    InvalidBaseModelError,
    InvalidDatasetError,
    InvalidRefError,
    NameConflictError,
    RefNotFoundError,
    RegistryError,
    UnsupportedLocationError,
    VersionConflictError,
)
from registry.local import Registry
from registry.location import open_registry as open
from registry.records import (
    AdapterVersion,
    BaseModel,
    Dataset,
    Event,
    Lineage,
    PeftSummary,
    PushResult,
    Resolved,
    VerifyReport,
)
from registry.refs import parse_ref
from registry.settings import RegistrySettings

__all__ = [
    "AdapterProblem",
    "AdapterVersion",
    "AliasInUseError",
    "AmbiguousRefError",
    "BaseModel",
    "Dataset",
    "DestinationExistsError",
    "Event",
    "InUseError",
    "IntegrityError",
    "InvalidAdapterError",
    "InvalidBaseModelError",
    "InvalidDatasetError",
    "InvalidRefError",
    "Lineage",
    "NameConflictError",
    "PeftSummary",
    "PushResult",
    "RefNotFoundError",
    "Registry",
    "RegistryError",
    "RegistrySettings",
    "Resolved",
    "UnsupportedLocationError",
    "VerifyReport",
    "VersionConflictError",
    "open",
    "parse_ref",
]
