#!/usr/bin/env bash
# All set-up for curate on a fresh Linux machine with Python 3.11. Idempotent: a second run installs nothing.
#   bash scripts/setup.sh            the toolkit in .venv (torch CPU build first, then the pinned set)
#   bash scripts/setup.sh --review   also the embedded Argilla server's own virtualenv (.venv-argilla)
# System packages the test suite needs (chromium, postgresql) come from scripts/ci_services.sh (apt, as root).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REVIEW=0
for arg in "$@"; do
  case "$arg" in
    --review) REVIEW=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || { echo "curate needs Python 3.11 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 2; }

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=.venv/.curate-installed
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  # torch first, pinned: this resolves to the CPU build; a bare `torch` would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -e '.[dev]'
  # The Ray engine's extra: tests/engines/ run the pipeline on a real local Ray cluster (docs/scaling.md).
  .venv/bin/python -m pip install -q -e '.[ray]'
  echo "$WANT" > "$STAMP"
fi

if [ "$REVIEW" = 1 ]; then
  bash scripts/setup_argilla.sh
fi
