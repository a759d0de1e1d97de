"""Language stage: label the prompt, both replies and the pair with zh-Hans / zh-Hant / en / mixed / other.

Why: a bilingual chat model's builder must know and choose the zh/en mix (the balance stage does the choosing)
and must not train on a Chinese question answered in English. Labels come from script counts first
(curate/langid.py explains the rules and why); lingua is asked only about Latin-script text the counts can't
settle, and OpenCC round trips settle Simplified vs Traditional when the character tables disagree.

Which text is labelled:
    lang_prompt    all user turns of `prompt`, joined (the system prompt is left out: system prompts are often
                   English boilerplate even in Chinese chats, and a last turn like "continue" says little)
    lang_chosen    `chosen`;  lang_rejected: `rejected`

The pair's `lang` (the rule; `pair_rule = "prompt"` keeps only step 1):
    1. the prompt's label; if the prompt has no natural-language text at all (code or numbers only), the chosen
       reply's label (rule `reply_for_empty_prompt`);
    1b. the language of the *instruction*, not of the text it is about (`pair_rule = "instruction"`, default).
       The prompt is cut into segments (lines, clauses at colons and sentence ends; text in quotation marks —
       "", “”, 「」, 『』, «», „“, ‘’ — is set aside as quoted material). Then:
       `translation`: a prompt matching `mismatch_exempt` (a translation request) takes the label of the first
       segment that matches it, when that is zh-Hans / zh-Hant / en and comes no later than the first segment of
       `instruction_min_units` units (the request opens the prompt; a match further down is an example or the
       quoted text) ("Translate the following French text into English:" → en; "请把这句日语翻译成中文：…" →
       zh-Hans);
       `instruction`: a prompt labelled `other` or `mixed` as a whole takes the label of its first segment of at
       least `instruction_min_units` units (an English task quoting Hindi → en; a Chinese task quoting Swedish or
       Japanese → zh-Hans; a Japanese or French instruction stays `other`); a `mixed` prompt only moves to
       zh / en, never to `other`;
       `reply`: an `other` / `mixed` prompt with no such segment (only quoted or very short text) takes the
       chosen reply's label when that is zh / en.
       A pair step 2 finds mismatched is no mismatch when its first substantial segment is in the chosen reply's
       language (an English task about a Chinese passage, answered in English): it takes that label (rule
       `instruction`). So `other` means the instruction itself is in another language, and these rules never
       create a mismatch; `stats["rules"]` and `stats["relabelled"]` count the rows each rule decided and
       changed, and lang_detail names the rule.
    2. `mismatch` when the prompt is Chinese (zh-Hans/zh-Hant) and the chosen reply is English, or the reverse,
       unless the prompt matches `mismatch_exempt` (translation requests are answered in the other language on
       purpose) or the chosen reply is shorter than `mismatch_min_units`. `mixed` and `other` never mismatch; the
       rejected reply is not compared (a wrong-language rejected reply is a useful preference signal). With
       `mismatch = "reject"` these pairs are rejected (reason `language_mismatch`) instead of being kept with
       lang = "mismatch".

Config: see `Config` (each field's help). Input columns: source, prompt, chosen, rejected (system and text columns are
rewritten only when `convert` is set). Output columns: lang_prompt, lang_chosen, lang_rejected, lang,
lang_detail (JSON: per text the method — script / opencc / lingua / empty / full-text —, Han share and the counts of
Simplified-only and Traditional-only characters; `rule`: the pair rule that set `lang`; the original pair_id when
converted), script_converted
(null, "t2s" or "s2t"). Reasons: `language_mismatch`.

Script conversion (`convert = "t2s"` or `"s2t"`): every text of a kept pair that has a text labelled in the
source script is converted with OpenCC (phrase-aware), its labels are rewritten to the target script, and
pair_id / prompt_id are recomputed because they hash the text (so dedup, which runs later, sees a Traditional
copy of a Simplified pair as an exact duplicate). The old pair_id stays in lang_detail.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from curate import langid
from curate.schema import PAIR_SCHEMA, id_exprs
from curate.stage import StageResult, reject

NAME = "language"
NEEDS = ("source", "prompt", "chosen", "rejected")
ADDS = ("lang_prompt", "lang_chosen", "lang_rejected", "lang", "lang_detail", "script_converted")
ROW_LOCAL = True  # labels depend on each row alone: engines may run `run` on batches, then `merge_stats`

LANGUAGE_MISMATCH = "language_mismatch"
REASONS = (LANGUAGE_MISMATCH,)

PAIR_LABELS = (*langid.LABELS, "mismatch")
TEXTS = ("prompt", "chosen", "rejected")
METHODS = ("script", "opencc", "lingua", "empty", "full-text")
_P = langid.Params()

DEFAULT_EXEMPT = (
    r"(?i)翻译|翻譯|译成|譯成|译为|譯為|英译|中译|英譯|中譯|translat|"
    r"用英文|用英语|用英語|用中文|用汉语|用漢語|in english|in chinese|into english|into chinese"
)


@dataclass(frozen=True)
class Config:
    mismatch: Literal["reject", "flag"] = field(
        default="reject",
        metadata={"help": "Pairs whose chosen reply is English for a Chinese prompt (or the reverse): 'reject' "
                  "them (reason language_mismatch) or 'flag' them (kept, lang = 'mismatch')."},
    )
    mismatch_exempt: str = field(
        default=DEFAULT_EXEMPT,
        metadata={"help": "Regex (Rust syntax) on the prompt; matching prompts never mismatch (translation "
                  "requests). Empty string: no exemption."},
    )
    mismatch_min_units: int = field(
        default=4,
        metadata={"help": "A chosen reply shorter than this many units (Han characters + words) never "
                  "mismatches: 'OK', 'Tom and Ralph' or a number say too little about its language."},
    )
    pair_rule: Literal["instruction", "prompt"] = field(
        default="instruction",
        metadata={"help": "How a pair's language is chosen: 'instruction' — a translation request or a prompt "
                  "that is mixed/other as a whole takes the language of its instruction (the text it quotes "
                  "set aside; the chosen reply's when no instruction is found); 'prompt' — the prompt's "
                  "overall label."},
    )
    instruction_min_units: int = field(
        default=4,
        metadata={"help": "Units (Han characters + words) a prompt segment needs to be taken as the instruction "
                  "(pair_rule = 'instruction')."},
    )
    convert: Literal["none", "t2s", "s2t"] = field(
        default="none",
        metadata={"help": "Convert script with OpenCC: 't2s' Traditional → Simplified, 's2t' the reverse, for "
                  "pairs with a text in the source script; recorded in script_converted, ids recomputed."},
    )
    max_chars: int = field(
        default=_P.max_chars, metadata={"help": "Characters read from the start of each text for labelling."}
    )
    han_weight: float = field(
        default=_P.han_weight,
        metadata={"help": "Weight of one Han character against one word in other scripts (a Chinese word is "
                  "~1.5 characters)."},
    )
    zh_min: float = field(
        default=_P.zh_min,
        metadata={"help": "Han share (weighted Han chars / all units) at or above which a text is Chinese."},
    )
    mixed_min: float = field(
        default=_P.mixed_min,
        metadata={"help": "Han share at or above which (and below zh_min) a text is 'mixed' — or Chinese when it "
                  "has fewer than mixed_en_words English function words; below it the text is not Chinese."},
    )
    mixed_en_words: int = field(
        default=_P.mixed_en_words,
        metadata={"help": "English function words a text between mixed_min and zh_min needs to be 'mixed' "
                  "rather than Chinese with English terms."},
    )
    kana_min: float = field(
        default=_P.kana_min,
        metadata={"help": "Share of kana/Hangul among CJK characters from which a text is Japanese/Korean "
                  "('other')."},
    )
    en_word_share: float = field(
        default=_P.en_word_share,
        metadata={"help": "Share of English function words among Latin words that labels Latin text 'en' "
                  "without a detector; below it lingua decides."},
    )
    neutral_script: Literal["zh-Hans", "zh-Hant"] = field(
        default="zh-Hans",
        metadata={"help": "Label for Chinese text with no script-specific characters (reads the same in both)."},
    )
    lingua_languages: tuple[str, ...] = field(
        default=_P.lingua_languages,
        metadata={"help": "ISO 639-1 codes lingua chooses among for unsettled Latin-script text (English is "
                  "always included); anything but English becomes 'other'."},
    )
    lingua_high_accuracy: bool = field(
        default=False,
        metadata={"help": "lingua's high-accuracy mode (loads ~5 s of models instead of ~0.2 s; helps short "
                  "non-English Latin texts)."},
    )

    def validate(self) -> None:
        if self.han_weight <= 0:
            raise ValueError(f"han_weight must be > 0, got {self.han_weight}")
        if not 0.0 < self.mixed_min <= self.zh_min <= 1.0:
            raise ValueError(f"need 0 < mixed_min <= zh_min <= 1, got mixed_min={self.mixed_min}, "
                             f"zh_min={self.zh_min}")
        if self.max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {self.max_chars}")
        if self.instruction_min_units < 1:
            raise ValueError(f"instruction_min_units must be at least 1, got {self.instruction_min_units}")
        from lingua import IsoCode639_1

        for code in self.lingua_languages:
            try:
                IsoCode639_1.from_str(code)
            except ValueError:
                raise ValueError(f"lingua_languages: {code!r} is not an ISO 639-1 code lingua knows") from None

    @property
    def params(self) -> langid.Params:
        return langid.Params(
            max_chars=self.max_chars, han_weight=self.han_weight, zh_min=self.zh_min, mixed_min=self.mixed_min,
            mixed_en_words=self.mixed_en_words, kana_min=self.kana_min,
            en_word_share=self.en_word_share, neutral_script=self.neutral_script,
            lingua_languages=tuple(self.lingua_languages), lingua_high_accuracy=self.lingua_high_accuracy,
        )


def prompt_text_expr() -> pl.Expr:
    """All user turns of the prompt joined by newlines (the text `lang_prompt` describes)."""
    return (
        pl.col("prompt")
        .list.eval(pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content"))
        .list.join("\n")
        .fill_null("")
    )


def _family(col: str) -> pl.Expr:
    c = pl.col(col)
    return pl.when(c.is_in(list(langid.ZH_LABELS))).then(pl.lit("zh")).otherwise(c)


def _detail_expr(han_weight: float) -> pl.Expr:
    parts = []
    for t in TEXTS:
        pre = f"__{t}_"
        share = langid.han_share_expr(pre, han_weight).round(3)
        parts.append(
            pl.struct(
                pl.col(pre + "by").alias("by"),
                share.alias("han"),
                pl.col(pre + "simp").alias("simp"),
                pl.col(pre + "trad").alias("trad"),
            ).alias(t)
        )
    return pl.struct(parts).struct.json_encode()


def label(frame: pl.LazyFrame | pl.DataFrame, cfg: Config) -> pl.LazyFrame:
    """Add the lang_* columns, the pair's `lang` (mismatch included) and working columns (`__*`)."""
    lf = frame.lazy()
    lf = langid.annotate(
        lf, {"prompt": prompt_text_expr(), "chosen": pl.col("chosen"), "rejected": pl.col("rejected")}, cfg.params
    )
    fam_p, fam_c = _family("lang_prompt"), _family("lang_chosen")
    mismatch = (
        fam_p.is_in(["zh", "en"])
        & fam_c.is_in(["zh", "en"])
        & (fam_p != fam_c)
        & (langid.units_expr("__chosen_") >= cfg.mismatch_min_units)
    )
    translate = prompt_text_expr().str.contains(cfg.mismatch_exempt) if cfg.mismatch_exempt else pl.lit(False)
    lf = lf.with_columns(translate.alias("__translate"))  # once: the exemption and the translation rule read it
    mismatch = mismatch & ~pl.col("__translate")
    base = pl.when(pl.col("__prompt_by") == "empty").then(pl.col("lang_chosen")).otherwise(pl.col("lang_prompt"))
    return lf.with_columns(
        pl.when(mismatch).then(pl.lit("mismatch")).otherwise(base).alias("lang"),
        pl.when(pl.col("__prompt_by") == "empty").then(pl.lit("reply_for_empty_prompt")).otherwise(pl.lit("prompt"))
        .alias("__rule"),
    )


# Quoted material (set aside when looking for the instruction) and segment boundaries. Rust regex syntax.
_QUOTED = r'“[^”\n]*”|「[^」]*」|『[^』]*』|«[^»]*»|„[^“”\n]*[“”]|‘[^’\n]*’|"[^"\n]*"'
_SEGMENT_BREAK = r"[\n:：。？！?!；;]+"
RULES = ("prompt", "reply_for_empty_prompt", "translation", "instruction", "reply")
_MAX_SEGMENTS = 24  # with no substantial segment, the first ones that are read for a translation clause


def _collect(lf: pl.LazyFrame) -> pl.DataFrame:
    """Collect with Polars' streaming engine in small morsels, in row order: the labels are row-local, so only
    a morsel's working columns (raw and cleaned copies of three texts, counts) exist at a time, not the whole
    input's (at 1M pairs the in-memory engine held ~4 GB of them). Same result as `lf.collect()`."""
    from curate.io import STREAM_CHUNK

    with pl.Config(streaming_chunk_size=STREAM_CHUNK):
        return lf.collect(engine="streaming")


def instruction_labels(lf: pl.LazyFrame, labels: pl.DataFrame, cfg: Config) -> pl.DataFrame:
    """Apply the `translation` / `instruction` / `reply` rules (module docstring, step 1b) to `labels`.

    Only candidate rows are read again (translation requests and prompts labelled mixed/other, typically a few
    per cent): their prompt text is cut into segments, each segment is labelled with the same rules as whole
    texts (langid.annotate), and the first qualifying segment decides. Returns `labels` with `lang` and
    `__rule` updated.
    """
    cand = labels.filter(
        (pl.col("__rule") == "prompt")
        & (pl.col("__translate") | pl.col("lang_prompt").is_in(["mixed", "other"]) | (pl.col("lang") == "mismatch"))
    ).select("__row", "lang", "lang_prompt", "lang_chosen", "__translate")
    if cand.height == 0:
        return labels
    texts = (
        lf.select("__row", "prompt")
        .join(cand.lazy().select("__row"), on="__row", how="semi")
        .select("__row", prompt_text_expr().alias("__text"))
        .with_columns(
            pl.col("__text").str.replace_all(_QUOTED, "\n").str.replace_all(_SEGMENT_BREAK, "\n")
            .str.split("\n").alias("__seg")
        )
        .select("__row", "__seg")
        .explode("__seg")
        .filter(pl.col("__seg").str.strip_chars() != "")
        .with_columns(pl.int_range(pl.len()).over("__row").alias("__pos"))
    )
    # Only segments up to the first substantial one can decide (rules below), so the cheap unit counts pick
    # those first and only they are labelled (lingua included): ~1-2 segments per row instead of ~10.
    units = langid.units_expr("__u_")
    texts = (
        texts.with_columns(langid.feature_exprs(langid.clean_text_expr(pl.col("__seg"), cfg.max_chars), "__u_"))
        .with_columns((units >= cfg.instruction_min_units).alias("__big"))
        .filter(pl.col("__pos") <= pl.col("__pos").filter(pl.col("__big")).min().over("__row")
                .fill_null(_MAX_SEGMENTS))
        .select("__row", "__pos", "__seg", "__big")
    )
    segs = _collect(langid.annotate(texts, {"s": pl.col("__seg")}, cfg.params).select(
        "__row", "__pos", "lang_s", "__big",
        (pl.col("__seg").str.contains(cfg.mismatch_exempt) if cfg.mismatch_exempt else pl.lit(False)).alias("__kw"),
    ))
    zh_en = list(langid.ZH_LABELS) + ["en"]

    def first(cond: pl.Expr, name: str) -> pl.DataFrame:
        """The label of the first segment (by position) meeting cond."""
        return (
            segs.filter(cond).sort("__row", "__pos").group_by("__row", maintain_order=True)
            .agg(pl.col("lang_s").first().alias(name))
        )

    # a translation request is asked at the start: the matching segment must come no later than the first
    # substantial one (a later match is an example or the quoted text talking about translation); segments after
    # it were not kept above
    decided = (
        cand.join(first(pl.col("__kw") & pl.col("lang_s").is_in(zh_en), "__t"), on="__row", how="left")
        .join(first(pl.col("__big"), "__q"), on="__row", how="left")
        .with_columns(
            pl.when(pl.col("__translate") & pl.col("__t").is_not_null())
            .then(pl.struct(pl.col("__t").alias("l"), pl.lit("translation").alias("r")))
            .when((pl.col("lang_prompt") == "other") & pl.col("__q").is_not_null())
            .then(pl.struct(pl.col("__q").alias("l"), pl.lit("instruction").alias("r")))
            .when((pl.col("lang_prompt") == "mixed") & pl.col("__q").is_in(zh_en))
            .then(pl.struct(pl.col("__q").alias("l"), pl.lit("instruction").alias("r")))
            .when(pl.col("lang_prompt").is_in(["mixed", "other"]) & pl.col("__q").is_null()
                  & pl.col("lang_chosen").is_in(zh_en))
            .then(pl.struct(pl.col("lang_chosen").alias("l"), pl.lit("reply").alias("r")))
            # a mismatch whose instruction is in the reply's language (an English task about a Chinese passage,
            # answered in English) is no mismatch
            .when((pl.col("lang") == "mismatch") & (_family("__q") == _family("lang_chosen")))
            .then(pl.struct(pl.col("__q").alias("l"), pl.lit("instruction").alias("r")))
            .alias("__new")
        )
        .filter(pl.col("__new").is_not_null())
        .select("__row", pl.col("__new").struct.field("l").alias("__l"), pl.col("__new").struct.field("r").alias("__r"))
    )
    return (
        labels.join(decided, on="__row", how="left", maintain_order="left")
        .with_columns(pl.coalesce("__l", "lang").alias("lang"), pl.coalesce("__r", "__rule").alias("__rule"))
        .drop("__l", "__r")
    )


def run(frame: pl.LazyFrame | pl.DataFrame, cfg: Config) -> StageResult:
    """Label languages; reject or flag mismatched pairs; optionally convert script.

    The labels (and the stats) are computed in one collect over the text columns only; they are joined back to
    the lazy input by row number, so the wide input still streams through to the runner's Parquet writer.
    """
    lf = frame.lazy()
    stale = [c for c in ADDS if c in lf.collect_schema().names()]  # labelled before: label again
    lf = lf.drop(stale).with_row_index("__row")
    labelled = label(lf.select("__row", "source", "prompt", "chosen", "rejected"), cfg)
    label_cols = ["lang_prompt", "lang_chosen", "lang_rejected", "lang"]
    labels = _collect(labelled.select(
        "__row", "source", *label_cols, _detail_expr(cfg.han_weight).alias("lang_detail"),
        *[f"__{t}_by" for t in TEXTS], "__translate", "__rule",
    ))
    by_prompt = labels["lang"]
    if cfg.pair_rule == "instruction":
        labels = instruction_labels(lf, labels, cfg)
    labels = labels.with_columns(
        pl.concat_str(pl.col("lang_detail").str.strip_suffix("}"), pl.lit(',"rule":"'), pl.col("__rule"),
                      pl.lit('"}')).alias("lang_detail")
    )
    stats = stats_of(labels, cfg)
    stats.update(rule_stats(labels, by_prompt), pair_rule=cfg.pair_rule)
    names = [n for n in lf.collect_schema().names() if n != "__row" and n not in ADDS]
    out_cols = names + list(ADDS)
    lf = lf.join(
        labels.select("__row", *label_cols, "lang_detail").lazy(), on="__row", how="left", maintain_order="left"
    ).with_columns(pl.lit(None, dtype=pl.String).alias("script_converted"))
    is_mismatch = pl.col("lang") == "mismatch"
    if cfg.mismatch == "reject":
        kept = lf.filter(~is_mismatch)
        rejected = lf.filter(is_mismatch).select(out_cols)
        detail_text = pl.format("prompt is {}, chosen reply is {}", pl.col("lang_prompt"), pl.col("lang_chosen"))
        rejects = reject(rejected, NAME, LANGUAGE_MISMATCH, detail_text)
    else:
        kept = lf
        rejects = reject(lf.filter(pl.lit(False)).select(out_cols), NAME, LANGUAGE_MISMATCH, "")
    if cfg.convert != "none":
        kept = _convert(kept, cfg.convert)
        stats["converted"] = int(
            labels.filter(
                pl.any_horizontal([pl.col(f"lang_{t}") == _SOURCE_SCRIPT[cfg.convert] for t in TEXTS])
                & ((pl.col("lang") != "mismatch") | pl.lit(cfg.mismatch == "flag"))
            ).height
        )
    return StageResult(kept.select(out_cols), rejects, stats)


_SOURCE_SCRIPT = {"t2s": "zh-Hant", "s2t": "zh-Hans"}


def _counts(series: pl.Series, labels: tuple[str, ...]) -> dict[str, int]:
    vc = dict(series.value_counts().iter_rows())
    return {k: int(vc.get(k, 0)) for k in labels if vc.get(k, 0)}


def rule_stats(labels: pl.DataFrame, by_prompt: pl.Series) -> dict[str, Any]:
    """Rows each pair rule decided, and how many it relabelled (from → to), against the prompt-only label."""
    frame = labels.select("__rule", "lang").with_columns(by_prompt.alias("__was"))
    rules = {r: int(n) for r, n in frame.group_by("__rule").len().iter_rows()}
    changed: dict[str, dict[str, int]] = {}
    for rule, was, now, n in (
        frame.filter(pl.col("__was") != pl.col("lang")).group_by("__rule", "__was", "lang").len()
        .sort("__rule", "__was", "lang").iter_rows()
    ):
        changed.setdefault(str(rule), {})[f"{was}→{now}"] = int(n)
    return {"rules": {r: rules[r] for r in RULES if rules.get(r)}, "relabelled": changed}


def stats_of(df: pl.DataFrame, cfg: Config) -> dict[str, Any]:
    """Label counts per text and per pair, mix per source, methods used, mismatches (conversions added by run)."""
    by_source: dict[str, dict[str, int]] = {}
    for (src,), part in df.group_by(["source"]):
        by_source[str(src)] = _counts(part["lang"], PAIR_LABELS)
    methods: dict[str, int] = {}
    for t in TEXTS:
        for k, v in _counts(df[f"__{t}_by"], METHODS).items():
            methods[k] = methods.get(k, 0) + v
    return {
        "rows": df.height,
        "pairs": _counts(df["lang"], PAIR_LABELS),
        "prompt": _counts(df["lang_prompt"], langid.LABELS),
        "chosen": _counts(df["lang_chosen"], langid.LABELS),
        "rejected": _counts(df["lang_rejected"], langid.LABELS),
        "by_source": dict(sorted(by_source.items())),
        "methods": {k: methods[k] for k in METHODS if k in methods},
        "mismatch": int((df["lang"] == "mismatch").sum()),
        "mismatch_policy": cfg.mismatch,
        "converted": 0,
        "convert": cfg.convert,
    }


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The stats `run` gives on the concatenation of batches, from the stats `run` gave on each (engines/)."""
    def total(key: str, labels: tuple[str, ...], dicts: list[dict[str, int]] | None = None) -> dict[str, int]:
        sums: dict[str, int] = {}
        for d in dicts if dicts is not None else [p[key] for p in parts]:
            for k, v in d.items():
                sums[k] = sums.get(k, 0) + v
        return {k: sums[k] for k in labels if sums.get(k)}

    sources = sorted({src for p in parts for src in p["by_source"]})
    out: dict[str, Any] = {
        "rows": sum(p["rows"] for p in parts),
        "pairs": total("pairs", PAIR_LABELS),
        "prompt": total("prompt", langid.LABELS),
        "chosen": total("chosen", langid.LABELS),
        "rejected": total("rejected", langid.LABELS),
        "by_source": {s: total("", PAIR_LABELS, [p["by_source"][s] for p in parts if s in p["by_source"]])
                      for s in sources},
        "methods": total("methods", METHODS),
        "mismatch": sum(p["mismatch"] for p in parts),
        "mismatch_policy": parts[0]["mismatch_policy"],
        "converted": sum(p["converted"] for p in parts),
        "convert": parts[0]["convert"],
    }
    # run() adds the pair rules' counts after stats_of (see rule_stats): same keys, same order.
    relabelled: dict[str, dict[str, int]] = {}
    for p in parts:
        for rule, moves in p["relabelled"].items():
            for move, n in moves.items():
                relabelled.setdefault(rule, {})[move] = relabelled.get(rule, {}).get(move, 0) + n
    out["rules"] = total("rules", RULES)
    out["relabelled"] = {r: {m: relabelled[r][m] for m in sorted(relabelled[r], key=lambda m: tuple(m.split("→")))}
                         for r in sorted(relabelled)}
    out["pair_rule"] = parts[0]["pair_rule"]
    return out


@functools.lru_cache(maxsize=2)
def _opencc(config: str) -> Any:
    import opencc

    return opencc.OpenCC(config)


def _convert_series(s: pl.Series, config: str) -> pl.Series:
    conv = _opencc(config)
    return pl.Series(s.name, [None if v is None else conv.convert(v) for v in s.to_list()], dtype=pl.String)


def _convert_prompt(s: pl.Series, config: str) -> pl.Series:
    conv = _opencc(config)
    out = [
        None if msgs is None else [{"role": m["role"], "content": None if m["content"] is None
                                    else conv.convert(m["content"])} for m in msgs]
        for msgs in s.to_list()
    ]
    return pl.Series(s.name, out, dtype=s.dtype)


def _convert(lf: pl.LazyFrame, config: str) -> pl.LazyFrame:
    """Convert every text of pairs that have a text in the source script; relabel; recompute ids.

    The pairs to convert are split off, converted and put back in input order (by `__row`), so OpenCC runs on
    those rows only.
    """
    source = _SOURCE_SCRIPT[config]
    target = "zh-Hans" if config == "t2s" else "zh-Hant"
    needs = pl.any_horizontal([pl.col(f"lang_{t}") == source for t in TEXTS])

    def conv(name: str, fn: Any = _convert_series, dtype: Any = pl.String) -> pl.Expr:
        return pl.col(name).map_batches(lambda s: fn(s, config), return_dtype=dtype, is_elementwise=True)

    todo = lf.filter(needs)
    done = todo.with_columns(
        pl.concat_str(pl.col("lang_detail").str.strip_suffix("}"), pl.lit(',"converted_from":"'),
                      pl.col("pair_id"), pl.lit('"}')).alias("lang_detail"),
        conv("system"),
        conv("prompt", _convert_prompt, PAIR_SCHEMA["prompt"]),
        conv("chosen"),
        conv("rejected"),
        *[pl.col(c).replace(source, target) for c in ("lang_prompt", "lang_chosen", "lang_rejected", "lang")],
        pl.lit(config, dtype=pl.String).alias("script_converted"),
    ).with_columns(id_exprs())
    rest = lf.filter(~needs)
    return pl.concat([rest, done.select(rest.collect_schema().names())]).sort("__row")


def html_section(stats: dict[str, Any]) -> str:
    """Language mix of pairs overall and per source, plus the labels of each text and how they were reached."""
    from curate import report

    by_source = stats.get("by_source", {})
    names = langid.short_sources(list(by_source))
    parts = [
        report.bar_chart({k: float(v) for k, v in stats.get("pairs", {}).items()}, "Pairs by language"),
        report.stacked_bars(
            {names[src]: langid.chart_mix(mix) for src, mix in by_source.items()}, "Language mix per source"
        ),
        report.table(
            [
                {"text": t, **{lab: stats.get(t, {}).get(lab, 0) for lab in langid.LABELS}}
                for t in TEXTS
            ],
            "Labels per text",
        ),
        report.table(
            [{"mismatched pairs": stats.get("mismatch", 0), "policy": stats.get("mismatch_policy", ""),
              "converted pairs": stats.get("converted", 0), "convert": stats.get("convert", "none"),
              **{f"by {k}": v for k, v in stats.get("methods", {}).items()}}],
            "Mismatches, conversions and methods",
        ),
        report.table(
            [{"rule": r, "pairs": n, "what it does": RULE_HELP.get(r, ""),
              "relabelled": ", ".join(f"{k} {v:,}" for k, v in stats.get("relabelled", {}).get(r, {}).items())}
             for r, n in stats.get("rules", {}).items()],
            f"How each pair's language was decided (pair_rule = {stats.get('pair_rule', 'prompt')})",
        ),
    ]
    return "\n".join(parts)


RULE_HELP = {
    "prompt": "the prompt's own label",
    "reply_for_empty_prompt": "no text in the prompt (code or numbers only): the chosen reply's label",
    "translation": "a translation request: the label of the clause that asks for it",
    "instruction": "the label of the instruction, quoted text set aside",
    "reply": "only quoted or very short text in the prompt: the chosen reply's label",
}
