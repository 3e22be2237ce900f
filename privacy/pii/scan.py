"""Column-level personal-information detection: one decision per column, not per cell.

For each column the scanner samples up to ``sample`` non-null values and computes, with
vectorized polars expressions, the share of values that *are* each entity (the hit rate over
non-null values, validated by check digits where the type has one). The header adds or
removes confidence: Chinese words (身份证, 手机, 姓名, 住址), pinyin initials (sfzh, zjhm,
lxdh, xm, jzdz) and English names support an entity; words naming another kind of code
(订单号, 条码, 区划代码) count against. A column with no whole-value entity is then checked as
free text: the share of values *containing* a valid identifier (vectorized token extraction),
and for prose-like columns the Presidio analyzer on a small sample (names, addresses, birth
dates). ``DATE_OF_BIRTH`` needs header evidence: a date alone is not a birth date.

Scores: ``hit_rate x strength(entity) + 0.25`` when the header supports the entity, ``- 0.3``
when it names another kind of code; the best entity is reported when its score reaches 0.5.
For a column without an entity, ``score`` and ``hit_rate`` describe the best rejected
candidate (0 when there is none), so near misses can be reviewed.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

from catalogs.vocabulary import PiiType
from privacy.pii import entities as E
from privacy.pii import segmenter
from shuyu_core.errors import ValidationError
from shuyu_core.home import Home

DEFAULT_SAMPLE = 2000
DECISION_THRESHOLD = 0.5
HEADER_BONUS = 0.25
HEADER_PENALTY = 0.3
# Share of distinct values below which a name-shaped column is a category (汉族, 存续).
NAME_MIN_DISTINCT = 0.1
NLP_SAMPLE = 100

DESCRIPTION: dict[PiiType, str] = {
    PiiType.CN_RESIDENT_ID: "valid resident ID numbers (GB 11643 check digit, real birth date)",
    PiiType.CN_MOBILE: "mobile numbers in allocated ranges",
    PiiType.CN_PHONE: "landline numbers with an area code",
    PiiType.EMAIL: "e-mail addresses",
    PiiType.CN_BANK_CARD: "card numbers passing the Luhn check",
    PiiType.CN_USCC: "valid unified social credit codes (GB 32100 + GB 11714 checks)",
    PiiType.CN_PASSPORT: "passport-number shaped",
    PiiType.CN_LICENSE_PLATE: "licence plates (incl. 8-character new-energy)",
    PiiType.PERSON_NAME: "person names (known surname + given name, not a dictionary word)",
    PiiType.ADDRESS: "addresses (administrative level + street or house number)",
    PiiType.IP_ADDRESS: "IP addresses",
    PiiType.DATE_OF_BIRTH: "dates",
}


@dataclass(frozen=True)
class ColumnFinding:
    """The decision for one column. ``rates`` (all entities' hit rates) is not in the JSON."""

    column: str
    entity: str | None
    score: float
    hit_rate: float
    evidence: str
    rates: dict[str, float] = field(default_factory=dict, compare=False)
    # The entity was found *inside* free text, not as the whole value.
    free_text: bool = field(default=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "entity": self.entity,
            "score": self.score,
            "hit_rate": self.hit_rate,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class ScanReport:
    columns: list[ColumnFinding]
    sampled_rows: int = 0
    total_rows: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The contract: ``{"columns": [{column, entity, score, hit_rate, evidence}]}``."""
        return {"columns": [c.to_json() for c in self.columns]}

    def by_column(self) -> dict[str, ColumnFinding]:
        return {c.column: c for c in self.columns}

    def detected(self) -> dict[str, str]:
        """Column -> entity for the columns that hold personal information."""
        return {c.column: c.entity for c in self.columns if c.entity is not None}

    def free_text_columns(self) -> set[str]:
        """Columns whose entity was found inside free text (see ``transforms.apply``)."""
        return {c.column for c in self.columns if c.entity is not None and c.free_text}


# -- sampling --------------------------------------------------------------------------------


def _sample_frame(
    data: pl.DataFrame | pl.LazyFrame, sample: int, seed: int
) -> tuple[pl.DataFrame, int | None]:
    """Rows to scan: all of a small input; for a large lazy input an evenly spaced subset
    (four times ``sample``, with a seed-chosen offset) read in streaming mode."""
    if isinstance(data, pl.DataFrame):
        return data, data.height
    total = data.select(pl.len()).collect(engine="streaming").item()
    step, offset = sampling(total, sample, seed)
    lf = data if step == 1 else data.gather_every(step, offset=offset)
    return lf.collect(engine="streaming"), total


def sampling(total: int, sample: int, seed: int) -> tuple[int, int]:
    """``(step, offset)``: the rows scanned are ``offset, offset + step, …`` of ``total``
    (step 1: every row). Shared with the per-partition scan (``scaleout.driver``), which reads
    the same rows part by part."""
    target = max(sample * 4, 1)
    if total > target:
        step = total // target
        return step, seed % step
    return 1, 0


def _values(s: pl.Series, sample: int, seed: int) -> pl.Series | None:
    """Non-null, non-blank values as strings, at most ``sample`` of them; None if unscannable."""
    dtype = s.dtype
    if dtype == pl.String:
        strings = s
    elif (
        dtype.is_integer()
        or dtype == pl.Categorical
        or isinstance(dtype, pl.Enum)
        or dtype.is_temporal()
    ):
        strings = s.cast(pl.String)
    elif dtype.is_float():
        # Spreadsheet exports turn phone and card numbers into floats (1.3812345678E10);
        # whole-number floats are read as the integers they were. Amounts are not.
        whole = s.drop_nulls().drop_nans()
        largest = whole.abs().max() if whole.len() else None
        integral = bool((whole == whole.round(0)).all())
        if not integral or not isinstance(largest, int | float) or largest < 1e5:
            return None
        strings = s.fill_nan(None).cast(pl.Int64, strict=False).cast(pl.String)
    else:
        return None
    strings = strings.drop_nulls().str.strip_chars()
    strings = strings.filter(strings.str.len_chars() > 0)
    if strings.len() > sample:
        strings = strings.sample(sample, seed=seed)
    return strings.rename("v")


# -- name dictionary check -----------------------------------------------------------------


@cache
def _dictionary_non_names() -> frozenset[str]:
    """Words (2-4 characters) jieba's dictionary tags as something other than a person name.

    Read straight from the dictionary file that ships inside the jieba package (word,
    frequency, part-of-speech tag): faster than initialising jieba's tokenizer.
    """
    root = segmenter.package_dir()
    if root is None:
        return frozenset()
    table = pl.read_csv(
        io.BytesIO((root / "dict.txt").read_bytes()),
        separator=" ",
        has_header=False,
        new_columns=["word", "freq", "tag"],
        schema_overrides={"word": pl.String, "freq": pl.Int64, "tag": pl.String},
        quote_char=None,
    )
    words = table.filter(
        pl.col("word").str.len_chars().is_between(2, 4) & ~pl.col("tag").str.starts_with("nr")
    )["word"]
    return frozenset(words.to_list())


def _name_rate(values: pl.Series, shaped: pl.Series) -> tuple[float, str]:
    """Share of values that look like person names, and a note on what lowered it."""
    n = values.len()
    hits = values.filter(shaped)
    if hits.len() == 0:
        return 0.0, ""
    distinct = values.n_unique() / n
    if n >= 50 and distinct < NAME_MIN_DISTINCT:
        return 0.0, f"only {distinct:.0%} distinct values (a category, not names)"
    words = _dictionary_non_names()
    uniq = hits.unique().to_list()
    share_rejected = sum(1 for w in uniq if w in words) / len(uniq)
    rate = hits.len() / n * (1.0 - share_rejected)
    note = (
        f"{share_rejected:.0%} of name-shaped values are dictionary words"
        if share_rejected >= 0.05
        else ""
    )
    return rate, note


# -- scoring ---------------------------------------------------------------------------------


def _header_effect(column: str, entity: PiiType) -> tuple[float, str]:
    word = E.header_matches(column, E.HEADERS[entity])
    if word is not None:
        return HEADER_BONUS, f"header '{column}' supports it ('{word}')"
    neg = E.header_matches(column, E.NEGATIVE_HEADER)
    if neg is not None:
        return -HEADER_PENALTY, f"header '{column}' names another kind of code ('{neg}')"
    return 0.0, ""


def _clip(x: float) -> float:
    return round(min(1.0, max(0.0, x)), 3)


def _whole_value_rates(values: pl.Series, column: str) -> tuple[dict[PiiType, float], list[str]]:
    frame = values.to_frame()
    col = pl.col("v")
    exprs = [E.FULL_MATCH[e](col).fill_null(False).alias(e.value) for e in E.FULL_MATCH]
    exprs.append(E.is_resident_id_legacy(col).fill_null(False).alias("_ric15"))
    flags = frame.select(exprs)
    means: dict[str, float | None] = flags.select(pl.all().cast(pl.Float64).mean()).row(
        0, named=True
    )
    rates = {e: means[e.value] or 0.0 for e in E.FULL_MATCH}
    notes: list[str] = []
    if E.header_matches(column, E.HEADERS[PiiType.CN_RESIDENT_ID]):
        legacy = means["_ric15"] or 0.0
        if legacy > 0:
            rates[PiiType.CN_RESIDENT_ID] += legacy
            notes.append(f"{legacy:.1%} are 15-digit first-generation IDs")
    name_rate, note = _name_rate(values, flags[PiiType.PERSON_NAME.value])
    rates[PiiType.PERSON_NAME] = name_rate
    if note:
        notes.append(note)
    return rates, notes


def _is_prose(values: pl.Series) -> bool:
    """Free text worth the NLP analyzer: longish, mostly Han, with spaces or punctuation."""
    stats = values.to_frame().select(
        pl.col("v").str.len_chars().mean().alias("len"),
        pl.col("v").str.contains(E.HAN).mean().alias("han"),
        pl.col("v").str.contains(r"[\s，。；：、,;:!?！？]").mean().alias("punct"),
    )
    mean_len = float(stats["len"][0] or 0.0)
    han = float(stats["han"][0] or 0.0)
    punct = float(stats["punct"][0] or 0.0)
    return mean_len >= 10 and han >= 0.3 and (punct >= 0.3 or mean_len >= 20)


def _free_text_rates(values: pl.Series) -> dict[PiiType, float]:
    """Share of values that hold an identifier *inside* other text (a value that is nothing
    but the identifier was already judged as a whole, header included)."""
    frame = values.to_frame().with_columns(E.free_text_tokens(pl.col("v")).alias("t"))
    exprs = [
        (
            E.contains_entity(pl.col("t"), e).fill_null(False)
            & ~E.FULL_MATCH[e](pl.col("v")).fill_null(False)
        )
        .mean()
        .alias(e.value)
        for e in E.FREE_TEXT_ENTITIES
    ]
    row = frame.select(exprs).row(0, named=True)
    return {e: float(row[e.value] or 0.0) for e in E.FREE_TEXT_ENTITIES}


AnalyzerFactory = Callable[[], Any]


def _default_analyzer() -> Any:
    from privacy.pii.engine import analyzer

    return analyzer()


def _nlp_rates(values: pl.Series, make_analyzer: AnalyzerFactory) -> dict[PiiType, float]:
    texts = values.head(NLP_SAMPLE).to_list()
    if not texts:
        return {}
    engine = make_analyzer()
    wanted = [e.value for e in E.FREE_TEXT_NLP_ENTITIES]
    counts = dict.fromkeys(E.FREE_TEXT_NLP_ENTITIES, 0)
    for text in texts:
        found = {r.entity_type for r in engine.analyze(text=text, language="zh", entities=wanted)}
        for e in counts:
            if e.value in found:
                counts[e] += 1
    return {e: c / len(texts) for e, c in counts.items()}


def scan_column(
    column: str,
    series: pl.Series,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    make_analyzer: AnalyzerFactory | None = None,
) -> ColumnFinding:
    """Decide one column from its values (already a sample or the whole column)."""
    values = _values(series, sample, seed)
    if values is None:
        what = "fractional or small numbers" if series.dtype.is_float() else "values"
        return ColumnFinding(column, None, 0.0, 0.0, f"{series.dtype} {what} are not scanned")
    n = values.len()
    if n == 0:
        return ColumnFinding(column, None, 0.0, 0.0, "no non-null values to scan")

    if series.dtype.is_temporal():
        rates: dict[PiiType, float] = {PiiType.DATE_OF_BIRTH: 1.0}
        notes: list[str] = []
    else:
        rates, notes = _whole_value_rates(values, column)

    scored: list[tuple[float, PiiType, str]] = []
    for entity, rate in rates.items():
        effect, why = _header_effect(column, entity)
        if entity == PiiType.DATE_OF_BIRTH and effect <= 0:
            continue  # a date is a birth date only when the header says so
        scored.append((rate * E.STRENGTH[entity] + effect, entity, why))
    scored.sort(key=lambda t: (-t[0], list(PiiType).index(t[1])))
    best_score, best, why = scored[0] if scored else (0.0, None, "")
    rate_json = {e.value: round(r, 4) for e, r in rates.items() if r > 0}

    if best is not None and best_score >= DECISION_THRESHOLD:
        parts = [f"{rates[best]:.1%} of {n} sampled values are {DESCRIPTION[best]}"]
        parts += [p for p in (why, *notes) if p]
        return ColumnFinding(
            column,
            best.value,
            _clip(best_score),
            round(min(rates[best], 1.0), 4),
            "; ".join(parts),
            rate_json,
        )

    if series.dtype == pl.String:
        free = _free_text_rates(values)
        rate_json.update({f"contains:{e.value}": round(r, 4) for e, r in free.items() if r > 0})
        hits = [
            (r / E.FREE_TEXT_ENTITIES[e], r, e)
            for e, r in free.items()
            if r >= E.FREE_TEXT_ENTITIES[e]
        ]
        source = "contain a valid"
        if not hits and _is_prose(values):
            nlp = _nlp_rates(values, make_analyzer or _default_analyzer)
            rate_json.update({f"nlp:{e.value}": round(r, 4) for e, r in nlp.items() if r > 0})
            hits = [
                (r / E.FREE_TEXT_NLP_ENTITIES[e], r, e)
                for e, r in nlp.items()
                if r >= E.FREE_TEXT_NLP_ENTITIES[e]
            ]
            source = f"(of the first {min(n, NLP_SAMPLE)}) mention a"
        if hits:
            hits.sort(key=lambda t: -t[0])
            _, rate, entity = hits[0]
            return ColumnFinding(
                column,
                entity.value,
                _clip(0.5 + rate / 2),
                round(rate, 4),
                f"free text: {rate:.1%} of {n} sampled values {source} {entity.value}",
                rate_json,
                free_text=True,
            )

    if best is None or best_score <= 0 or rates.get(best, 0.0) == 0.0:
        evidence = f"no personal identifier in {n} sampled values"
        if series.dtype.is_temporal():
            evidence = "dates without a birth-date header (a date alone is not a birth date)"
        return ColumnFinding(column, None, 0.0, 0.0, evidence, rate_json)
    parts = [
        f"no personal identifier: best candidate {best.value} at {rates[best]:.1%} of "
        f"{n} sampled values (score {best_score:.2f} < {DECISION_THRESHOLD})"
    ]
    parts += [p for p in (why, *notes) if p]
    return ColumnFinding(
        column,
        None,
        _clip(best_score),
        round(min(rates[best], 1.0), 4),
        "; ".join(parts),
        rate_json,
    )


def scan_frame(
    df: pl.DataFrame | pl.LazyFrame,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    make_analyzer: AnalyzerFactory | None = None,
) -> ScanReport:
    """Scan every column of ``df``; one finding per column, in column order."""
    if sample < 1:
        raise ValidationError(f"sample size {sample} is too small", hint="use --sample 1 or more")
    frame, total = _sample_frame(df, sample, seed)
    return scan_sampled(frame, total, sample, seed, make_analyzer)


def scan_sampled(
    frame: pl.DataFrame,
    total: int | None,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    make_analyzer: AnalyzerFactory | None = None,
) -> ScanReport:
    """Decide every column of rows already sampled (``sampling``) from ``total`` rows."""
    findings = [
        scan_column(name, frame[name], sample=sample, seed=seed, make_analyzer=make_analyzer)
        for name in frame.columns
    ]
    return ScanReport(findings, sampled_rows=frame.height, total_rows=total)


# -- files -----------------------------------------------------------------------------------


def scan_path(path: str | Path, sample: int = DEFAULT_SAMPLE, seed: int = 0) -> ScanReport:
    """Scan a Parquet file (or directory of parts) or a CSV file (UTF-8, UTF-8 BOM, GB18030)."""
    from pipelines.ingest import open_source

    p = Path(path)
    # A GB18030 file is transcoded to a temporary UTF-8 copy: keep it inside the domain.
    src = open_source(p, Home.from_env().tmp)
    try:
        try:
            if src.fmt == "parquet":
                files = sorted(p.rglob("*.parquet")) if p.is_dir() else [p]
                lf = pl.scan_parquet([str(f) for f in files])
            else:
                lf = pl.scan_csv(src.scan_path, infer_schema=False, raise_if_empty=True)
            lf.collect_schema()
            return scan_frame(lf, sample=sample, seed=seed)
        except (pl.exceptions.PolarsError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValidationError(
                f"{p}: cannot read as {src.fmt} ({first[:200]})",
                hint="check that the file is a complete Parquet or CSV export",
            ) from None
    finally:
        if src.temporary:
            with contextlib.suppress(FileNotFoundError):
                src.scan_path.unlink()
