#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up everything it needs (system packages, both virtualenvs,
# PostgreSQL), then pytest. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh --review
bash scripts/setup_datasets4.sh   # datasets 4.0 beside the toolkit's 5.x: the export must load in both
# apt: chromium (browser test) and PostgreSQL, started with a test database; its last line is the URL.
CURATE_TEST_PG_URL="$(bash scripts/ci_services.sh | tail -n1)"
export CURATE_TEST_PG_URL
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRL_EXPERIMENTAL_SILENCE=1
.venv/bin/python -m pytest -q "$@"
