"""ORPO fine-tuning on a curate export (`curate train`), with TRL doing the training.

Layout: `presets/` (readable TOML recipes), `accelerate/` (DeepSpeed ZeRO-3 and FSDP launch configs), `spec.py`
(preset + overrides → the effective configuration), `preflight.py` (what the data looks like to the model before any
GPU time is spent, and fitting it to max_length), `trainer.py` (builds TRL's ORPOTrainer and writes the outputs),
`guard.py` (stops at the first NaN/inf, never saves non-finite weights), `evaluate.py` (per-language test-split
evaluation and generations; `curate eval`), `fused.py` (opt-in fused ORPO loss from liger-kernel, GPU only),
`card.py` (model card), `launch.py` (the entry point `accelerate launch` runs), `tiny.py` (a tiny Gemma2 + locally
trained tokenizer for tests), `commands.py` (the click commands).

Importing this package stays cheap: torch, transformers and TRL are imported inside the functions that use them.
"""

from __future__ import annotations

from curate.errors import CurateError


class TrainError(CurateError):
    """The training step can't start or failed: bad export, bad preset or override, model can't be loaded."""
