"""Ingestion into the domain: validate a source export against the catalog and write an
immutable snapshot ``raw/<CODE>/<snapshot-id>/`` atomically.

Plain functions; the Prefect flow in ``pipelines/flows.py`` wraps them.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import mmap
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv

from catalogs.catalog import Catalog
from catalogs.models import FieldSpec, Resource
from catalogs.vocabulary import Sensitivity
from governance import recovery, roles
from governance.audit import record
from scaleout import partitioning
from shuyu_core import atomic, faults, journal, snapshots
from shuyu_core.errors import NotFoundError, ShuyuError, ValidationError
from shuyu_core.hashing import sm3_files
from shuyu_core.home import Home
from shuyu_core.journal import owner_tag

Progress = Callable[[str], None]
_CHUNK = 4 << 20
_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d")
_TRUE = ["true", "1", "y", "yes", "是"]
_FALSE = ["false", "0", "n", "no", "否"]


@dataclass(frozen=True)
class PulledFrom:
    """What ``pipelines.pull`` tells the ingest about a pulled export."""

    label: str
    watermark: str | None = None


@dataclass(frozen=True)
class SourceFile:
    """A readable source: the path polars scans, its format and its detected encoding."""

    scan_path: Path
    fmt: str
    encoding: str | None
    temporary: bool = False


def _parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise ValidationError(
                f"{path} is a directory without .parquet files",
                hint="point --from at a .parquet or .csv file, or a directory of parquet parts",
            )
        return files
    return [path]


# Characters of a Big5 (Traditional) export read as GB18030 decode without error but come out
# as kana, symbols and rare hanzi outside GB2312; real simplified-Chinese data is nearly all
# inside GB2312. Above this share of non-ASCII characters outside GB2312 the reading is garbled.
_GARBLED_SHARE = 0.3
# Garbling shows from the first bytes on, so the share is taken over the first chunks only.
_GARBLE_SAMPLE = 4 * _CHUNK


def _decodes(path: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _outside_gb2312(text: str) -> tuple[int, int]:
    """(non-ASCII characters, of which outside GB2312) in ``text``; C-speed per chunk."""
    non_ascii = len(text) - len(text.encode("ascii", errors="ignore"))
    if not non_ascii:
        return 0, 0
    outside = text.encode("gb2312", errors="replace").count(b"?") - text.count("?")
    return non_ascii, outside


def _likely_encoding(path: Path) -> str | None:
    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        return "UTF-16"
    return "Big5" if _decodes(path, "big5") else None


def detect_encoding(path: Path) -> str:
    """``utf-8``, ``utf-8-sig`` or ``gb18030``, by decoding the whole file (streaming).

    Government exports are often GB18030; a file that decodes as neither is refused, and so
    is a GB18030 reading that decodes but is garbled (a Big5 export, typically): both with a
    hint naming the encoding the bytes look like.
    """
    with path.open("rb") as fh:
        head = fh.read(3)
    candidates = ["utf-8-sig"] if head == codecs.BOM_UTF8 else ["utf-8", "gb18030"]
    for enc in candidates:
        decoder = codecs.getincrementaldecoder(enc)()
        non_ascii = outside = 0
        try:
            with path.open("rb") as fh:
                seen = 0
                while chunk := fh.read(_CHUNK):
                    text = decoder.decode(chunk)
                    seen += len(chunk)
                    if enc == "gb18030" and seen <= _GARBLE_SAMPLE:
                        n, o = _outside_gb2312(text)
                        non_ascii, outside = non_ascii + n, outside + o
                decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            continue
        if non_ascii and outside / non_ascii > _GARBLED_SHARE and _decodes(path, "big5"):
            raise ValidationError(
                f"{path}: decodes as GB18030 but {outside} of {non_ascii} non-ASCII characters "
                "are garbled (outside GB2312); the bytes look like Big5",
                hint="re-export the file as UTF-8 or GB18030 (e.g. iconv -f BIG5 -t UTF-8)",
            )
        return enc
    likely = _likely_encoding(path)
    raise ValidationError(
        f"{path}: not UTF-8, UTF-8 with BOM, or GB18030 text"
        + (f" (the bytes look like {likely})" if likely else ""),
        hint="re-export the file as UTF-8 or GB18030 CSV"
        + (f" (e.g. iconv -f {likely.upper()} -t UTF-8)" if likely else ""),
    )


def _transcode_to_utf8(path: Path, encoding: str, tmp_dir: Path) -> Path:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"ingest{owner_tag()}", suffix=".csv", dir=tmp_dir)
    decoder = codecs.getincrementaldecoder(encoding)()
    with os.fdopen(fd, "wb") as out, path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            out.write(decoder.decode(chunk).encode("utf-8"))
        out.write(decoder.decode(b"", final=True).encode("utf-8"))
    return Path(name)


def open_source(path: Path, tmp_dir: Path) -> SourceFile:
    if not path.exists():
        raise NotFoundError(f"source {path} does not exist", hint="check the --from path")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".parquet":
        return SourceFile(path, "parquet", None)
    if suffix in (".csv", ".txt"):
        enc = detect_encoding(path)
        if enc == "utf-8":
            return SourceFile(path, "csv", enc)
        return SourceFile(_transcode_to_utf8(path, enc, tmp_dir), "csv", enc, temporary=True)
    raise ValidationError(
        f"{path}: unsupported file type {suffix or '(none)'}",
        hint="ingest Parquet (.parquet or a directory of parts) or CSV (.csv)",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _unreadable(src: SourceFile, source: Path, exc: BaseException) -> ValidationError:
    return ValidationError(
        f"{source}: cannot be read as {src.fmt} ({_first_line(exc)})",
        hint="check that the file is complete and really is " + src.fmt + "; re-export it",
    )


def _check_parts(path: Path, files: list[Path]) -> None:
    """Every part readable (footer) and of one schema — read from the footers only."""
    first: tuple[Path, dict[str, pl.DataType]] | None = None
    for f in files:
        try:
            schema = dict(pl.read_parquet_schema(f))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise ValidationError(
                f"{f}: cannot be read as parquet ({_first_line(exc)})",
                hint="the file is truncated or corrupt: export it again",
            ) from exc
        if first is None:
            first = (f, schema)
            continue
        base, want = first
        for name in dict.fromkeys([*want, *schema]):
            if want.get(name) != schema.get(name):
                theirs = want.get(name, "absent")
                ours = schema.get(name, "absent")
                raise ValidationError(
                    f"{path}: part {f.name} differs from part {base.name} in field {name} "
                    f"({ours} vs {theirs})",
                    hint="export every part with the same fields and types",
                )


def _row_line(path: Path, text: str) -> int | None:
    """The line number where an offending row's text starts (C-speed search, no loop)."""
    needle = text[:200].encode("utf-8")
    if not needle or path.stat().st_size == 0:
        return None
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        at = mm.find(needle)
        if at < 0:
            return None
        # Counted in slices so a row deep in a large file does not copy the file.
        return 1 + sum(mm[i : min(i + _CHUNK, at)].count(b"\n") for i in range(0, at, _CHUNK))


def _check_csv_structure(scan_path: Path, source: Path, names: list[str]) -> None:
    """Every row has the header's field count and every quote is closed.

    polars fills a short row with nulls silently (the error would then blame whatever
    field became null), so one streaming parse by Arrow's CSV reader checks the structure;
    its handler runs only for a bad row.
    """
    bad: list[Any] = []

    def on_invalid(row: Any) -> str:
        bad.append(row)
        return "error"

    try:
        reader = pa_csv.open_csv(
            scan_path,
            parse_options=pa_csv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=on_invalid
            ),
            convert_options=pa_csv.ConvertOptions(column_types={n: pa.string() for n in names}),
        )
        for _batch in reader:
            pass
    except (pa.ArrowInvalid, OSError) as exc:
        if not bad:
            raise ValidationError(
                f"{source}: cannot be parsed as CSV ({_first_line(exc)})",
                hint="check quoting and separators, or re-export the file",
            ) from exc
    if not bad:
        return
    row = bad[0]
    line = _row_line(scan_path, row.text)
    where = f"line {line}" if line else "a row"
    if row.text.count('"') % 2:
        raise ValidationError(
            f'{source}: {where} opens a quoted value that is never closed (unterminated ")',
            hint='close the quote or escape it as "" in the export',
        )
    raise ValidationError(
        f"{source}: {where} has {row.actual_columns} field(s) but the header has "
        f"{row.expected_columns}",
        hint="every row needs one value per header field: check separators and quoting "
        "in the export",
    )


def _scan(src: SourceFile, source: Path) -> pl.LazyFrame:
    try:
        if src.fmt == "parquet":
            files = _parquet_files(src.scan_path)
            _check_parts(src.scan_path, files)
            lf = pl.scan_parquet([str(f) for f in files])
            lf.collect_schema()
            return lf
        lf = pl.scan_csv(src.scan_path, infer_schema=False, raise_if_empty=True)
        names = lf.collect_schema().names()
        _check_csv_structure(src.scan_path, source, names)
        return lf
    except ShuyuError:
        raise
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _unreadable(src, source, exc) from exc


def _cast(expr: pl.Expr, spec: FieldSpec, source_dtype: pl.DataType) -> pl.Expr:
    """Non-strict cast to the catalog type; failures become null and are counted."""
    target = spec.polars_type
    if source_dtype == target:
        return expr
    if source_dtype == pl.String:
        text = expr.str.strip_chars()
        if spec.type == "date":
            return pl.coalesce([text.str.to_date(f, strict=False) for f in _DATE_FORMATS])
        if spec.type == "datetime":
            return text.str.to_datetime(strict=False, time_unit="us")
        if spec.type == "bool":
            low = text.str.to_lowercase()
            return (
                pl.when(low.is_in(_TRUE))
                .then(pl.lit(True))
                .when(low.is_in(_FALSE))
                .then(pl.lit(False))
                .otherwise(pl.lit(None, dtype=pl.Boolean))
            )
        return text.cast(target, strict=False)
    return expr.cast(target, strict=False)


def _display(spec: FieldSpec, value: object) -> str:
    """A failing value for the error message, masked when it is personal information."""
    text = str(value)
    if spec.sensitivity != Sensitivity.NONE or spec.pii_type is not None:
        return (text[:1] + "*" * max(len(text) - 1, 0))[:24]
    return text[:40]


# NUL and the C0 controls other than tab, LF and CR (which quoted cells may hold), and DEL.
_CONTROL = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]"
_CTRL = "\x00ctrl:"


def _refuse_non_temporal(schema: pl.Schema, resource: Resource, source: str) -> None:
    """A date or datetime field must arrive as a date, a datetime or text.

    Casting an integer, float or boolean to a date counts days from 1970 (1.5 and True
    become 1970-01-02): a silent corruption, so such a column is refused by its type.
    """
    for spec in resource.fields:
        if spec.type not in ("date", "datetime") or spec.name not in schema:
            continue
        dtype = schema[spec.name]
        if dtype in (pl.String, pl.Date, pl.Null) or isinstance(dtype, pl.Datetime):
            continue
        raise ValidationError(
            f"{source}: field {spec.name} of {resource.code} is {dtype} in the file but "
            f"declared {spec.type}; numbers and booleans are not converted to dates",
            hint=f"export {spec.name} as a {spec.type} (or as text YYYY-MM-DD), or correct its "
            f"type in {resource.code}.yaml",
        )


def conform(lf: pl.LazyFrame, resource: Resource, source: str) -> tuple[pl.LazyFrame, list[str]]:
    """Check columns and castability; return the frame cast to the catalog schema.

    Raises ValidationError on a missing required field, an unknown field, or a value that
    cannot be cast. Missing optional fields become null columns (returned by name).
    """
    schema = lf.collect_schema()
    present = set(schema.names())
    declared = resource.field_names
    unknown = [c for c in schema.names() if c not in declared]
    if unknown:
        raise ValidationError(
            f"{source}: field(s) not in the catalog entry {resource.code}: {', '.join(unknown)}",
            hint=f"remove them from the export or declare them in {resource.code}.yaml",
        )
    missing_required = [f.name for f in resource.fields if f.required and f.name not in present]
    if missing_required:
        raise ValidationError(
            f"{source}: required field(s) of {resource.code} missing: "
            f"{', '.join(missing_required)}",
            hint="export every required field declared in the catalog",
        )
    absent = [f.name for f in resource.fields if f.name not in present]
    _refuse_non_temporal(schema, resource, source)
    casts: dict[str, pl.Expr] = {}
    failures: list[pl.Expr] = []
    controls: list[pl.Expr] = []
    for spec in resource.fields:
        if spec.name in absent:
            casts[spec.name] = pl.lit(None, dtype=spec.polars_type).alias(spec.name)
            continue
        col = pl.col(spec.name)
        cast = _cast(col, spec, schema[spec.name]).alias(spec.name)
        casts[spec.name] = cast
        if schema[spec.name] != spec.polars_type:
            failures.append((col.is_not_null() & cast.is_null()).sum().alias(spec.name))
        if schema[spec.name] == pl.String:
            controls.append(col.str.contains(_CONTROL).sum().alias(_CTRL + spec.name))
    if failures or controls:
        # One streaming pass counts cast failures and control bytes of every field.
        counts = lf.select(failures + controls).collect(engine="streaming").row(0, named=True)
        ctrl = {k[len(_CTRL) :]: n for k, n in counts.items() if k.startswith(_CTRL) and n}
        if ctrl:
            name, n = next(iter(ctrl.items()))
            row = (
                lf.with_row_index("_row")
                .filter(pl.col(name).str.contains(_CONTROL))
                .select("_row")
                .head(1)
                .collect()
                .item()
            )
            raise ValidationError(
                f"{source}: field {name} of {resource.code} has {n} value(s) with a NUL or "
                f"other control byte (first at row {row + 1})",
                hint="remove control characters from the export (a NUL byte often means a "
                "binary or UTF-16 file)",
            )
        bad = {name: n for name, n in counts.items() if n and not name.startswith(_CTRL)}
        if bad:
            name, n = next(iter(bad.items()))
            spec = resource.field(name)
            example = (
                lf.with_row_index("_row")
                .filter(pl.col(name).is_not_null() & casts[name].is_null())
                .select("_row", name)
                .head(1)
                .collect()
                .row(0)
            )
            others = f" (and {len(bad) - 1} more field(s))" if len(bad) > 1 else ""
            raise ValidationError(
                f"{source}: field {name} of {resource.code} has {n} value(s) that are not a valid "
                f"{spec.type} (first at row {example[0] + 1}: "
                f"{_display(spec, example[1])!r}){others}",
                hint=f"correct the export, or the field type in {resource.code}.yaml",
            )
    return lf.select([casts[f.name] for f in resource.fields]), absent


def partition_count(requested: int | None = None) -> int:
    """The number of parts to write: ``requested``, else ``$SHUYU_PARTITIONS``, else 1."""
    raw = requested if requested is not None else os.environ.get("SHUYU_PARTITIONS", "1")
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if not 1 <= count <= 4096:
        raise ValidationError(
            f"partition count {raw!r} is not a whole number from 1 to 4096",
            hint="pass --partitions N (or set SHUYU_PARTITIONS) with 1 <= N <= 4096",
        )
    return count


def _finalize(stage: Path, manifest: snapshots.Manifest) -> None:
    atomic.write_text(stage / snapshots.MANIFEST, snapshots.manifest_json(manifest))


def ingest_path(
    home: Home,
    code: str,
    path: Path | str,
    catalog: Catalog | None = None,
    progress: Progress | None = None,
    allow_empty: bool = False,
    partitions: int | None = None,
    pulled: PulledFrom | None = None,
) -> snapshots.Manifest:
    """Validate ``path`` against resource ``code`` and write a new immutable snapshot.

    With ``partitions`` (else ``$SHUYU_PARTITIONS``) above 1 and a resource that declares a
    ``privacy_unit``, the snapshot is written as that many parts hash-partitioned on the unit
    (``scaleout.partitioning``), recorded in the manifest.

    ``pulled`` (from ``pipelines.pull``) names the declared source instead of the staged file
    and carries the watermark into the manifest, so it appears with the snapshot atomically.

    Order (crash safety, docs/governance.md "Crash recovery"): recovery sweep and audit-head
    check before anything else; stage; leave an intent; rename into ``raw/``; audit; drop the
    intent. A kill after the rename leaves the intent, so the next command records the
    snapshot; an audit that fails after the rename takes the snapshot back out of ``raw/``.
    """
    home.ensure()
    # Ingest is an operator's act whatever the entry point (CLI, flow, portal).
    actor = roles.require(home, "ingest", f"resource/{code}")
    recovery.sweep(home)
    step = progress or (lambda _msg: None)
    source = Path(path)
    cat = catalog or Catalog.load()
    intent: journal.Intent | None = None
    try:
        try:
            resource = cat.get(code)
            step("detecting format and encoding")
            src = open_source(source, home.tmp)
            try:
                lf = _scan(src, source)
                step("validating against the catalog")
                try:
                    conformed, absent = conform(lf, resource, str(source))
                except pl.exceptions.PolarsError as exc:
                    raise _unreadable(src, source, exc) from exc
                snapshot_id = snapshots.new_snapshot_id()
                final = snapshots.snapshot_dir(home, code, snapshot_id)
                count = partition_count(partitions)
                unit = resource.privacy_unit if count > 1 else None
                with atomic.staged_dir(final, staging_root=home.tmp) as stage:
                    step("writing the snapshot (streaming)")
                    part = stage / ("whole.tmp" if unit else "part-00000.parquet")
                    try:
                        conformed.sink_parquet(part, engine="streaming")
                    except pl.exceptions.PolarsError as exc:
                        raise _unreadable(src, source, exc) from exc
                    rows = pl.scan_parquet(part).select(pl.len()).collect().item()
                    parts = [part]
                    layout = None
                    if unit:
                        step(f"partitioning on {unit} into {count} parts")
                        parts = partitioning.write_parts(part, unit, count, stage)
                        part.unlink()
                        layout = snapshots.Partitioning(
                            by=unit, count=count, scheme=partitioning.HASH_SCHEME
                        )
                    if rows == 0 and not allow_empty:
                        raise ValidationError(
                            f"{source}: no data rows (a header only) for {code}",
                            hint="export the data again, or pass --allow-empty to record an "
                            "empty snapshot on purpose",
                        )
                    step("hashing (SM3)")
                    manifest = snapshots.Manifest(
                        resource=code,
                        snapshot_id=snapshot_id,
                        rows=rows,
                        sm3=sm3_files(parts),
                        files=[p.name for p in parts],
                        columns={f.name: f.type for f in resource.fields},
                        absent_fields=absent,
                        source_path=pulled.label if pulled else str(source.resolve()),
                        source_format=src.fmt,
                        source_encoding=src.encoding,
                        ingested_at=dt.datetime.now(dt.UTC),
                        catalog_version=cat.version,
                        actor=str(actor),
                        partitioning=layout,
                        watermark=pulled.watermark if pulled else None,
                    )
                    _finalize(stage, manifest)
                    faults.point("ingest.staged")
                    details = {
                        "rows": rows,
                        "sm3": manifest.sm3,
                        "source": str(source),
                        "encoding": src.encoding,
                    }
                    if pulled:
                        details |= {"source": pulled.label, "watermark": pulled.watermark}
                    intent = journal.begin(
                        home,
                        "ingest",
                        "ingest",
                        f"{code}/{snapshot_id}",
                        final,
                        details,
                        (actor.name, actor.role),
                    )
            finally:
                if src.temporary:
                    with contextlib.suppress(FileNotFoundError):
                        src.scan_path.unlink()
        except ShuyuError as exc:
            if not exc.audited:
                record(
                    home,
                    "ingest",
                    code,
                    "refused",
                    {"source": str(source), "error": exc.one_line()},
                )
                exc.audited = True
            raise
        faults.point("ingest.after_rename")
        try:
            record(home, "ingest", f"{code}/{snapshot_id}", "ok", details)
        except BaseException:
            # Nothing visible without its entry: take the snapshot back out of raw/.
            _withdraw(home, final)
            raise
        faults.point("ingest.audited")
    finally:
        if intent is not None:
            journal.done(intent)
    return manifest


def _withdraw(home: Home, final: Path) -> None:
    """Remove a renamed snapshot whose audit entry could not be written: rename it out of
    ``raw/`` first (atomic), then delete it from the staging area."""
    if not final.exists():
        return
    gone = home.tmp / f".{final.name}{owner_tag()}withdrawn.staging"
    os.rename(final, gone)
    shutil.rmtree(gone, ignore_errors=True)
