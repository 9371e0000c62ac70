"""How the CLI prints records: JSON-ready dicts and plain-text tables."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from registry.digest import Digest
from registry.records import (
    AdapterVersion,
    BaseModel,
    CodeLineage,
    Dataset,
    Event,
    GcReport,
    PairResult,
    VariantInfo,
    VerifyReport,
)

Record = AdapterVersion | BaseModel | Dataset


def to_json(record: Record) -> dict[str, Any]:
    """A record as a JSON-ready dict (adapters also get ``ref``)."""
    data = dataclasses.asdict(record)
    if isinstance(record, AdapterVersion):
        data["ref"] = record.ref
        data["peft"]["target_modules"] = list(record.peft.target_modules)
        data["aliases"] = list(record.aliases)
    return data


def short(digest: str) -> str:
    """``sha256:`` plus the first 12 hex digits."""
    return Digest(digest).short


def code_text(code: CodeLineage | None) -> str:
    """``<commit>``, ``<commit> (dirty)``, ``<commit> (given)`` or ``unknown``."""
    if code is None:
        return "unknown"
    state = {True: " (dirty: uncommitted changes)", False: " (clean)", None: " (given)"}
    return code.commit + state[code.dirty]


def table(records: list[Record]) -> str:
    """One line per record: kind, name, version, digest, aliases, created."""
    rows = [("KIND", "NAME", "VERSION", "DIGEST", "ALIASES", "CREATED")]
    for r in records:
        version = str(r.version) if isinstance(r, AdapterVersion) else "-"
        aliases = ",".join(r.aliases) if isinstance(r, AdapterVersion) else ""
        if isinstance(r, AdapterVersion) and r.quarantine is not None:
            aliases = f"{aliases} (quarantined)".strip()
        rows.append((r.kind, r.name, version, short(r.digest), aliases, r.created_at))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def describe(record: Record) -> str:
    """Multi-line human description of one record."""
    lines = [f"{record.kind} {record.name}"]
    if isinstance(record, AdapterVersion):
        lines[0] = f"adapter {record.ref}"
        ds = record.dataset
        lines += [
            f"  digest:      {record.digest}",
            f"  base model:  {record.base_model.name} ({record.base_model.digest})",
            f"  dataset:     {f'{ds.name} ({ds.digest})' if ds.name else 'unknown'}",
            f"  code:        {code_text(record.code)}",
            f"  lora:        r={record.peft.r} alpha={record.peft.lora_alpha:g} "
            f"dropout={record.peft.lora_dropout:g} targets={','.join(record.peft.target_modules)}",
            f"  aliases:     {', '.join(record.aliases) or '-'}",
            f"  schema:      {'yes' if record.schema is not None else 'no'}",
            f"  meta:        {record.meta or '-'}",
        ]
        if record.quarantine is not None:
            q = record.quarantine
            lines.append(
                f"  QUARANTINED: {q.reason} ({q.at} by {q.who}; lift with "
                f"`registry quarantine rm {record.ref}`)"
            )
    elif isinstance(record, BaseModel):
        arch = record.architecture
        lines += [
            f"  digest:       {record.digest}",
            f"  architecture: {', '.join(arch.get('architectures', []))} "
            f"hidden={arch.get('hidden_size')} layers={arch.get('num_hidden_layers')}",
            f"  targets:      {', '.join(arch.get('target_modules', []))}",
            f"  license:      {record.license or '-'}",
            f"  parent:       {record.parent or '-'}  quantization: {record.quantization or '-'}",
        ]
    else:
        lines += [
            f"  digest:  {record.digest}",
            f"  records: {record.records}  bytes: {record.size}",
            f"  license: {record.license or '-'}",
        ]
    lines.append(f"  created:     {record.created_at} by {record.created_by}")
    return "\n".join(lines)


def variant_json(info: VariantInfo | None, children: Sequence[VariantInfo]) -> dict[str, Any]:
    """What ``registry show BASE`` adds: a variant's parent digest, quantization, fidelity
    and gate (``info``); a base's own variants (``children``). Empty when neither."""
    extra: dict[str, Any] = {}
    if info is not None:
        extra["parent_digest"] = info.parent_digest
        extra["quantization"] = info.quantization
        extra["fidelity"] = info.fidelity
        extra["gate"] = {"passed": info.passed, "forced": info.forced}
    if children:
        extra["variants"] = [
            {
                "name": v.name,
                "digest": v.digest,
                "method": v.quantization.get("method"),
                "passed": v.passed,
                "forced": v.forced,
            }
            for v in children
        ]
    return extra


def pairs_json(results: Sequence[PairResult]) -> dict[str, Any]:
    """What ``registry show ADAPTER`` adds: its results on variants (empty when none)."""
    if not results:
        return {}
    return {
        "variant_evals": [
            {
                "variant": p.variant,
                "variant_digest": p.variant_digest,
                "passed": p.passed,
                "failed_gates": list(p.failed_gates),
                "figures": p.figures,
                "evaluated_at": p.evaluated_at,
            }
            for p in results
        ]
    }


def describe_extra(extra: dict[str, Any]) -> str:
    """Plain-text lines for :func:`variant_json`'s or :func:`pairs_json`'s dict (empty
    string when it is empty), to follow :func:`describe`."""
    lines: list[str] = []
    if "quantization" in extra:
        q, fid = extra["quantization"], extra["fidelity"]
        base = fid.get("base", {})
        state = "passed" if extra["gate"]["passed"] else "FORCED past its gate"
        lines += [
            f"  parent digest: {extra['parent_digest']}",
            f"  quantization: {q.get('method')} {q.get('scheme')} recipe {q.get('recipe_digest')}",
            f"  fidelity:     size ratio {fid.get('size_ratio')}, perplexity ratio "
            f"{base.get('perplexity_ratio')}, token agreement {base.get('token_agreement')} "
            f"({state})",
        ]
    for v in extra.get("variants", []):
        flag = "" if v["passed"] else " (forced)"
        lines.append(f"  variant:      {v['name']} ({v['method']}){flag}")
    for p in extra.get("variant_evals", []):
        verdict = "passed" if p["passed"] else "FAILED " + ", ".join(p["failed_gates"])
        lines.append(f"  on variant:   {p['variant']}: {verdict}")
    return "".join("\n" + line for line in lines)


def event_line(event: Event) -> str:
    """``#id at who action name@version detail``."""
    target = event.name if event.version is None else f"{event.name}@{event.version}"
    detail = " ".join(f"{k}={v}" for k, v in sorted(event.detail.items()) if v is not None)
    return f"#{event.id} {event.at} {event.who} {event.action} {target} {detail}".rstrip()


def event_json(event: Event) -> dict[str, Any]:
    """An event as a JSON-ready dict."""
    return dataclasses.asdict(event)


def gc_lines(report: GcReport, grace: str) -> list[str]:
    """What ``registry gc`` removed and kept, and a summary line."""
    lines = [f"removed {r}" for r in report.removed]
    lines += [f"kept {k} (younger than {grace})" for k in report.kept]
    lines.append(f"gc: removed {len(report.removed)}, kept {len(report.kept)} (grace {grace})")
    return lines


def verify_lines(report: VerifyReport) -> list[str]:
    """Errors, orphans and a summary line."""
    lines = [f"ERROR {e}" for e in report.errors]
    lines += [f"orphan {o} (harmless; `registry gc` removes it)" for o in report.orphans]
    lines += [f"removed {c}" for c in report.collected]
    verdict = "ok" if report.ok else f"{len(report.errors)} problem(s)"
    lines.append(f"checked {report.checked} blob(s): {verdict}")
    return lines
