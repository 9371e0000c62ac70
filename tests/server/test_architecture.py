"""The gateway reaches the registry through one module, and vLLM only over HTTP. The
vLLM plugin (server/plugin/) runs inside vLLM servers, not in the gateway: it may import
both, and no gateway module imports it."""

from pathlib import Path

from tests.support.imports import imported_names
from tests.support.imports import top_level_imports as imports

SERVER = Path(__file__).resolve().parents[2] / "server"


def test_only_the_resolver_imports_the_registry():
    users = sorted(p.name for p in SERVER.glob("*.py") if "registry" in imports(p))
    assert users == ["resolver.py"]


def test_no_module_imports_vllm():
    assert not [p.name for p in SERVER.glob("*.py") if "vllm" in imports(p)]


def test_no_gateway_module_imports_the_vllm_plugin():
    users = [
        p.name
        for p in SERVER.glob("*.py")
        if any(n.startswith("server.plugin") for n in imported_names(p))
    ]
    assert not users


def test_only_the_plugin_entry_point_imports_vllm():
    plugin = SERVER / "plugin"
    users = sorted(p.name for p in plugin.glob("*.py") if "vllm" in imports(p))
    assert users == ["vllm.py"]


def test_the_local_vllm_takes_every_rank_a_push_accepts_by_default():
    """One home for the rank limit: the registry's default, read by the gateway's vLLM."""
    from pathlib import Path

    from registry.settings import DEFAULT_MAX_LORA_RANK, RegistrySettings
    from server.settings import GatewaySettings, LocalVllm
    from server.supervisor import vllm_command

    cmd = vllm_command(GatewaySettings(local=LocalVllm()), Path("/m"), "base", 8001)
    rank = int(cmd[cmd.index("--max-lora-rank") + 1])
    assert rank == DEFAULT_MAX_LORA_RANK == RegistrySettings.model_fields["max_lora_rank"].default
