"""The vLLM LoRA resolver plugin: a vLLM server that knows only `REGISTRY_URL` (and
`REGISTRY_TOKEN`) serves adapters from the registry by name.

Installed with the project (entry point `loraport` in the group `vllm.general_plugins`).
vLLM loads general plugins in every process it starts; `register` does nothing unless
`REGISTRY_URL` is set, and never touches the network. With it set, and runtime LoRA
updating on (`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`, which allows one API server process
only), a request whose `model` is `NAME@N` or a gateway's stable LoRA name that vLLM does
not hold yet makes vLLM call `resolve_lora`: the adapter is pulled into this server's own
cache (server/plugin/fetch.py), checked against the base it runs, and loaded.

An exception inside a resolver becomes a 500 in vLLM and skips any other resolver, so every
failure here is caught, logged with what to do, and answered None (vLLM's 404).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from vllm.lora.request import LoRARequest
from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

from registry.settings import RegistrySettings
from server.plugin.fetch import AdapterFetcher, NotServable

log = logging.getLogger("vllm.loraport")
NAME = "loraport"


class PluginSettings(BaseSettings):
    """The plugin's own settings (`LORAPORT_PLUGIN_*`); the registry's come from
    `REGISTRY_URL` / `REGISTRY_TOKEN` as for every loraport program."""

    model_config = SettingsConfigDict(env_prefix="LORAPORT_PLUGIN_", extra="ignore")

    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache/loraport/vllm-adapters")
    """Where this server keeps the adapters it pulled, one directory per content digest."""


class RegistryResolver(LoRAResolver):
    def __init__(self, fetcher: AdapterFetcher) -> None:
        self.fetcher = fetcher

    async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        try:
            path = await asyncio.to_thread(self.fetcher.fetch, base_model_name, lora_name)
        except NotServable as e:
            log.warning("loraport: not serving %r: %s", lora_name, e)
            return None
        except Exception as e:  # never a 500 from inside vLLM, never another resolver skipped
            log.warning(
                "loraport: cannot fetch %r from the registry at %s: %s",
                lora_name,
                self.fetcher.location,
                e,
            )
            return None
        if path is None:
            return None
        # vLLM gives the request its own unique id before loading it.
        return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(path))


def register() -> None:
    """The `vllm.general_plugins` entry point."""
    registry_settings = RegistrySettings()
    if not registry_settings.url:
        return
    settings = PluginSettings()
    fetcher = AdapterFetcher(
        registry_settings.url, settings.cache_dir, registry_settings.max_file_bytes
    )
    LoRAResolverRegistry.register_resolver(NAME, RegistryResolver(fetcher))
