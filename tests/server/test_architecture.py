"""The gateway reaches the registry through one module, and vLLM only over HTTP."""

from pathlib import Path

from tests.support.imports import top_level_imports as imports

SERVER = Path(__file__).resolve().parents[2] / "server"


def test_only_the_resolver_imports_the_registry():
    users = sorted(p.name for p in SERVER.glob("*.py") if "registry" in imports(p))
    assert users == ["resolver.py"]


def test_no_module_imports_vllm():
    assert not [p.name for p in SERVER.glob("*.py") if "vllm" in imports(p)]
