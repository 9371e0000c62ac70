"""The product's docs and comments stand alone: nothing in the repository points to the
design notes kept outside it (they are not shipped); what a reader needs is in docs/."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = {".py", ".md", ".sh", ".toml", ".yaml", ".yml", ".txt", ".cfg", ".ini", ".json"}
# Spelt in pieces so that this file does not match itself.
OUTSIDE = ("../" + "shared", "DESIGN" + ".md", "ENVIRONMENT" + ".md", "STYLE" + ".md")


def _files() -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if any(p.startswith(".") or p in ("__pycache__", "node_modules") for p in parts):
            continue
        if path.is_file() and (path.suffix in TEXT or path.name == "Makefile"):
            found.append(path)
    return found


def test_nothing_points_outside_the_repository() -> None:
    files = _files()
    assert ROOT / "README.md" in files and ROOT / "docs" / "vllm.md" in files
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if any(word in line for word in OUTSIDE)
    ]
    assert hits == []


def test_docs_links_resolve() -> None:
    """Every `docs/NAME.md` a file mentions exists."""
    import re

    missing = sorted(
        {
            f"{path.relative_to(ROOT)}: {name}"
            for path in _files()
            for name in re.findall(r"docs/[a-z_]+\.md", path.read_text(errors="replace"))
            if not (ROOT / name).is_file()
        }
    )
    assert missing == []
