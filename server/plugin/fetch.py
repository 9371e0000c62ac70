"""What a vLLM server does to serve an adapter it was asked for by name: find it in the
registry, check it fits the base this server runs, and pull it into the server's own
cache (digest-verified). The vLLM resolver plugin (server/plugin/vllm.py) calls this on a
thread; nothing here imports vLLM.

Only immutable names are served, so a name never means other weights (a reused name can
reuse a stale prefix cache, vllm#42125): `NAME@N`, and the stable name a gateway loads a
version under (`NAME@N+<12 hex>`, registry.lora_name), whose hex must match the content.
Anything else (a bare name, an alias, a path) is not ours: vLLM answers 404 as it would
without the plugin. Names never reach the filesystem: the cache is keyed by the content
digest the registry gives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import registry
from registry.refs import VersionRef

log = logging.getLogger("vllm.loraport")
STALE_INCOMING_S = 3600.0
"""A half-done pull older than this is a dead process's (a live pull renews nothing, so
this bounds the longest pull it must not disturb)."""


class NotServable(Exception):
    """The name is ours, but this server must not serve it; the message says why."""


@dataclass(frozen=True)
class Wanted:
    """An adapter version a request named: its `NAME@N`, and the content the name promises."""

    ref: str
    hex_prefix: str | None = None


def wanted(lora_name: str) -> Wanted | None:
    """The version `lora_name` names, or None when it is not an immutable loraport name."""
    if not isinstance(lora_name, str) or len(lora_name) > 512:
        return None
    stable = registry.parse_lora_name(lora_name)
    if stable is not None:
        return Wanted(f"{stable.name}@{stable.version}", stable.digest_prefix)
    try:
        ref = registry.parse_ref(lora_name)
    except registry.InvalidRefError:
        return None
    if isinstance(ref, VersionRef):
        return Wanted(f"{ref.name}@{ref.version}")
    return None


class AdapterFetcher:
    """Pulls adapters for one vLLM server. Thread-safe; one registry handle for all calls."""

    def __init__(self, location: str, cache_dir: Path, max_file_bytes: int) -> None:
        self.location = location
        self.cache_dir = cache_dir
        self._max_file_bytes = max_file_bytes
        self._lock = threading.Lock()
        self._reg: registry.Registry | None = None
        self._bases: dict[str, registry.BaseModel] = {}
        self._swept = False

    def close(self) -> None:
        if self._reg is not None:
            self._reg.close()

    def fetch(self, model_path: str, lora_name: str) -> Path | None:
        """The local directory of the adapter `lora_name` names, ready to load on the base
        at `model_path` (vLLM's `--model`); None when the name is not ours or not in the
        registry. NotServable when it is ours but must not be served here."""
        want = wanted(lora_name)
        if want is None:
            return None
        reg = self._registry()
        try:
            adapter = reg.adapter(want.ref)
        except registry.RefNotFoundError:
            return None
        if want.hex_prefix is not None and adapter.digest.hex[:12] != want.hex_prefix:
            raise NotServable(
                f"{lora_name} names content {want.hex_prefix}, but {adapter.ref} is "
                f"{adapter.digest.short}: a stable name never changes its weights"
            )
        if adapter.quarantine is not None:
            raise NotServable(
                f"{adapter.ref} is quarantined ({adapter.quarantine.reason}); lift it with "
                f"`registry quarantine rm {adapter.ref}`"
            )
        base = self._served_base(model_path)
        if adapter.base_model.digest != base.digest:
            raise NotServable(
                f"{adapter.ref} was trained on base {adapter.base_model.name!r} "
                f"({adapter.base_model.digest}); this server runs {base.name!r} ({base.digest})"
            )
        return self._pull(reg, adapter)

    def _registry(self) -> registry.Registry:
        with self._lock:
            if self._reg is None:
                self._reg = registry.open(self.location, create=False, read_only=True)
            return self._reg

    def _served_base(self, model_path: str) -> registry.BaseModel:
        """The registry's record of the base at `model_path`, found by its content (once)."""
        with self._lock:
            known = self._bases.get(model_path)
        if known is not None:
            return known
        path = Path(model_path)
        if not path.is_dir():
            raise NotServable(
                f"vLLM serves {model_path!r}, which is not a directory: serve a base pulled "
                "from the registry (`registry pull BASE DIR`, then `vllm serve DIR`) so that "
                "adapters can be checked against it"
            )
        try:
            digest = registry.base_digest_of(path, self._max_file_bytes)
        except registry.InvalidBaseModelError as e:
            raise NotServable(str(e)) from None
        try:
            base = self._registry().base(str(digest))
        except registry.RefNotFoundError:
            raise NotServable(
                f"the model vLLM serves ({model_path}, {digest}) is not a base in the registry "
                f"at {self.location}; add it with `registry base add {model_path} --name NAME`"
            ) from None
        log.info("loraport: this server runs base %s (%s)", base.name, base.digest)
        with self._lock:
            self._bases[model_path] = base
        return base

    def _pull(self, reg: registry.Registry, adapter: registry.AdapterVersion) -> Path:
        dest = self.cache_dir / adapter.digest.hex
        if dest.is_dir():
            return dest
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._sweep()
        incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.cache_dir))
        try:
            reg.pull(adapter.ref, incoming / "adapter")  # digest-verified by the registry
            try:
                os.rename(incoming / "adapter", dest)
            except OSError:
                if not dest.is_dir():  # another process may have won the race
                    raise
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        log.info("loraport: pulled %s into %s", adapter.ref, dest)
        return dest

    def _sweep(self) -> None:
        """Remove pulls a killed server left half done (once per process): only a whole,
        verified pull is ever renamed to its digest, so these are never read."""
        with self._lock:
            if self._swept:
                return
            self._swept = True
        cutoff = time.time() - STALE_INCOMING_S
        for leftover in self.cache_dir.glob(".incoming-*"):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover, ignore_errors=True)
