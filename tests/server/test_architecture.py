"""The gateway reaches the registry through one module, and vLLM only over HTTP."""

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_resolver_imports_the_registry():
    users = sorted(p.name for p in SERVER.glob("*.py") if "registry" in imports(p))
    assert users == ["resolver.py"]


def test_no_module_imports_vllm():
    assert not [p.name for p in SERVER.glob("*.py") if "vllm" in imports(p)]
