"""The registry's exceptions: one tree, rooted at :class:`RegistryError`.

::

    RegistryError                      anything the registry refuses or cannot do
    ├── RefNotFoundError               a name, version, alias or digest that is not there
    ├── InvalidRefError                a string that is not a reference at all
    ├── AmbiguousRefError              a reference that could mean several versions
    ├── InvalidAdapterError            a push that fails validation (see ``reason``)
    ├── InvalidBaseModelError          a base-model directory that cannot be recorded
    ├── InvalidDatasetError            a dataset file that cannot be recorded
    ├── NameConflictError              a name already used by another kind or content
    ├── InUseError                     a removal refused because something points at it
    │   └── AliasInUseError            ... an alias
    ├── IntegrityError                 stored bytes that no longer match their digest
    ├── DestinationExistsError         a pull into a non-empty directory
    ├── VersionConflictError           a version number that could not be allocated
    └── UnsupportedLocationError       a registry location this build cannot open

Each class maps to exactly one CLI exit code in :mod:`registry.cli` (and, later,
one HTTP status in the registry service); ``tests/registry/test_errors.py``
checks that the mapping is complete.  Messages say what to do next.
"""

from __future__ import annotations

from enum import StrEnum


class RegistryError(Exception):
    """Base class of every error the registry raises on purpose."""


class RefNotFoundError(RegistryError):
    """A reference names nothing in the registry (or only removed versions)."""


class InvalidRefError(RegistryError):
    """A string does not follow the reference grammar (NAME, NAME@N, NAME@ALIAS, sha256:HEX)."""


class AmbiguousRefError(RegistryError):
    """A reference matches several versions; the message lists the choices."""


class AdapterProblem(StrEnum):
    """Why an adapter directory was refused (``InvalidAdapterError.reason``)."""

    NOT_A_DIRECTORY = "not_a_directory"
    EMPTY = "empty"
    UNSAFE_PATH = "unsafe_path"
    FILE_TOO_LARGE = "file_too_large"
    NOT_PEFT = "not_peft"
    NOT_LORA = "not_lora"
    UNSUPPORTED = "unsupported"
    PICKLED_WEIGHTS = "pickled_weights"
    NO_WEIGHTS = "no_weights"
    BAD_SAFETENSORS = "bad_safetensors"
    TENSOR_MISMATCH = "tensor_mismatch"
    RANK_TOO_HIGH = "rank_too_high"
    UNKNOWN_TARGET = "unknown_target"
    CHAT_TEMPLATE_MISMATCH = "chat_template_mismatch"
    BASE_MODEL_UNKNOWN = "base_model_unknown"
    DATASET_REQUIRED = "dataset_required"
    BAD_SCHEMA = "bad_schema"
    BAD_META = "bad_meta"
    BAD_NAME = "bad_name"


class InvalidAdapterError(RegistryError):
    """An adapter directory failed validation; nothing was written."""

    def __init__(self, reason: AdapterProblem, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidBaseModelError(RegistryError):
    """A base-model directory cannot be recorded (no config, pickled weights, ...)."""


class InvalidDatasetError(RegistryError):
    """A dataset file cannot be recorded (missing, empty, unsafe, too large)."""


class NameConflictError(RegistryError):
    """A name is already used by another kind of record, or by different content."""


class InUseError(RegistryError):
    """A removal was refused because live records still point at the target."""


class AliasInUseError(InUseError):
    """A version cannot be removed while an alias points at it."""


class IntegrityError(RegistryError):
    """Stored bytes no longer hash to their recorded digest."""


class DestinationExistsError(RegistryError):
    """A pull would overwrite a file or a non-empty directory."""


class VersionConflictError(RegistryError):
    """A new version number could not be allocated (concurrent writers kept winning)."""


class UnsupportedLocationError(RegistryError):
    """The registry location is not something this build can open (e.g. http:// for now)."""


__all__ = [
    "AdapterProblem",
    "AliasInUseError",
    "AmbiguousRefError",
    "DestinationExistsError",
    "InUseError",
    "IntegrityError",
    "InvalidAdapterError",
    "InvalidBaseModelError",
    "InvalidDatasetError",
    "InvalidRefError",
    "NameConflictError",
    "RefNotFoundError",
    "RegistryError",
    "UnsupportedLocationError",
    "VersionConflictError",
]
