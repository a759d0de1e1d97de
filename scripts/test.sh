#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up everything it needs (system packages, both virtualenvs,
# PostgreSQL), then pytest. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh --system --review
eval "$(bash scripts/ci_services.sh)"   # starts PostgreSQL for the review tests; exports CURATE_TEST_PG_URL
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRL_EXPERIMENTAL_SILENCE=1
.venv/bin/python -m pytest -q "$@"
