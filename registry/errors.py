"""The registry's exceptions: one tree, rooted at :class:`RegistryError`.

Each class carries its own outcome as class attributes, and this tree is the one table
of them: ``exit_code`` (the ``registry`` CLI's exit status), ``http_status`` (what the
registry service answers, and what a gateway may answer when it meets the error while
serving) and ``code`` (the stable wire name, so an HTTP client can raise the same class
again: :func:`error_class`). ``tests/registry/test_errors.py`` holds the table complete
and unambiguous. Raise the most specific class; never a bare :class:`RegistryError`.

::

    class                            exit  http  code
    RegistryError                       1   500  registry_error (never raised bare)
    ├── RefNotFoundError                3   404  ref_not_found
    ├── InvalidRefError                 4   400  invalid_ref
    ├── AmbiguousRefError               5   400  ambiguous_ref
    ├── InvalidAdapterError             6   422  invalid_adapter (``reason`` says which rule)
    ├── InvalidBaseModelError           7   422  invalid_base_model
    ├── InvalidDatasetError             8   422  invalid_dataset
    ├── NameConflictError               9   409  name_conflict
    ├── InUseError                     10   409  in_use
    │   └── AliasInUseError            11   409  alias_in_use
    ├── IntegrityError                 12   500  integrity
    ├── DestinationExistsError         13   409  destination_exists
    ├── VersionConflictError           14   409  version_conflict
    ├── UnsupportedLocationError       15   400  unsupported_location
    ├── SchemaVersionError             16   500  schema_version
    ├── NotARegistryError              17   404  not_a_registry
    ├── ReadOnlyRegistryError          18   403  read_only
    ├── DestinationUnwritableError     19   500  destination_unwritable
    ├── SourceChangedError             20   409  source_changed
    ├── RolloutConflictError           30   409  rollout_conflict
    ├── InvalidRolloutError            31   422  invalid_rollout
    ├── LeaseHeldError                 32   409  lease_held
    ├── StorageFullError               33   507  storage_full
    ├── NotQuarantinedError            34   409  not_quarantined
    ├── BaseMismatchError              35   409  base_mismatch
    ├── QuarantinedError               36   409  quarantined
    ├── RegistryUnavailableError       37   503  registry_unavailable
    ├── UnauthorizedError              38   401  unauthorized
    ├── ForbiddenError                 39   403  forbidden
    ├── RequestTooLargeError           43   413  request_too_large
    ├── BadRequestError                44   400  bad_request
    ├── ServiceFailedError             45   500  service_failed
    └── StorageUnavailableError        46   503  storage_unavailable
        └── DatabaseUnavailableError   47   503  database_unavailable

Exit status 0 is success and 2 is click's usage error; neither is in the table.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class RegistryError(Exception):
    """Base class of every error the registry raises on purpose."""

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "registry_error"


class RefNotFoundError(RegistryError):
    """A reference names nothing in the registry (or only removed versions)."""

    exit_code = 3
    http_status = 404
    code = "ref_not_found"


class InvalidRefError(RegistryError):
    """A string does not follow the reference grammar (NAME, NAME@N, NAME@ALIAS, sha256:HEX)."""

    exit_code = 4
    http_status = 400
    code = "invalid_ref"


class AmbiguousRefError(RegistryError):
    """A reference matches several records; the message lists the choices."""

    exit_code = 5
    http_status = 400
    code = "ambiguous_ref"


class AdapterProblem(StrEnum):
    """Why an adapter directory was refused (``InvalidAdapterError.reason``)."""

    NOT_A_DIRECTORY = "not_a_directory"
    EMPTY = "empty"
    UNSAFE_PATH = "unsafe_path"
    UNEXPECTED_FILE = "unexpected_file"
    FILE_TOO_LARGE = "file_too_large"
    NOT_PEFT = "not_peft"
    NOT_LORA = "not_lora"
    BAD_CONFIG = "bad_config"
    UNSUPPORTED = "unsupported"
    PICKLED_WEIGHTS = "pickled_weights"
    NO_WEIGHTS = "no_weights"
    BAD_SAFETENSORS = "bad_safetensors"
    NON_FINITE = "non_finite"
    WEIGHT_OVERFLOW = "weight_overflow"
    SCALING_ABSURD = "scaling_absurd"
    WEIGHT_TOO_LARGE = "weight_too_large"
    SCALING_TOO_LARGE = "scaling_too_large"
    UPDATE_TOO_LARGE = "update_too_large"
    TENSOR_MISMATCH = "tensor_mismatch"
    RANK_TOO_HIGH = "rank_too_high"
    UNKNOWN_TARGET = "unknown_target"
    TARGET_MISMATCH = "target_mismatch"
    CHAT_TEMPLATE_MISMATCH = "chat_template_mismatch"
    BASE_MODEL_UNKNOWN = "base_model_unknown"
    DATASET_REQUIRED = "dataset_required"
    BAD_SCHEMA = "bad_schema"
    BAD_META = "bad_meta"
    BAD_NAME = "bad_name"
    BAD_CODE = "bad_code"


class InvalidAdapterError(RegistryError):
    """An adapter directory failed validation; nothing was written."""

    exit_code = 6
    http_status = 422
    code = "invalid_adapter"

    def __init__(self, reason: AdapterProblem, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidBaseModelError(RegistryError):
    """A base-model directory cannot be recorded (no config, pickled weights, ...)."""

    exit_code = 7
    http_status = 422
    code = "invalid_base_model"


class InvalidDatasetError(RegistryError):
    """A dataset file cannot be recorded (missing, empty, unsafe, too large)."""

    exit_code = 8
    http_status = 422
    code = "invalid_dataset"


class NameConflictError(RegistryError):
    """A name is already used by another kind of record, or by different content."""

    exit_code = 9
    http_status = 409
    code = "name_conflict"


class InUseError(RegistryError):
    """A removal was refused because live records still point at the target."""

    exit_code = 10
    http_status = 409
    code = "in_use"


class AliasInUseError(InUseError):
    """A version cannot be removed while an alias points at it."""

    exit_code = 11
    http_status = 409
    code = "alias_in_use"


class IntegrityError(RegistryError):
    """Stored bytes no longer hash to their recorded digest."""

    exit_code = 12
    http_status = 500
    code = "integrity"


class DestinationExistsError(RegistryError):
    """A pull would overwrite a file or a non-empty directory."""

    exit_code = 13
    http_status = 409
    code = "destination_exists"


class VersionConflictError(RegistryError):
    """A new version number was taken by a concurrent writer; retrying is safe."""

    exit_code = 14
    http_status = 409
    code = "version_conflict"


class UnsupportedLocationError(RegistryError):
    """The registry location is not something this build can open (e.g. http:// for now)."""

    exit_code = 15
    http_status = 400
    code = "unsupported_location"


class SchemaVersionError(RegistryError):
    """The registry's database was written by a newer loraport than this one."""

    exit_code = 16
    http_status = 500
    code = "schema_version"


class NotARegistryError(RegistryError):
    """The location is missing, is a directory of something else, or holds a garbage db."""

    exit_code = 17
    http_status = 404
    code = "not_a_registry"


class ReadOnlyRegistryError(RegistryError):
    """A write was asked of a registry that is open read-only (e.g. on a read-only mount)."""

    exit_code = 18
    http_status = 403
    code = "read_only"


class DestinationUnwritableError(RegistryError):
    """A pull cannot create its files where it was asked to (permissions, missing parent)."""

    exit_code = 19
    http_status = 500
    code = "destination_unwritable"


class SourceChangedError(RegistryError):
    """A file changed while it was being stored; nothing was recorded."""

    exit_code = 20
    http_status = 409
    code = "source_changed"


class StorageFullError(RegistryError):
    """The registry's disk (or quota) filled up during a write; nothing was recorded."""

    exit_code = 33
    http_status = 507
    code = "storage_full"


class RolloutConflictError(RegistryError):
    """A rollout was started while one is active, or changed or ended under its caller."""

    exit_code = 30
    http_status = 409
    code = "rollout_conflict"


class InvalidRolloutError(RegistryError):
    """A rollout plan is refused: weights outside 0-100, steps not increasing, or the
    version already in production; nothing was written."""

    exit_code = 31
    http_status = 422
    code = "invalid_rollout"


class BaseMismatchError(RegistryError):
    """``production`` would move to (or a canary split with) a version trained on another
    base model than the one production serves now (:func:`registry.bases.check_same_base`)."""

    exit_code = 35
    http_status = 409
    code = "base_mismatch"


class LeaseHeldError(RegistryError):
    """Another controller holds this rollout's lease; only one may act on a rollout."""

    exit_code = 32
    http_status = 409
    code = "lease_held"


class NotQuarantinedError(RegistryError):
    """A quarantine was to be lifted from an adapter version that is not quarantined."""

    exit_code = 34
    http_status = 409
    code = "not_quarantined"


class QuarantinedError(RegistryError):
    """``production`` would move onto (or a rollout start with a canary on) a quarantined
    version (:func:`registry.quarantine.refuse_quarantined`); lift it first if it is fine."""

    exit_code = 36
    http_status = 409
    code = "quarantined"


class RegistryUnavailableError(RegistryError):
    """A remote registry did not answer (connection refused, timed out, 5xx from a proxy):
    transient, so callers may retry with back-off and a gateway serves what it cached."""

    exit_code = 37
    http_status = 503
    code = "registry_unavailable"


class UnauthorizedError(RegistryError):
    """A registry service was called without a token, or with one it does not know: set
    ``REGISTRY_TOKEN``."""

    exit_code = 38
    http_status = 401
    code = "unauthorized"


class ForbiddenError(RegistryError):
    """The caller's token may not do this (a ``read`` token asked for a write)."""

    exit_code = 39
    http_status = 403
    code = "forbidden"


class RequestTooLargeError(RegistryError):
    """A request to the registry service is over its size limit (a body, an upload)."""

    exit_code = 43
    http_status = 413
    code = "request_too_large"


class BadRequestError(RegistryError):
    """The registry service could not read a request (malformed JSON, a field of the wrong
    type, an unknown operation): a hand-made request, or a client of another version."""

    exit_code = 44
    http_status = 400
    code = "bad_request"


class ServiceFailedError(RegistryError):
    """The registry service failed on a request it should have handled (a bug or a fault
    on the server: its log holds the traceback). Not the caller's mistake: the request may
    be sent again once the service is fixed."""

    exit_code = 45
    http_status = 500
    code = "service_failed"


class StorageUnavailableError(RegistryError):
    """The object store that holds the registry's blobs (``s3://``) did not answer, failed
    (5xx), refused the credentials or lacks the bucket: nothing was recorded. Transient
    when the store is down: run the command again once it is back."""

    exit_code = 46
    http_status = 503
    code = "storage_unavailable"


class DatabaseUnavailableError(StorageUnavailableError):
    """The database that holds the registry's records (PostgreSQL) refused the connection,
    did not answer, or went away in the middle of a command: nothing of that command was
    recorded (its transaction rolled back). Transient when the database is down: run the
    command again once it is back. The message names the database, never a password."""

    exit_code = 47
    http_status = 503
    code = "database_unavailable"


def error_classes() -> tuple[type[RegistryError], ...]:
    """Every class of the tree, root first (the table, in code)."""
    found: list[type[RegistryError]] = []
    pending: list[type[RegistryError]] = [RegistryError]
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(sorted(cls.__subclasses__(), key=lambda c: c.exit_code))
    return tuple(c for c in found if c.__module__ == __name__)


def error_class(code: str) -> type[RegistryError]:
    """The class whose wire ``code`` this is (an HTTP client raises it again)."""
    for cls in error_classes():
        if cls.code == code:
            return cls
    return RegistryError


__all__ = [
    "AdapterProblem",
    "AliasInUseError",
    "AmbiguousRefError",
    "BadRequestError",
    "BaseMismatchError",
    "DatabaseUnavailableError",
    "DestinationExistsError",
    "DestinationUnwritableError",
    "ForbiddenError",
    "InUseError",
    "IntegrityError",
    "InvalidAdapterError",
    "InvalidBaseModelError",
    "InvalidDatasetError",
    "InvalidRefError",
    "InvalidRolloutError",
    "LeaseHeldError",
    "NameConflictError",
    "NotARegistryError",
    "NotQuarantinedError",
    "QuarantinedError",
    "ReadOnlyRegistryError",
    "RefNotFoundError",
    "RegistryError",
    "RegistryUnavailableError",
    "RequestTooLargeError",
    "RolloutConflictError",
    "SchemaVersionError",
    "SourceChangedError",
    "StorageFullError",
    "StorageUnavailableError",
    "UnauthorizedError",
    "UnsupportedLocationError",
    "VersionConflictError",
    "error_class",
    "error_classes",
]
