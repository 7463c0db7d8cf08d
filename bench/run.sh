#!/usr/bin/env bash
# Run every benchmark end to end and print the summary table (about 15 minutes).
#   bench/run.sh                 # all parts
#   bench/run.sh http store      # some parts: http, length, store, batch, breakdown, projections, slow, faults,
#                                dashboard, personal
# Needs: the project's venv (.venv, as `make test` creates it, with the dev extras:
# pytest and eventsourcing[postgres]), PostgreSQL at BENCH_PG_URL
# (default postgresql://postgres@127.0.0.1:5432, a role allowed to CREATE DATABASE), and
# wrk for the HTTP part and nginx for the slow-client and fault parts (installed with apt-get when
# missing and running as root).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PYTHON" ]; then
  echo "no virtualenv at .venv: create it first (make test, or python -m venv .venv && .venv/bin/pip install -e '.[dev]')" >&2
  exit 1
fi
if ! "$PYTHON" -c "import eventsourcing.postgres" 2>/dev/null; then
  echo "eventsourcing[postgres] is missing from the venv: .venv/bin/pip install -e '.[dev]'" >&2
  exit 1
fi
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing wrk with apt-get" >&2
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else
    echo "wrk is not installed (sudo apt-get install -y wrk); the HTTP benchmark will be skipped" >&2
  fi
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing nginx with apt-get (the slow-client benchmark and the fault suite run it)" >&2
    apt-get install -y -qq nginx >/dev/null
  else
    echo "nginx is not installed (sudo apt-get install -y nginx); the slow-client and fault parts will be skipped" >&2
  fi
fi
exec "$PYTHON" -m bench "$@"
