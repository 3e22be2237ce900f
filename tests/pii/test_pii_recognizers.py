"""The offline Presidio analyzer: recognizers for the vocabulary, no model download."""

from __future__ import annotations

import pytest
import spacy.cli

from catalogs.vocabulary import PiiType
from privacy.pii import validators as V
from privacy.pii.engine import analyzer, model_dir
from privacy.pii.recognizers import all_recognizers
from shuyu_core.home import Home


def _found(text: str, home: Home) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in analyzer(home).analyze(text=text, language="zh"):
        out.setdefault(r.entity_type, []).append(text[r.start : r.end])
    return out


def test_analyzer_builds_offline_inside_the_home(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_download(*_a: object, **_k: object) -> None:
        raise AssertionError("a model download was attempted")

    monkeypatch.setattr(spacy.cli, "download", no_download)
    engine = analyzer(home)
    assert (model_dir(home) / "config.cfg").exists()
    assert model_dir(home).is_relative_to(home.root)
    supported = set(engine.get_supported_entities(language="zh"))
    assert {t.value for t in PiiType} <= supported
    assert len(all_recognizers()) == len(PiiType)


def test_identifiers_in_chinese_text(home: Home) -> None:
    body = "21080219900307123"
    rid = body + V.resident_id_check_char_scalar(body)
    text = (
        f"客户王小明来电，手机13812345678，身份证号{rid}，"
        "住辽宁省营口市站前区渤海大街12号3单元501室，邮箱 zhang.san@example.com，"
        "车牌辽HD12345，座机0417-2812345，登录IP 192.168.1.20"
    )
    found = _found(text, home)
    assert found["CN_MOBILE"] == ["13812345678"]
    assert found["CN_RESIDENT_ID"] == [rid]
    assert found["EMAIL"] == ["zhang.san@example.com"]
    assert found["CN_LICENSE_PLATE"] == ["辽HD12345"]
    assert found["CN_PHONE"] == ["0417-2812345"]
    assert found["IP_ADDRESS"] == ["192.168.1.20"]
    assert "王小明" in found["PERSON_NAME"]
    assert any("辽宁省营口市站前区渤海大街12号3单元501室" in a for a in found["ADDRESS"])
    assert "ADDRESS" not in _found("营口市铁路物流有限公司", home)


def test_validation_rejects_look_alikes(home: Home) -> None:
    body = "21080219900307123"
    good = V.resident_id_check_char_scalar(body)
    bad = "1" if good != "1" else "2"
    found = _found(f"订单号{body}{bad}，流水号14012345678，条码6901234567892", home)
    assert "CN_RESIDENT_ID" not in found
    assert "CN_MOBILE" not in found
    assert "CN_BANK_CARD" not in found


def test_birth_date_needs_context(home: Home) -> None:
    assert "DATE_OF_BIRTH" in _found("出生日期：1990年5月3日", home)
    assert "DATE_OF_BIRTH" not in _found("办理日期：1990年5月3日", home)
