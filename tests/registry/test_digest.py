from __future__ import annotations

import hashlib
import json

from registry.digest import (
    ManifestEntry,
    manifest_digest,
    manifest_json,
    parse_manifest,
)


def test_manifest_is_sorted_canonical_json() -> None:
    entries = [ManifestEntry("b.txt", 2, "bb"), ManifestEntry("a/x.json", 1, "aa")]
    body = manifest_json(entries)
    assert json.loads(body)[0]["path"] == "a/x.json"
    assert b" " not in body
    assert manifest_digest(entries) == "sha256:" + hashlib.sha256(body).hexdigest()
    assert manifest_digest(list(reversed(entries))) == manifest_digest(entries)
    assert parse_manifest(body) == tuple(sorted(entries, key=lambda e: e.path))


def test_digest_changes_with_any_field() -> None:
    base = [ManifestEntry("a", 1, "aa")]
    assert manifest_digest(base) != manifest_digest([ManifestEntry("b", 1, "aa")])
    assert manifest_digest(base) != manifest_digest([ManifestEntry("a", 2, "aa")])
    assert manifest_digest(base) != manifest_digest([ManifestEntry("a", 1, "ab")])
