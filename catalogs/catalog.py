"""The resource directory (数据资源目录): every resource YAML, validated as one set."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from catalogs import codelists
from catalogs.loading import load_model
from catalogs.models import Resource
from shuyu_core.errors import NotFoundError, ValidationError
from shuyu_core.hashing import sm3_files

PACKAGED_RESOURCES = Path(__file__).parent / "resources"


def resources_dir() -> Path:
    """``SHUYU_CATALOG`` if set, else the directory shipped with the package."""
    env = os.environ.get("SHUYU_CATALOG")
    return Path(env) if env else PACKAGED_RESOURCES


@dataclass(frozen=True)
class Catalog:
    directory: Path
    resources: dict[str, Resource]
    version: str = field(default="")

    @classmethod
    def load(cls, directory: Path | None = None) -> Catalog:
        root = directory or resources_dir()
        if not root.is_dir():
            raise NotFoundError(
                f"catalog directory {root} does not exist",
                hint="set SHUYU_CATALOG to a directory of resource YAML files",
            )
        files = sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml"))
        resources: dict[str, Resource] = {}
        for path in files:
            res = load_model(Resource, path)
            if res.code in resources:
                raise ValidationError(
                    f"{path}: resource code {res.code} is declared twice",
                    hint="give every resource its own code",
                )
            if path.stem != res.code:
                raise ValidationError(
                    f"{path}: file name must be the resource code ({res.code}.yaml)",
                    hint=f"rename it to {res.code}.yaml",
                )
            resources[res.code] = res
        catalog = cls(root, resources, version=sm3_files(files)[:16])
        catalog.check_links()
        return catalog

    def check_links(self) -> None:
        """Cross-file checks: code lists exist, references point at real fields."""
        known_lists = set(codelists.available())
        for res in self.resources.values():
            for f in res.fields:
                where = f"{self.directory / (res.code + '.yaml')}: fields.{f.name}"
                if f.rules.codelist and f.rules.codelist not in known_lists:
                    raise ValidationError(
                        f"{where}: unknown code list {f.rules.codelist!r}",
                        hint=f"use one of {', '.join(sorted(known_lists))}",
                    )
                ref = f.rules.references
                if ref is None:
                    continue
                target = self.resources.get(ref.resource)
                if target is None or ref.field not in target.field_names:
                    raise ValidationError(
                        f"{where}: references {ref.resource}.{ref.field}, which is not in "
                        "the catalog",
                        hint="point references at an existing resource field",
                    )

    def get(self, code: str) -> Resource:
        try:
            return self.resources[code]
        except KeyError:
            raise NotFoundError(
                f"unknown resource {code!r}",
                hint=f"see 'shuyu catalog list' (known: {', '.join(sorted(self.resources))})",
            ) from None

    def __iter__(self) -> Iterator[Resource]:
        return iter(self.resources[c] for c in sorted(self.resources))

    def negative_listed(self) -> list[Resource]:
        return [r for r in self if r.negative_list.listed]
