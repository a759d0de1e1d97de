#!/usr/bin/env bash
# Lint and types, as CI runs them (.ci/run, before the tests):
#   ruff check .   lint + import order of the whole repository ([tool.ruff] in pyproject.toml)
#   mypy           types of curate/ ([tool.mypy] in pyproject.toml)
# Both always run; the exit status is non-zero when either finds anything, and the last line sums it up.
# ruff and mypy are pinned in the dev extra, which scripts/setup.sh installs into .venv (nothing when it is current).
# Extra arguments go to ruff, e.g. `bash scripts/lint.sh --fix`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "== ruff check . =="
ruff_rc=0
.venv/bin/ruff check . --output-format concise "$@" 2>&1 | tee "$out/ruff" || ruff_rc=$?
echo "== mypy =="
mypy_rc=0
.venv/bin/mypy 2>&1 | tee "$out/mypy" || mypy_rc=$?

# ruff's concise lines are path:line:col: CODE message; mypy's last line is "Found N errors in K files (...)".
ruff_n="$(grep -cE '^[^ :]+:[0-9]+:[0-9]+: ' "$out/ruff" || true)"
if [ "$ruff_rc" = 0 ]; then
  ruff_txt="ruff clean"
elif [ "$ruff_n" -gt 0 ]; then
  ruff_txt="ruff $ruff_n finding(s)"
else
  ruff_txt="ruff failed (exit $ruff_rc)"
fi
if [ "$mypy_rc" = 0 ]; then
  mypy_txt="mypy clean"
elif found="$(grep -oE '^Found [0-9]+ errors? in [0-9]+ files?' "$out/mypy")"; then
  mypy_txt="mypy ${found#Found }"
else
  mypy_txt="mypy failed (exit $mypy_rc)"
fi

if [ "$ruff_rc" = 0 ] && [ "$mypy_rc" = 0 ]; then
  echo "lint: OK ($ruff_txt, $mypy_txt)"
else
  echo "lint: FAILED ($ruff_txt, $mypy_txt)"
  exit 1
fi
