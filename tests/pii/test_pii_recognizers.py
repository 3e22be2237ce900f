"""The offline Presidio analyzer: recognizers for the vocabulary, no model download."""

from __future__ import annotations

import re
import sys

import pytest
import spacy.cli

from catalogs.vocabulary import PiiType
from privacy.pii import segmenter
from privacy.pii import validators as V
from privacy.pii.engine import analyzer, build_analyzer, model_dir
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
    # Built from scratch here (``analyzer`` may hand out an engine an earlier test built).
    engine = build_analyzer(model_dir(home))
    assert (model_dir(home) / "config.cfg").exists()
    assert model_dir(home).is_relative_to(home.root)
    supported = set(engine.get_supported_entities(language="zh"))
    assert {t.value for t in PiiType} <= supported
    assert len(all_recognizers()) == len(PiiType)
    found = {r.entity_type for r in engine.analyze("手机13812345678", language="zh")}
    assert found == {"CN_MOBILE"}
    # The process-wide analyzer saves the model into every home it serves.
    other = Home(home.root.parent / "other_home")
    analyzer(other)
    assert (model_dir(other) / "config.cfg").exists()


def _numbers(value: object) -> list[float]:
    if isinstance(value, dict):
        return [x for k in value for x in (*_numbers(k), *_numbers(value[k]))]
    if isinstance(value, tuple):
        return [x for v in value for x in _numbers(v)]
    return [float(value)] if isinstance(value, float | int) else []


def test_jieba_tables_from_pickles_equal_the_source_tables() -> None:
    """The fast import (pickled HMM tables) gives jieba the tables of its source files:
    small tables compared whole, large ones (parsing 4 MB of source is what the fast import
    avoids) by their keys and a checksum of every number and state tuple in them."""
    import ast

    segmenter.posseg()
    root = segmenter.package_dir()
    assert root is not None
    number = re.compile(r"-?[0-9]+\.[0-9]+(?:e[+-][0-9]+)?|-?[0-9]+e[+-][0-9]+")
    state = re.compile(r"\(\s*'([BMES])',\s*'([a-z]+)'\s*\)")
    for package, names in segmenter._TABLES.items():
        for name in names:
            loaded = sys.modules[f"jieba.{package}.{name}"].P
            path = root / package / f"{name}.py"
            source = path.read_text(encoding="utf-8")
            if path.stat().st_size < 300_000:
                body = source[source.index("P=") + 2 :]
                assert ast.literal_eval(body) == loaded, (package, name)
                continue
            numbers = [float(x) for x in number.findall(source)]
            assert sorted(numbers) == sorted(_numbers(loaded)), (package, name)
            states = state.findall(source)
            flat = [k for k in loaded if isinstance(k, tuple)]
            flat += [t for v in loaded.values() if isinstance(v, tuple) for t in v]
            assert sorted(states) == sorted(flat), (package, name)
            assert numbers or states, (package, name)


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
