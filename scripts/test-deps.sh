#!/usr/bin/env bash
# What the test suite needs beyond the Python environments: a real Prometheus (the rollout
# tests scrape real gateways with it) and a real PostgreSQL server (the registry's records
# on PostgreSQL: tests/support/postgres.py runs initdb/pg_ctl). Installed from Debian's
# packages when missing, so `make test` works on a fresh machine; skipped in well under a
# second when present.
set -euo pipefail
missing=()
if ! command -v prometheus >/dev/null 2>&1; then
  missing+=(prometheus)
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: ${missing[*]} missing; install (Debian: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "test-deps: installing ${missing[*]} (Debian packages)" >&2
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
