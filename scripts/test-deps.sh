#!/usr/bin/env bash
# What the test suite needs beyond the Python environments: a real Prometheus with its
# promtool (the rollout tests scrape real gateways with it; tests/k8s checks the alert rules
# with promtool), kubectl (tests/k8s renders the kustomize overlays with `kubectl
# kustomize`) and a real PostgreSQL server (the registry's records on PostgreSQL:
# tests/support/postgres.py runs initdb/pg_ctl). Installed from Debian's packages when
# missing, so `make test` works on a fresh machine; skipped in well under a second when
# present.
set -euo pipefail
missing=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v kubectl >/dev/null 2>&1 || missing+=(kubectl)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ "${#missing[@]}" = 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: ${missing[*]} missing; install (Debian: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "test-deps: installing ${missing[*]} (Debian packages)" >&2
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
