#!/usr/bin/env bash
# Services the review tests need: PostgreSQL (started, with a test role + database), Debian's Chromium (for the
# Playwright browser test) and a CJK font for it (fonts-noto-cjk: without one Chromium draws Chinese as boxes, and
# the browser test checks the glyphs are drawn). Installs them with apt when missing (needs root). Idempotent.
# Prints the PostgreSQL URL on its last line; callers export it as CURATE_TEST_PG_URL:
#   export CURATE_TEST_PG_URL="$(bash scripts/ci_services.sh | tail -n1)"
set -euo pipefail
PG_USER="${CURATE_PG_USER:-curate}"
PG_PASSWORD="${CURATE_PG_PASSWORD:-curate-test}"
PG_DB="${CURATE_PG_DB:-curate_test}"
PG_PORT="${CURATE_PG_PORT:-5432}"
log() { echo "ci_services: $*" >&2; }

need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need+=(fonts-noto-cjk)
# a CJK face for report.html's font stack in the browser tests (1.6 MB); without one Chinese renders as boxes
fc-list :lang=zh 2>/dev/null | grep -q . || need+=(fonts-wqy-microhei)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

ver="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
if ! pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main"' | grep -q .; then
  log "creating cluster $ver/main"
  pg_createcluster "$ver" main -p "$PG_PORT" >&2
fi
if ! pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $4}' | grep -q online; then
  log "starting PostgreSQL $ver"
  pg_ctlcluster "$ver" main start >&2
fi
port="$(pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $3}')"
for _ in $(seq 1 60); do
  su postgres -c "psql -p $port -tAc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.5
done
psql_q() { su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -tAc \"$1\""; }
if [ "$(psql_q "select 1 from pg_roles where rolname='$PG_USER'")" != "1" ]; then
  psql_q "create role $PG_USER login password '$PG_PASSWORD' createdb" >&2
fi
if [ "$(psql_q "select 1 from pg_database where datname='$PG_DB'")" != "1" ]; then
  psql_q "create database $PG_DB owner $PG_USER" >&2
fi
echo "postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$port/$PG_DB"
