#!/usr/bin/env bash
# The main job on the sample data: set up, then run the default pipeline on data/ into runs/demo (ends in an export).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The sample data is ours (data/README.md), so the demo states its licence; other data states its own (--license).
.venv/bin/curate run pipelines/default.toml --input data/ --out runs/demo \
  --license "Apache-2.0 (the sample data in data/ was written for curate)" --set export.name=curate-demo "$@"
