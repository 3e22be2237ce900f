"""Typed models of the resource directory (数据资源目录).

One YAML file per resource under ``catalogs/resources/``; see the README for an annotated
example. Field types are the polars types the data is cast to on ingestion.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from catalogs.source_models import Source
from catalogs.vocabulary import (
    Grade,
    OpenAttribute,
    PiiType,
    Sensitivity,
    SharingAttribute,
    UpdateFrequency,
)

FieldType = Literal["string", "int", "float", "date", "datetime", "bool"]

POLARS_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us"),
    "bool": pl.Boolean(),
}

CheckDigit = Literal["GB11643", "GB32100", "LUHN"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reference(Strict):
    """A foreign key: every non-null value must exist in another resource's field."""

    resource: str
    field: str


class QualityRules(Strict):
    """Declarative checks compiled by the quality module (GB/T 36344 dimensions)."""

    pattern: str | None = None
    check_digit: CheckDigit | None = None
    codelist: str | None = Field(
        default=None, description="name of a shipped code list (catalogs/codelists)"
    )
    allowed: list[str] | None = Field(default=None, description="an inline code list")
    min: float | None = None
    max: float | None = None
    unique: bool = False
    references: Reference | None = None
    not_future: bool = False
    max_age_days: int | None = Field(
        default=None, description="a record whose value is older than this is stale"
    )
    consistent_with_id: str | None = Field(
        default=None,
        description="name of the ID-number field this birth date or sex must agree with",
    )

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"pattern {v!r} is not a valid regular expression: {exc}") from exc
        return v


class FieldSpec(Strict):
    name: str
    type: FieldType
    description: str = ""
    required: bool = False
    pii_type: PiiType | None = None
    sensitivity: Sensitivity = Sensitivity.NONE
    quasi_identifier: bool = False
    rules: QualityRules = QualityRules()

    @model_validator(mode="after")
    def _pii_has_sensitivity(self) -> FieldSpec:
        personal = self.pii_type is not None and self.pii_type != PiiType.CN_USCC
        if personal and self.sensitivity == Sensitivity.NONE:
            assert self.pii_type is not None
            raise ValueError(
                f"field {self.name!r} declares pii_type {self.pii_type.value} "
                "but sensitivity none; use personal or sensitive_personal"
            )
        return self

    @property
    def polars_type(self) -> pl.DataType:
        return POLARS_TYPES[self.type]


class NegativeList(Strict):
    """负面清单 entry: a listed resource can never feed a product."""

    listed: bool = False
    reason: str | None = None
    review_date: dt.date | None = None

    @model_validator(mode="after")
    def _reason_when_listed(self) -> NegativeList:
        if self.listed and not (self.reason and self.review_date):
            raise ValueError("a negative-listed resource needs a reason and a review_date")
        return self


class SourceUnit(Strict):
    code: str
    name: str


class Resource(Strict):
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_-]{1,31}$")
    name: str
    name_en: str
    source_unit: SourceUnit
    sector: str
    description: str
    update_frequency: UpdateFrequency
    sharing: SharingAttribute
    open: OpenAttribute
    grade: Grade
    privacy_unit: str | None = Field(
        default=None, description="the column that identifies a person or an enterprise"
    )
    primary_key: list[str] = Field(default_factory=list)
    location: str = Field(default="", description="where the source system keeps it")
    negative_list: NegativeList = NegativeList()
    source: Source | None = Field(default=None, description="where `shuyu pull` takes it from")
    fields: list[FieldSpec]

    @model_validator(mode="after")
    def _fields_consistent(self) -> Resource:
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate field names: {', '.join(dupes)}")
        known = set(names)
        if self.privacy_unit is not None and self.privacy_unit not in known:
            raise ValueError(f"privacy_unit {self.privacy_unit!r} is not one of the fields")
        for key in self.primary_key:
            if key not in known:
                raise ValueError(f"primary_key field {key!r} is not one of the fields")
        watermark = getattr(self.source, "watermark", None)
        if watermark is not None and watermark not in known:
            raise ValueError(f"source.watermark {watermark!r} is not one of the fields")
        for f in self.fields:
            ref = f.rules.consistent_with_id
            if ref is not None and ref not in known:
                raise ValueError(f"field {f.name!r}: consistent_with_id {ref!r} is not a field")
        return self

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def polars_schema(self) -> pl.Schema:
        return pl.Schema({f.name: f.polars_type for f in self.fields})

    @property
    def personal_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.sensitivity != Sensitivity.NONE]
