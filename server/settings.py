"""The gateway's one settings object (env prefix `GATEWAY_`, `__` for nesting).

This is the only module of `server` that reads the process environment. The registry
location also comes from `REGISTRY_URL`, as for every loraport program.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.resolver import DEFAULT_MAX_LORA_RANK
from server.routing import RoutingPolicy

StructuredBackend = Literal["xgrammar", "guidance", "outlines"]


class ApiKey(BaseModel):
    """One API key, stored only as the sha256 hex of the secret (`gateway hash-key`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    adapters: tuple[str, ...] = ("*",)
    """Adapter (or base model) names this key may call; `*` allows every name."""


class LocalVllm(BaseModel):
    """How `gateway serve` launches its own vLLM server when no `--backend` is given."""

    model_config = ConfigDict(extra="forbid")

    python: str = Field(default_factory=lambda: _default_python())
    unix_socket: bool = True
    """Reach the local vLLM over a Unix domain socket (in a private directory under the
    system's temporary directory) instead of TCP on loopback: a cheaper hop for every
    request (issue 22), and no port for anything else on the host to reach. Off: `host`
    and `port` below."""
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port (with `unix_socket` off)."""
    dtype: str = "bfloat16"
    max_model_len: int = 512
    max_loras: int = 4
    """Adapters vLLM batches at once (its `--max-loras`)."""
    max_lora_rank: int = DEFAULT_MAX_LORA_RANK
    """vLLM's `--max-lora-rank`: by default the registry's limit (`REGISTRY_MAX_LORA_RANK`'s
    default), so every adapter a push accepts can be loaded."""
    gpu_memory_utilization: float = 0.2
    """On the CPU backend: the fraction of host memory reserved for the KV cache."""
    startup_timeout_s: float = 300.0
    restart_backoff_s: float = 1.0
    restart_backoff_max_s: float = 30.0
    extra_args: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _socket_or_address(self) -> LocalVllm:
        """A host or port given while vLLM listens on a socket would be ignored: refused,
        so an address someone relies on does not silently go away."""
        given = sorted({"host", "port"} & self.model_fields_set)
        if self.unix_socket and given:
            names = " and ".join(f"GATEWAY_LOCAL__{n.upper()}" for n in given)
            raise ValueError(
                f"{names} only apply with GATEWAY_LOCAL__UNIX_SOCKET=false (the local vLLM "
                "listens on a Unix socket by default): set that too, or leave them unset"
            )
        return self


class GatewaySettings(BaseSettings):
    """Everything `gateway serve` can be told. CLI flags override the environment."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_nested_delimiter="__", extra="forbid"
    )

    registry: str | None = Field(
        default=None, validation_alias=AliasChoices("GATEWAY_REGISTRY", "REGISTRY_URL", "registry")
    )
    host: str = "127.0.0.1"
    port: int = 8000

    @field_validator("registry", mode="before")
    @classmethod
    def _empty_registry_is_unset(cls, value: object) -> object:
        """An empty `GATEWAY_REGISTRY` / `REGISTRY_URL` counts as unset, as the registry's
        own settings read it (docs/registry.md, "Registry location")."""
        return None if value == "" else value

    backends: tuple[str, ...] = ()
    """URLs of running vLLM OpenAI servers; empty: launch one locally."""
    backends_pull: bool = False
    """The backends pull adapters from the registry themselves, by name (they run the
    loraport resolver plugin with `REGISTRY_URL`: server/plugin/vllm.py), so they share no
    directory with the gateway. Off: the gateway pulls each adapter and has vLLM load it
    from the gateway's cache by path (the embedded default)."""
    backends_dns: str | None = None
    """One URL (`http://vllm-headless:8000`) whose host names every backend: each address
    it resolves to is a backend (server/backend_dns.py). Exclusive with `backends`."""
    backends_dns_refresh_s: float = Field(default=10.0, gt=0)
    """How often `backends_dns` is resolved again (new addresses join, vanished ones leave)."""
    backends_sync_s: float = Field(default=2.0, ge=0)
    """With remote backends: how often each backend's `/v1/models` and `/metrics` are read, so
    adapters and requests of other gateways in front of it count (server/backend_sync.py).
    0 turns it off (this gateway alone fronts its backends)."""
    base: str | None = None
    """Base model ref to serve; default: the registry's only base model."""
    cache_dir: Path = Path(".loraport/cache")
    """Where adapters and the base model are materialised (digest-verified)."""

    local: LocalVllm = Field(default_factory=LocalVllm)
    structured_backend: StructuredBackend = "guidance"
    disable_any_whitespace: bool = True

    max_loaded_adapters: int = 8
    """LRU bound: adapters registered in one vLLM server at once."""
    routing: RoutingPolicy = "affinity"
    """With several backends: `affinity` sends an adapter to the backends that hold it
    (bounded by `spread_in_flight`); `least-loaded` to the one with the fewest requests in
    flight, whatever it holds (server/routing.py)."""
    spread_in_flight: int = Field(default=16, ge=1)
    """With several backends: an adapter goes to a backend that does not hold it yet only
    when every backend holding it has this many requests in flight (server/routing.py)."""
    max_body_bytes: int = 1 << 20
    max_tokens_limit: int = 1024
    default_max_tokens: int = 256
    max_in_flight: int = 64
    max_prompts_per_request: int = 16
    """A `/v1/completions` prompt list longer than this is a 400 (each prompt is a sequence
    vLLM generates, like `n`)."""
    max_tokens_in_flight: int = 32768
    """Work admitted at once, in tokens: for each request (prompt tokens, estimated, plus
    max_tokens for each prompt) x n, summed over requests in flight. One request over it is
    a 400; one that would push the sum over it is a 429."""
    request_timeout_s: float = 300.0

    api_keys: tuple[ApiKey, ...] = ()
    """Empty: no authentication (the embedded default)."""

    probe_interval_s: float = 30.0
    probe_timeout_s: float = 20.0
    registry_timeout_s: float = Field(default=10.0, gt=0)
    """Limit on each registry lookup (a registry that does not answer in time counts as down)."""
    registry_pull_timeout_s: float = Field(default=600.0, gt=0)
    """Limit on one pull of an adapter or the base model from the registry."""
    registry_watch_s: float = Field(default=10.0, gt=0, le=30)
    """How long one watch of the registry's change token waits (a long-poll on a registry
    service); a change is seen as soon as it is committed either way."""
    cpu_placement: Literal["none", "gateway", "gateway+engine", "gateway+vllm"] = "gateway+engine"
    """On a CPU host, where the embedded default runs its processes: see server/placement.py."""
    cpu_affinity: str | None = None
    """Cores for the gateway itself (e.g. `1`, `2-7`), for a gateway beside an external vLLM
    on one CPU host: the cores vLLM's worker does not bind."""
    access_log: bool = True
    """One line per request (`loraport.access`, to stderr) with its x-request-id."""
    price_per_accelerator_hour: float = 0.0
    """For the estimated cost per request metric (0 disables it)."""

    @model_validator(mode="after")
    def _one_way_to_name_backends(self) -> GatewaySettings:
        if self.backends and self.backends_dns:
            raise ValueError("give backends or backends_dns, not both")
        if self.backends_pull and not self.remote:
            raise ValueError(
                "backends_pull is for vLLM servers given with --backend or --backends-dns; "
                "the local vLLM gets its adapters from the gateway"
            )
        return self

    @property
    def remote(self) -> bool:
        """The backends are servers this gateway did not launch (and may share)."""
        return bool(self.backends or self.backends_dns)

    @field_validator("backends_dns")
    @classmethod
    def _dns_url(cls, value: str | None) -> str | None:
        if value is not None:
            from server.backend_dns import Name

            Name.parse(value)
        return value

    @field_validator("cpu_affinity")
    @classmethod
    def _cpus(cls, value: str | None) -> str | None:
        if value is not None:
            from server.placement import parse_cpus

            parse_cpus(value)
        return value


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """`GATEWAY_*` variables (of `environ`, default this process's) that name no setting
    (pydantic-settings ignores them), each with the closest real name: a misspelt limit
    must not pass silently."""
    environ = os.environ if environ is None else environ
    known = {f"GATEWAY_{n.upper()}" for n in GatewaySettings.model_fields}
    known |= {f"GATEWAY_LOCAL__{n.upper()}" for n in LocalVllm.model_fields}
    problems = []
    for var in sorted(environ):
        upper = var.upper()
        if not upper.startswith("GATEWAY_") or upper in known:
            continue
        close = difflib.get_close_matches(upper, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"{var} is not a gateway setting{hint}; see docs/gateway.md")
    return problems


def _default_python() -> str:
    import sys

    return sys.executable


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a child process: this one's, plus `extra`."""
    env = dict(os.environ)
    env.update(extra)
    return env
