"""The loraport plugin for vLLM: code that runs inside a vLLM server, not in the gateway.

`server.plugin.vllm` is the LoRA resolver vLLM loads (entry point `loraport` in
`vllm.general_plugins`); `server.plugin.fetch` is what it does for a name. The gateway
never imports this package (tests/server/test_architecture.py).
"""
