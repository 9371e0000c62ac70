"""The Prometheus Operator's published schemas for its `monitoring.coreos.com/v1` kinds,
made strict. They come from `cloudcoil-models-prometheus-operator` (PyPI; pinned in
requirements/cpu.lock): pydantic models generated from the operator's CRDs, whose
package version is the operator's release (0.80.1.0: operator v0.80.1). Nothing of the
CRDs is copied into this repository.

The models themselves ignore a field they do not know (pydantic's default), so the
checks here use each model's JSON schema (the CRD's openAPIV3Schema: types, enums,
patterns, required fields) with three changes:

- every object with named properties refuses any other (``additionalProperties: false``),
  as the API server's pruning would silently drop a typo'd field;
- an optional field is not nullable (the generated models let ``None`` through);
- a Go-only regular expression, ``^(?i)...``, is written the way Python reads it.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pydantic
from cloudcoil.models.prometheus_operator import v1

#: The distribution the schemas come from, and its version (the operator's release).
PACKAGE = "cloudcoil-models-prometheus-operator"
PACKAGE_VERSION = version(PACKAGE)
API_VERSION = "monitoring.coreos.com/v1"
KINDS: dict[str, type[pydantic.BaseModel]] = {
    "ServiceMonitor": v1.ServiceMonitor,
    "PodMonitor": v1.PodMonitor,
    "Probe": v1.Probe,
    "PrometheusRule": v1.PrometheusRule,
}
_NULL = {"type": "null"}


def strict(node: Any) -> Any:
    """``node`` (a JSON schema, or part of one) with the three changes above."""
    if isinstance(node, list):
        return [strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    alternatives = node.get("anyOf")
    if isinstance(alternatives, list) and _NULL in alternatives:
        kept = [a for a in alternatives if a != _NULL]
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
        node = {**kept[0], **rest} if len(kept) == 1 else {**rest, "anyOf": kept}
    out = {k: strict(v) for k, v in node.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    pattern = out.get("pattern")
    if isinstance(pattern, str) and pattern.startswith("^(?i)"):
        out["pattern"] = "(?i)^" + pattern.removeprefix("^(?i)")
    return out


def schema(kind: str) -> dict[str, Any]:
    """The strict published schema of ``kind`` (apiVersion and kind fixed, as required)."""
    out: dict[str, Any] = strict(KINDS[kind].model_json_schema(by_alias=True))
    out["required"] = sorted({*out.get("required", []), "apiVersion", "kind", "metadata"})
    return out


SCHEMAS = {kind: schema(kind) for kind in KINDS}
