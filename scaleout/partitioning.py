"""Hash partitioning of a snapshot on its privacy unit.

Every row of one unit lands in the same part, so per-unit work (contribution bounding, one row
per person) runs part by part without a shuffle, and two resources partitioned with the same
count are co-partitioned on the unit (part *i* joins part *i*).

The hash must be the same on every machine and in every release: Python's ``hash()`` is salted
per process and polars' ``Expr.hash`` is only stable within one polars version. So the scheme
is ours, named in the manifest (``HASH_SCHEME``) and computed with numpy over the UTF-8 bytes
of the unit's text (a polynomial hash mod 2**64, then a splitmix64 finalizer), vectorized over
an Arrow batch: no per-row Python.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HASH_SCHEME = "poly64-splitmix64-utf8-v1"
_P = np.uint64(1099511628211)  # the FNV-64 prime as the polynomial base
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))


def unit_hash(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A stable 64-bit hash per value of its text (nulls hash to 0)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
    text = pc.cast(values, pa.large_string())
    n = len(text)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    bufs = text.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[text.offset : text.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    start, end = int(offsets[0]), int(offsets[-1])
    lengths = np.diff(offsets)
    with np.errstate(over="ignore"):
        if end > start:
            body = data[start:end].astype(np.uint64) + np.uint64(1)
            row = np.repeat(np.arange(n), lengths)
            # Horner's rule unrolled: byte j of a value of length L weighs P**(L-1-j) mod 2**64.
            from_end = (offsets[1:][row] - 1 - np.arange(start, end)).astype(np.uint64)
            terms = body * np.power(_P, from_end)
            sums = np.zeros(n, dtype=np.uint64)
            _segment_sum(terms, lengths, sums)
        else:
            sums = np.zeros(n, dtype=np.uint64)
        h = _splitmix(sums ^ (lengths.astype(np.uint64) * _P))
    valid = text.is_valid().to_numpy(zero_copy_only=False)
    return np.where(valid, h, np.uint64(0))


def _segment_sum(terms: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """Per-value sums of consecutive segments (uint64 wraps); empty segments stay 0."""
    nonempty = lengths > 0
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[nonempty]
    with np.errstate(over="ignore"):
        out[nonempty] = np.add.reduceat(terms, starts)


def part_of(values: pa.Array | pa.ChunkedArray, count: int) -> np.ndarray:
    """The part index (0 … count-1) of every value."""
    if count < 1:
        raise ValueError("partition count must be at least 1")
    return (unit_hash(values) % np.uint64(count)).astype(np.int64)


def write_parts(
    source: Path, unit: str, count: int, out_dir: Path, batch_rows: int = 1 << 20
) -> list[Path]:
    """Split the parquet file ``source`` into ``count`` parts ``part-00000.parquet``… in
    ``out_dir`` by the hash of column ``unit``; one streaming pass (Arrow batches), the rows of
    each part in their source order. Every part is written, empty ones included, so part *i*
    of two resources with the same count always exist together."""
    pf = pq.ParquetFile(source)
    schema = pf.schema_arrow
    paths = [out_dir / f"part-{i:05d}.parquet" for i in range(count)]
    writers = [pq.ParquetWriter(p, schema, compression="zstd") for p in paths]
    try:
        for batch in pf.iter_batches(batch_size=batch_rows):
            parts = part_of(batch.column(unit), count)
            order = np.argsort(parts, kind="stable")
            bounds = np.searchsorted(parts[order], np.arange(count + 1))
            sorted_batch = batch.take(pa.array(order))
            for i in range(count):
                lo, hi = int(bounds[i]), int(bounds[i + 1])
                if hi > lo:
                    writers[i].write_batch(sorted_batch.slice(lo, hi - lo))
    finally:
        for w in writers:
            w.close()
    return paths
