#!/usr/bin/env bash
# A small virtualenv with datasets 4.0 (what some trainers pin), for tests/test_export.py: the export must load
# there as well as with the toolkit's datasets 5.x. Only datasets and its own dependencies; nothing of curate.
# Idempotent and cached: re-running installs nothing when the pins are there.
# Location: $CURATE_DATASETS4_VENV or <repo>/.venv-datasets4.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CURATE_DATASETS4_VENV:-$ROOT/.venv-datasets4}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
# huggingface-hub < 1 as in datasets 4.0's time; pyarrow as in the toolkit (its wheel is already cached).
PINS=(datasets==4.0.0 'huggingface-hub<1' pyarrow==26.0.1)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("datasets") != "4.0.0")' 2>/dev/null; then
  echo "datasets 4.0 venv ready: $VENV"
  exit 0
fi
"$VENV/bin/python" -m pip install -q "${PINS[@]}"
echo "datasets 4.0 venv ready: $VENV"
