"""Registry settings: the one place that reads the environment (prefix ``REGISTRY_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.adapter_bounds import (
    DEFAULT_MAX_LORA_SCALE,
    DEFAULT_MAX_UPDATE_RATIO,
    DEFAULT_MAX_WEIGHT_ABS,
    Bounds,
)

#: vLLM's default ``--max-lora-rank``; adapters above the serving limit are refused at push.
DEFAULT_MAX_LORA_RANK = 16


class RegistrySettings(BaseSettings):
    """Settings for opening and writing a registry.

    ``REGISTRY_URL`` is the location (a directory; ``http(s)://`` is reserved for the
    registry service). Set but empty, it counts as unset (the per-user default), as the
    XDG base-directory spec has it for ``XDG_DATA_HOME`` and as ``${VAR:-default}`` reads
    in a shell; an empty or relative ``XDG_DATA_HOME`` is ignored, as that spec says.
    ``REGISTRY_MAX_LORA_RANK`` and ``REGISTRY_MAX_FILE_BYTES`` bound what a push accepts;
    ``REGISTRY_MAX_WEIGHT_ABS``, ``REGISTRY_MAX_LORA_SCALE`` and
    ``REGISTRY_MAX_UPDATE_RATIO`` bound an adapter's magnitudes (:mod:`registry.adapter_bounds`).
    """

    model_config = SettingsConfigDict(env_prefix="REGISTRY_", extra="forbid", frozen=True)

    url: str | None = Field(
        default=None, description="registry location (a directory, or http(s):// of a service)"
    )
    token: SecretStr | None = Field(
        default=None,
        description="bearer token a client sends to a registry service; a `registry serve` "
        "given no --tokens file accepts this one token with write scope",
    )
    timeout_s: float = Field(
        default=30.0, gt=0, description="a client's limit on each call to a registry service"
    )
    serve_max_body_bytes: int = Field(
        default=16 * 2**20, ge=1024, description="largest JSON request the service reads"
    )
    serve_read_timeout_s: float = Field(
        default=60.0, gt=0, description="the service drops a client that sends nothing this long"
    )
    presign_s: int = Field(
        default=300,
        ge=0,
        le=7 * 24 * 3600,
        description="a registry service whose blobs are in S3 hands pulls a presigned URL "
        "valid this long (the bytes skip the service); 0 streams them through the service",
    )
    max_lora_rank: int = Field(default=DEFAULT_MAX_LORA_RANK, ge=1)
    max_file_bytes: int = Field(default=20 * 2**30, ge=1, description="largest single file")
    max_weight_abs: float = Field(default=DEFAULT_MAX_WEIGHT_ABS, gt=0, allow_inf_nan=False)
    max_lora_scale: float = Field(default=DEFAULT_MAX_LORA_SCALE, gt=0, allow_inf_nan=False)
    max_update_ratio: float = Field(default=DEFAULT_MAX_UPDATE_RATIO, gt=0, allow_inf_nan=False)
    user: str | None = Field(default=None, description="who to record instead of getpass")
    progress_min_bytes: int = Field(default=64 * 2**20, ge=0)
    busy_timeout_s: float = Field(default=60.0, gt=0)
    xdg_data_home: Path | None = Field(
        default=None, validation_alias=AliasChoices("XDG_DATA_HOME", "xdg_data_home")
    )

    @field_validator("url", "token", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("xdg_data_home", mode="before")
    @classmethod
    def _xdg_must_be_absolute(cls, value: Any) -> Any:
        """The XDG spec: an empty or relative XDG_DATA_HOME is invalid and ignored (a
        relative one would put the registry under whatever directory the CLI ran in)."""
        if isinstance(value, str | Path) and not Path(value).is_absolute():
            return None
        return value

    def bounds(self) -> Bounds:
        """The magnitude bounds a push holds an adapter to."""
        return Bounds(self.max_weight_abs, self.max_lora_scale, self.max_update_ratio)

    def default_location(self) -> Path:
        """The per-user data directory used when no location is given."""
        data_home = self.xdg_data_home or Path.home() / ".local" / "share"
        return data_home / "loraport" / "registry"
