"""The `[ingest]` table of a pipeline file: how ingest reads inputs (the command-line options override it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from curate.errors import ConfigError
from curate.ingest.rated import parse_binarize


@dataclass(frozen=True)
class Config:
    binarize: str = field(
        default="best-worst",
        metadata={"help": "How a row of rated responses (one prompt, N scored responses: raw UltraFeedback, "
                          "responses + scores) becomes pairs: best-worst (best against worst), best-random (best "
                          "against a seeded random lower-scored one) or all-margin:M (every pair whose scores differ "
                          "by at least M). Ties never make a pair. `curate run/ingest --binarize` overrides it."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of best-random (defaults to the pipeline seed)."})

    def validate(self) -> None:
        try:
            parse_binarize(self.binarize, self.seed)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
