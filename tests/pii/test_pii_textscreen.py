"""Exhaustive identifier screening of text cells (privacy/pii/textscreen.py)."""

from __future__ import annotations

import polars as pl

from privacy.pii import validators as v
from privacy.pii.textscreen import (
    cells_with_identifiers,
    han_ngrams,
    identifier_hits,
    redact_valid_identifiers,
)


def _rid(body17: str) -> str:
    return body17 + v.resident_id_check_char_scalar(body17)


def _luhn(body: str) -> str:
    for d in "0123456789":
        if v.luhn_valid_scalar(body + d):
            return body + d
    raise AssertionError


RID = _rid("21080219900307451")
WRONG_RID = RID[:17] + ("0" if RID[17] != "0" else "1")
CARD = _luhn("622202123456789012")
WRONG_CARD = CARD[:-1] + str((int(CARD[-1]) + 1) % 10)


def _hits(values: list[str | None]) -> dict[int, str]:
    h = identifier_hits(pl.Series(values, dtype=pl.String))
    return dict(zip(h["r"].to_list(), h["entity"].to_list(), strict=True))


def test_valid_identifiers_are_found_in_any_cell_and_invalid_ones_are_not() -> None:
    cells = [
        f"证件{RID}已核",
        f"证件{WRONG_RID}",
        f"卡号{CARD}",
        f"卡号{WRONG_CARD}",
        "请致电13812345678",
        "Tel13812345678",
        "邮箱 zhang.san@example.com",
        "车辆辽H12345停放",
        "区划210802，金额123456",
        None,
    ]
    assert _hits(cells) == {
        0: "CN_RESIDENT_ID",
        2: "CN_BANK_CARD",
        4: "CN_MOBILE",
        5: "CN_MOBILE",
        6: "EMAIL",
        7: "CN_LICENSE_PLATE",
    }


def test_one_in_ten_thousand_cells_is_still_found() -> None:
    cells = ["复诊，无特殊"] * 9_999 + [f"联系13812345678，证件{RID}"]
    flags = cells_with_identifiers(pl.Series(cells))
    assert flags.sum() == 1 and flags[9_999]


def test_redaction_changes_only_cells_with_identifiers() -> None:
    frame = pl.DataFrame({"t": ["区划210802", f"证件{RID}已核", "请致电13812345678复查", None]})
    out = frame.lazy().select(redact_valid_identifiers(pl.col("t"))).collect()["t"].to_list()
    assert out == ["区划210802", "证件****已核", "请致电****复查", None]


def test_han_ngrams_cover_names_inside_sentences() -> None:
    grams = han_ngrams(pl.Series(["陪同家属王小明签字", "ok"]))
    assert {"王小明", "小明", "王小"} <= set(grams["g"].to_list())
    assert set(grams["r"].to_list()) == {0}


def test_han_ngrams_of_long_runs_match_every_substring_across_window_edges() -> None:
    """Long Han runs are cut into overlapping windows; no 2–4 gram may be lost at an edge."""
    import random
    import re

    from privacy.pii.textscreen import HAN_WINDOW

    rng = random.Random(7)
    alphabet = [chr(0x4E00 + i) for i in range(3000)]
    lengths = [2, 3, HAN_WINDOW - 4, HAN_WINDOW - 1, HAN_WINDOW, HAN_WINDOW + 1, 3 * HAN_WINDOW + 5]
    values = ["x" + "".join(rng.choice(alphabet) for _ in range(n)) + "1李四" for n in lengths]
    expected = set()
    for r, value in enumerate(values):
        for run in re.findall("[\u4e00-\u9fff]{2,}", value):
            for size in (2, 3, 4):
                expected |= {(r, run[o : o + size]) for o in range(len(run) - size + 1)}
    got = {tuple(row) for row in han_ngrams(pl.Series(values)).rows()}
    assert got == expected


def test_clean_memo_across_batches_still_redacts_every_identifier() -> None:
    """Streaming batches of a code column: values remembered clean are skipped, a cell with
    an identifier in a later batch (or again in one after) is still redacted."""
    from privacy.pii.textscreen import _CleanMemo

    memo = _CleanMemo()
    codes = ["210802", "210803", "210881", "汉族"]
    batches = [
        pl.Series("t", [codes[i % 4] for i in range(1_000)]),
        pl.Series("t", [*codes, f"证件{RID}", None]),
        pl.Series("t", [f"证件{RID}", "210802", "请致电13812345678复查"]),
    ]
    outs = [memo(b).to_list() for b in batches]
    assert outs[0] == batches[0].to_list()
    assert outs[1] == [*codes, "证件****", None]
    assert outs[2] == ["证件****", "210802", "请致电****复查"]
    assert set(memo.known.to_list()) == set(codes)  # only clean values are remembered
    assert memo.found >= 4  # the second and third batches found their codes known


def test_clean_memo_gives_up_on_free_text() -> None:
    from privacy.pii.textscreen import _CleanMemo

    memo = _CleanMemo()
    memo._PROBE = 500
    for b in range(3):
        memo(pl.Series("t", [f"备注{b}-{i}" for i in range(400)]))
    assert not memo.enabled and memo.known.len() == 0
    # without the memo the screening is unchanged
    assert memo(pl.Series("t", [f"电话13812345678 {RID}"])).to_list() == ["电话**** ****"]
