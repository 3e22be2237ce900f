"""Ingestion into the domain: validate a source export against the catalog and write an
immutable snapshot ``raw/<CODE>/<snapshot-id>/`` atomically.

Plain functions; the Prefect flow in ``pipelines/flows.py`` wraps them.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from catalogs.catalog import Catalog
from catalogs.models import FieldSpec, Resource
from catalogs.vocabulary import Sensitivity
from governance.actors import current_actor
from governance.audit import record
from shuyu_core import atomic, snapshots
from shuyu_core.errors import NotFoundError, ShuyuError, ValidationError
from shuyu_core.hashing import sm3_files
from shuyu_core.home import Home

Progress = Callable[[str], None]
_CHUNK = 4 << 20
_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d")
_TRUE = ["true", "1", "y", "yes", "是"]
_FALSE = ["false", "0", "n", "no", "否"]


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


def detect_encoding(path: Path) -> str:
    """``utf-8``, ``utf-8-sig`` or ``gb18030``, by decoding the whole file (streaming).

    Government exports are often GB18030; a file that decodes as neither is refused.
    """
    with path.open("rb") as fh:
        head = fh.read(3)
    candidates = ["utf-8-sig"] if head == codecs.BOM_UTF8 else ["utf-8", "gb18030"]
    for enc in candidates:
        decoder = codecs.getincrementaldecoder(enc)()
        try:
            with path.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    decoder.decode(chunk)
                decoder.decode(b"", final=True)
            return enc
        except UnicodeDecodeError:
            continue
    raise ValidationError(
        f"{path}: not UTF-8, UTF-8 with BOM, or GB18030 text",
        hint="re-export the file as UTF-8 or GB18030 CSV",
    )


def _transcode_to_utf8(path: Path, encoding: str, tmp_dir: Path) -> Path:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="ingest-", suffix=".csv", dir=tmp_dir)
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


def _scan(src: SourceFile) -> pl.LazyFrame:
    try:
        if src.fmt == "parquet":
            files = _parquet_files(src.scan_path)
            lf = pl.scan_parquet([str(f) for f in files])
            lf.collect_schema()
            return lf
        lf = pl.scan_csv(src.scan_path, infer_schema=False, raise_if_empty=True)
        lf.collect_schema()
        return lf
    except ShuyuError:
        raise
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValidationError(
            f"{src.scan_path}: cannot be read as {src.fmt} ({first})",
            hint="check that the file is complete and really is " + src.fmt,
        ) from exc


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
    casts: dict[str, pl.Expr] = {}
    failures: list[pl.Expr] = []
    for spec in resource.fields:
        if spec.name in absent:
            casts[spec.name] = pl.lit(None, dtype=spec.polars_type).alias(spec.name)
            continue
        col = pl.col(spec.name)
        cast = _cast(col, spec, schema[spec.name]).alias(spec.name)
        casts[spec.name] = cast
        if schema[spec.name] != spec.polars_type:
            failures.append((col.is_not_null() & cast.is_null()).sum().alias(spec.name))
    if failures:
        counts = lf.select(failures).collect(engine="streaming").row(0, named=True)
        bad = {name: n for name, n in counts.items() if n}
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


def _finalize(stage: Path, manifest: snapshots.Manifest) -> None:
    atomic.write_text(stage / snapshots.MANIFEST, snapshots.manifest_json(manifest))


def ingest_path(
    home: Home,
    code: str,
    path: Path | str,
    catalog: Catalog | None = None,
    progress: Progress | None = None,
) -> snapshots.Manifest:
    """Validate ``path`` against resource ``code`` and write a new immutable snapshot."""
    home.ensure()
    step = progress or (lambda _msg: None)
    source = Path(path)
    cat = catalog or Catalog.load()
    actor = current_actor()
    try:
        resource = cat.get(code)
        step("detecting format and encoding")
        src = open_source(source, home.tmp)
        try:
            lf = _scan(src)
            step("validating against the catalog")
            conformed, absent = conform(lf, resource, str(source))
            snapshot_id = snapshots.new_snapshot_id()
            final = snapshots.snapshot_dir(home, code, snapshot_id)
            with atomic.staged_dir(final, staging_root=home.tmp) as stage:
                step("writing the snapshot (streaming)")
                part = stage / "part-00000.parquet"
                conformed.sink_parquet(part, engine="streaming")
                rows = pl.scan_parquet(part).select(pl.len()).collect().item()
                step("hashing (SM3)")
                manifest = snapshots.Manifest(
                    resource=code,
                    snapshot_id=snapshot_id,
                    rows=rows,
                    sm3=sm3_files([part]),
                    files=[part.name],
                    columns={f.name: f.type for f in resource.fields},
                    absent_fields=absent,
                    source_path=str(source.resolve()),
                    source_format=src.fmt,
                    source_encoding=src.encoding,
                    ingested_at=dt.datetime.now(dt.UTC),
                    catalog_version=cat.version,
                    actor=str(actor),
                )
                _finalize(stage, manifest)
        finally:
            if src.temporary:
                with contextlib.suppress(FileNotFoundError):
                    src.scan_path.unlink()
    except ShuyuError as exc:
        record(home, "ingest", code, "refused", {"source": str(source), "error": exc.one_line()})
        exc.audited = True
        raise
    record(
        home,
        "ingest",
        f"{code}/{snapshot_id}",
        "ok",
        {"rows": rows, "sm3": manifest.sm3, "source": str(source), "encoding": src.encoding},
    )
    return manifest
