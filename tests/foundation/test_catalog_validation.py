"""Catalog loading: the shipped directory is valid; broken specs fail with file and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from catalogs import codelists
from catalogs.catalog import PACKAGED_RESOURCES, Catalog
from catalogs.vocabulary import PiiType
from shuyu_core.errors import NotFoundError, ValidationError


def _copy_catalog(tmp_path: Path) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(PACKAGED_RESOURCES, target)
    return target


def _edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")


def test_shipped_catalog_is_valid_and_covers_the_vocabulary_types_it_uses() -> None:
    catalog = Catalog.load()
    assert sorted(catalog.resources) == ["RKJBXX", "SBCBJF", "SCZTDJ", "YBJS"]
    used = {f.pii_type for r in catalog for f in r.fields if f.pii_type}
    assert used <= set(PiiType)
    assert PiiType.CN_RESIDENT_ID in used
    for res in catalog:
        assert res.privacy_unit in res.field_names


def test_unknown_pii_type_names_file_and_field(tmp_path: Path) -> None:
    root = _copy_catalog(tmp_path)
    _edit(root / "RKJBXX.yaml", lambda d: d["fields"][1].update(pii_type="CN_NAME"))
    with pytest.raises(ValidationError) as err:
        Catalog.load(root)
    msg = err.value.one_line()
    assert "RKJBXX.yaml" in msg and "fields[1].pii_type" in msg


def test_pii_without_sensitivity_is_refused(tmp_path: Path) -> None:
    root = _copy_catalog(tmp_path)
    _edit(root / "RKJBXX.yaml", lambda d: d["fields"][1].update(sensitivity="none"))
    with pytest.raises(ValidationError, match="sensitivity none"):
        Catalog.load(root)


def test_privacy_unit_must_be_a_field(tmp_path: Path) -> None:
    root = _copy_catalog(tmp_path)
    _edit(root / "SCZTDJ.yaml", lambda d: d.update(privacy_unit="企业编号"))
    with pytest.raises(ValidationError, match="privacy_unit '企业编号'"):
        Catalog.load(root)


def test_dangling_reference_is_refused(tmp_path: Path) -> None:
    root = _copy_catalog(tmp_path)
    (root / "RKJBXX.yaml").unlink()
    with pytest.raises(ValidationError, match=r"references RKJBXX\.公民身份号码"):
        Catalog.load(root)


def test_unknown_codelist_is_refused(tmp_path: Path) -> None:
    root = _copy_catalog(tmp_path)

    def change(d: dict) -> None:  # type: ignore[type-arg]
        d["fields"][4]["rules"]["codelist"] = "gb9999"

    _edit(root / "RKJBXX.yaml", change)
    with pytest.raises(ValidationError, match="unknown code list 'gb9999'"):
        Catalog.load(root)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    root = _copy_catalog(tmp_path)
    (root / "YBJS.yaml").write_text("code: YBJS\nfields: [\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"YBJS\.yaml: line \d+ is not valid YAML"):
        Catalog.load(root)


def test_negative_list_entry_needs_reason_and_review_date(tmp_path: Path) -> None:
    root = _copy_catalog(tmp_path)
    _edit(root / "YBJS.yaml", lambda d: d.update(negative_list={"listed": True}))
    with pytest.raises(ValidationError, match="needs a reason and a review_date"):
        Catalog.load(root)


def test_unknown_resource_lists_known_codes() -> None:
    with pytest.raises(NotFoundError) as err:
        Catalog.load().get("NOPE")
    assert "unknown resource 'NOPE'" in err.value.one_line()
    assert "RKJBXX" in err.value.one_line()


def test_region_codelists_from_gbt2260() -> None:
    current = codelists.load("gbt2260")
    every = codelists.load("gbt2260_all")
    assert current["210802"] == "站前区"
    # 210812 (鲅鱼圈区 1984-1986) was abolished: valid historically, not currently.
    assert "210812" not in current and "210812" in every
    assert set(codelists.load("yingkou_districts")) <= set(current)
