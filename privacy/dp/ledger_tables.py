"""The ledger's tables (``dp_budget``, ``dp_ledger``), apart so that the ledger and its
integrity checks can both use them without importing each other."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from shuyu_core.db import METADATA

dp_budget = Table(
    "dp_budget",
    METADATA,
    Column("resource", String(64), primary_key=True),
    Column("unit", String(200), primary_key=True),
    Column("period", String(32), primary_key=True),
    Column("total_rho", Float, nullable=False),
    Column("delta", Float, nullable=False),
    Column("source", String(1000), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

dp_ledger = Table(
    "dp_ledger",
    METADATA,
    Column("entry_id", String(300), primary_key=True),
    Column("release_id", String(200), nullable=False, index=True),
    Column("product_id", String(100), nullable=False),
    Column("version", String(40), nullable=False),
    Column("resource", String(64), nullable=False),
    Column("unit", String(200), nullable=False),
    Column("period", String(32), nullable=False),
    Column("rho", Float, nullable=False),
    Column("epsilon", Float, nullable=False),
    Column("delta", Float, nullable=False),
    Column("snapshots", Text, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("charged_at", DateTime(timezone=True), nullable=False),
    Column("state", String(20), nullable=False),
    Column("draws", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # SM3 of the stored release's release.json, set when the release is stored.
    Column("release_sm3", String(64), nullable=True),
    UniqueConstraint("release_id", "resource", name="uq_dp_ledger_release_resource"),
)
