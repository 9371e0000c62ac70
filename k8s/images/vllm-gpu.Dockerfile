# The GPU vLLM servers' image: vLLM's official OpenAI-server image (CUDA, drivers'
# user-space libraries) with loraport's resolver plugin, installed by scripts/setup.sh's
# GPU path (vllm==0.32.0 from PyPI and requirements/cpu.lock without its CPU-only pins),
# the path `make setup` takes on a machine with a GPU.
#
#   docker build -f k8s/images/vllm-gpu.Dockerfile -t ghcr.io/loraport/loraport-vllm-gpu:0.1.0 .
#
# Not built on the machines this project is tested on (they have no container engine).
FROM vllm/vllm-openai:v0.32.0
WORKDIR /opt/loraport
COPY . .
# setup.sh takes its GPU path when `nvidia-smi -L` answers; a build has no GPU, so a
# stand-in answers for the build only (and is removed after it).
RUN printf '#!/bin/sh\necho "GPU 0: build stand-in"\n' > /usr/local/bin/nvidia-smi \
 && chmod +x /usr/local/bin/nvidia-smi \
 && PIP_NO_CACHE_DIR=1 ./scripts/setup.sh \
 && rm /usr/local/bin/nvidia-smi \
 && rm -rf /opt/loraport/.venv-quantize \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp loraport
ENV PATH=/opt/loraport/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1
USER 10001
ENTRYPOINT []
CMD ["python", "-m", "vllm.entrypoints.openai.api_server", "--help"]
