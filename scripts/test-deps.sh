#!/usr/bin/env bash
# What the test suite needs beyond the Python environments: a real Prometheus (the rollout
# tests scrape real gateways with it). Installed from Debian's packages when missing, so
# `make test` works on a fresh machine; skipped in well under a second when present.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: prometheus is missing; install it (Debian: apt-get install prometheus)" >&2
  exit 1
fi
echo "test-deps: installing prometheus (Debian package)" >&2
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
