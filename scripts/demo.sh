#!/usr/bin/env bash
# The main job on the embedded default: the default local registry (the one every
# `registry` command uses: $REGISTRY_URL, else ~/.local/share/loraport/registry) holding
# the demo zoo, and `gateway serve`, which launches and supervises one local vLLM server
# for the base model. Idempotent: pushing identical content again returns the existing
# versions. GATEWAY_PORT=8001 make demo picks another port; Ctrl-C stops the gateway and
# its vLLM.
set -euo pipefail
cd "$(dirname "$0")/.."
R=.venv/bin/registry
PORT=${GATEWAY_PORT:-8000}

$R init
$R base add examples/models/tiny-llama --name tiny-llama --license apache-2.0
for dir in examples/adapters/*/; do
  name=$(basename "$dir")
  $R dataset add "examples/data/$name.jsonl" --name "$name-data" --license apache-2.0
  $R push "$dir" --name "$name" --base tiny-llama --dataset "$name-data"
done
$R ls
cat >&2 <<MSG

loraport: starting the gateway on http://127.0.0.1:$PORT (local vLLM, CPU; its log:
.loraport/cache/vllm.log). /ready answers 200 in about 40 s. Then try:
  curl -s localhost:$PORT/v1/models
  curl -s localhost:$PORT/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"extract","messages":[{"role":"user","content":"Hello, my name is Marcus. My coffee grinder has not arrived yet. My order number is A8167."}]}'
Ctrl-C stops the gateway and its vLLM.
MSG
exec .venv/bin/gateway serve --port "$PORT" --base tiny-llama
