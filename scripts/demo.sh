#!/usr/bin/env bash
# The main job on the embedded default: a local registry (./.loraport/registry unless
# REGISTRY_URL says otherwise) holding the demo zoo, and `gateway serve`, which launches
# and supervises one local vLLM server for the base model. Idempotent: pushing identical
# content again returns the existing versions.
set -euo pipefail
cd "$(dirname "$0")/.."
export REGISTRY_URL=${REGISTRY_URL:-$PWD/.loraport/registry}
R=.venv/bin/registry

$R init
$R base add examples/models/tiny-llama --name tiny-llama --license apache-2.0
for dir in examples/adapters/*/; do
  name=$(basename "$dir")
  $R dataset add "examples/data/$name.jsonl" --name "$name-data" --license apache-2.0
  $R push "$dir" --name "$name" --base tiny-llama --dataset "$name-data" --alias production
done
$R ls
cat >&2 <<MSG

loraport: starting the gateway on http://127.0.0.1:${GATEWAY_PORT:-8000} (local vLLM, CPU).
Try, once /ready says so:
  curl -s localhost:${GATEWAY_PORT:-8000}/v1/models
  curl -s localhost:${GATEWAY_PORT:-8000}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"extract","messages":[{"role":"user","content":"Hello, my name is Marcus. My coffee grinder has not arrived yet. My order number is A8167."}]}'
MSG
exec .venv/bin/gateway serve --port "${GATEWAY_PORT:-8000}"
