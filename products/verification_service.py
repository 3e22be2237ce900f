"""Verification as a service (数据核验接口): one request's queries answered in memory.

The same gates as ``shuyu build <verification product> --queries FILE`` — the requester's
permission (``verify.query`` under the product's developer), the scenario's authorization of
the product and its field pairs, the policy's quota ceiling, query validation and id
screening, consent per query, the daily quota and the audit entries — through
:func:`products.verification.answer`. The difference is where the answers go: back to the
requester only, never into ``releases/`` or ``published/``.

Lookups use the keyed index of each check over the resource's latest verified snapshot
(``work/verification/``, built on first use exactly as a build builds it), held in memory
sorted by token so one query is two binary searches instead of a join over the registry.
The in-memory copy is dropped when the index file changes.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl

from catalogs.catalog import Catalog
from catalogs.product_models import ProductSpec, VerificationCheck
from governance import evidence, roles
from governance.actors import current_actor
from products import specs
from products.authz import require_build_authorized
from products.verification import (
    Lookup,
    answer,
    check_quota_ceiling,
    index_path,
    screen_query_ids,
    snapshot_index,
    validate_queries,
)
from shuyu_core import snapshots
from shuyu_core.errors import ValidationError
from shuyu_core.home import Home
from shuyu_core.keys import PSEUDONYM, load_key

_lock = threading.Lock()
_indexes: dict[Path, tuple[tuple[int, int], pl.DataFrame]] = {}
_catalog: list[Catalog] = []
# A granted authorization is reused for AUTH_TTL seconds: checking it re-reads every agreement
# and policy YAML (~50 ms), more than the rest of a query. Refusals are never cached, and the
# requester's account and role are checked at every request.
AUTH_TTL = 60.0
_authorized: dict[tuple[str, str, dt.date], float] = {}


def _catalog_once() -> Catalog:
    # The resource directory is read-only while the service runs (changes need a restart).
    if not _catalog:
        _catalog.append(Catalog.load())
    return _catalog[0]


def _sorted_index(home: Home, check: VerificationCheck, key: bytes) -> pl.DataFrame:
    """The check's keyed index over the latest verified snapshot, sorted, cached in memory."""
    snap = snapshots.latest(home, check.resource)
    evidence.verify_snapshot(home, snap)  # per-process cached by the parts' size and mtime
    path = index_path(home, check, snap.snapshot_id, key)
    with _lock:
        if path.exists():
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            hit = _indexes.get(path)
            if hit is not None and hit[0] == stamp:
                return hit[1]
        fields = [check.key_field, check.name_field]
        frame = snapshot_index(
            home,
            check,
            snap.snapshot_id,
            key,
            lambda: snapshots.scan(home, check.resource, snap.snapshot_id, columns=fields),
        ).sort("key_token", "name_token")
        st = path.stat()
        _indexes[path] = ((st.st_mtime_ns, st.st_size), frame)
        return frame


def sorted_lookup(indexes: dict[str, pl.DataFrame]) -> Lookup:
    """``_found`` / ``_match`` by binary search in an index sorted by (key, name) token."""

    def lookup(check: VerificationCheck, sub: pl.DataFrame) -> pl.DataFrame:
        index = indexes[check.kind]
        keys, names = index["key_token"], index["name_token"]
        q = sub["key_token"].fill_null("")
        lo = keys.search_sorted(q, side="left")
        hi = keys.search_sorted(q, side="right")
        spans = pl.DataFrame(
            {
                "_i": pl.int_range(0, sub.height, eager=True),
                "_lo": lo,
                "_hi": hi,
                "_name": sub["name_token"],
            }
        )
        # Each found identifier has a few (usually one) names: compare them all, vectorized.
        cand = (
            spans.filter(pl.col("_hi") > pl.col("_lo"))
            .with_columns(pl.int_ranges("_lo", "_hi").alias("_pos"))
            .explode("_pos")
        )
        cand = cand.with_columns(names.gather(cand["_pos"]).alias("_idx_name"))
        matched = (
            cand.filter(pl.col("_idx_name") == pl.col("_name"))
            .select("_i")
            .unique()
            .with_columns(pl.lit(True).alias("_match"))
        )
        flags = spans.select(
            "_i", ((pl.col("_hi") > pl.col("_lo")) & pl.col("_name").is_not_null()).alias("_f")
        ).join(matched, on="_i", how="left")
        found = sub["key_token"].is_not_null() & flags["_f"]
        return sub.with_columns(
            pl.when(found).then(True).otherwise(None).alias("_found"),
            pl.when(found & flags["_match"].fill_null(False)).then(True).alias("_match"),
        )

    return lookup


def _require_authorized(home: Home, spec: ProductSpec) -> None:
    today = dt.date.today()
    key = (str(home.root), specs.spec_sm3(spec), today)
    now = time.monotonic()
    if now - _authorized.get(key, -AUTH_TTL) < AUTH_TTL:
        return
    require_build_authorized(home, spec, today, _catalog_once())
    _authorized[key] = now


_specs: dict[str, tuple[tuple[int, int], ProductSpec]] = {}


def spec_of(product: str) -> ProductSpec:
    path = specs.spec_path(product)  # validates the id before any path is built
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = (0, -1)
    hit = _specs.get(str(path))
    if hit is not None and hit[0] == stamp:
        spec = hit[1]
    else:  # parsed again whenever the file changes
        spec = specs.get(product)
        _specs[str(path)] = (stamp, spec)
    if spec.kind != "verification" or spec.verification is None:
        raise ValidationError(
            f"product {product} is not a verification product",
            hint="name a product of kind verification",
        )
    return spec


def verify(
    home: Home, product: str, rows: list[dict[str, Any]], channel: dict[str, Any]
) -> pl.DataFrame:
    """Answer ``rows`` (query dicts) for the current actor: ``query_id, kind, result, reason``.

    ``channel`` goes into the audit entries (how the queries came: ``{"channel": "api",
    "token": id}``)."""
    spec = spec_of(product)
    ver = spec.verification
    assert ver is not None
    roles.require(home, "verify.query", spec.id, developer=spec.developer)
    _require_authorized(home, spec)
    check_quota_ceiling(home, spec, action="verify.query")
    who = current_actor()
    schema = {c: pl.String for c in ("query_id", "kind", "name", "id_number", "consent_ref")}
    present = {k: v for k, v in schema.items() if any(k in r for r in rows)}
    frame = pl.DataFrame(
        [{k: (None if r.get(k) is None else str(r.get(k))) for k in present} for r in rows],
        schema=present,
    )
    queries = validate_queries(frame, ver.max_batch, "request")
    screen_query_ids(home, spec, queries, who)
    key = load_key(home, PSEUDONYM)
    indexes = {str(c.kind): _sorted_index(home, c, key) for c in ver.checks}
    result, _meta = answer(
        home, spec, queries, who, f"api/{spec.id}", sorted_lookup(indexes), channel
    )
    return result
