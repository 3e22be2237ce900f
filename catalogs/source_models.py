"""Where a catalogued resource is pulled from (``source:`` in its YAML; optional).

Two kinds, as the source units deliver data:

- ``file_drop``: exports dropped into a directory; each new file matching ``glob`` is one
  snapshot. What was already taken is a manifest in the home, not in the drop directory (the
  source unit may own that directory).
- ``database``: a table or query in the source unit's front-end database (前置库), read with
  polars' database reader; ``watermark`` (e.g. 更新日期) makes each pull take only rows newer
  than the last snapshot's watermark.

Credentials never live in the catalog: the SQLAlchemy URI comes from the environment variable
``uri_env`` or from the file ``uri_file`` (kept with mode 0600 next to the keys).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A column or table name spliced into SQL: plain identifiers only (letters, digits, _, CJK),
# optionally schema-qualified. Values always go in as bound parameters.
_IDENT = re.compile(r"^[\w一-鿿]+(\.[\w一-鿿]+)?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileDropSource(_Strict):
    kind: Literal["file_drop"]
    directory: str = Field(description="absolute directory the source unit drops exports into")
    glob: str = Field(default="*.parquet", description="which files are exports, e.g. *.csv")


class DatabaseSource(_Strict):
    kind: Literal["database"]
    uri_env: str | None = Field(
        default=None, description="environment variable holding the SQLAlchemy URI"
    )
    uri_file: str | None = Field(
        default=None, description="file holding the SQLAlchemy URI (mode 0600)"
    )
    table: str | None = None
    query: str | None = Field(default=None, description="a SELECT, used as a subquery")
    watermark: str | None = Field(
        default=None, description="incremental column, e.g. 更新日期; unset: full pull each time"
    )

    @model_validator(mode="after")
    def _one_of_each(self) -> DatabaseSource:
        if (self.uri_env is None) == (self.uri_file is None):
            raise ValueError("a database source names exactly one of uri_env or uri_file")
        if (self.table is None) == (self.query is None):
            raise ValueError("a database source names exactly one of table or query")
        for what, name in (("table", self.table), ("watermark", self.watermark)):
            if name is not None and not _IDENT.match(name):
                raise ValueError(f"{what} {name!r} is not a plain (schema.)identifier")
        if self.uri_env is not None and not re.fullmatch(r"[A-Z_][A-Z0-9_]*", self.uri_env):
            raise ValueError(f"uri_env {self.uri_env!r} is not an environment variable name")
        if self.query is not None and not self.query.lstrip().lower().startswith("select"):
            raise ValueError("query must be a single SELECT")
        return self


Source = Annotated[FileDropSource | DatabaseSource, Field(discriminator="kind")]
