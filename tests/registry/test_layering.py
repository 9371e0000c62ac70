"""The registry is the ground the other parts stand on: it imports none of them. What
follows a push reaches it through the `loraport.after_push` entry points instead."""

from importlib.metadata import entry_points
from pathlib import Path

from tests.support.imports import top_level_imports

REGISTRY = Path(__file__).resolve().parents[2] / "registry"


def test_the_registry_imports_no_other_part():
    for path in REGISTRY.rglob("*.py"):
        assert not top_level_imports(path) & {"server", "quantize", "deploy"}, path.name


def test_quantize_installs_the_after_push_hook():
    from quantize.hooks import evaluate_on_variants
    from registry.hooks import GROUP, after_push_hooks

    assert {ep.name for ep in entry_points(group=GROUP)} == {"variant-pairs"}
    assert [h.run for h in after_push_hooks()] == [evaluate_on_variants]
