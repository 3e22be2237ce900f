"""The consent ledger: tokens, import, revoke, vectorized checks and refusals."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from governance import audit
from governance.consent import ConsentLedger, decide, subject_token, subject_tokens
from shuyu_core.errors import NotFoundError, PermissionDenied, ValidationError
from shuyu_core.home import Home
from shuyu_core.keys import PSEUDONYM, init_key, load_key

IDS = ["110101199003071234", "21080219851201002X", "210803200002290011", "210804197707070077"]
AT = dt.datetime(2026, 1, 15, 12, 0)


@pytest.fixture()
def ledger(home: Home) -> ConsentLedger:
    init_key(home, PSEUDONYM)
    return ConsentLedger(home)


def _csv(path: Path, rows: list[tuple[str, ...]]) -> Path:
    lines = ["subject_id,purpose,granted_at,expires_at,evidence_ref"]
    lines += [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_tokens_are_keyed_normalized_and_vectorized() -> None:
    k1, k2 = b"\x01" * 32, b"\x02" * 32
    assert subject_token(k1, IDS[1]) == subject_token(k1, " 21080219851201002x ")
    assert subject_token(k1, IDS[0]) != subject_token(k2, IDS[0])
    assert len(subject_token(k1, IDS[0])) == 64
    series = pl.Series("id", [IDS[0], IDS[1], None, IDS[0], "", IDS[1].lower()])
    tokens = subject_tokens(k1, series)
    expected = [subject_token(k1, v) if v else None for v in series.to_list()]
    assert tokens.to_list() == expected
    assert tokens.name == "id"


def test_import_stores_tokens_only(home: Home, ledger: ConsentLedger, tmp_path: Path) -> None:
    path = _csv(
        tmp_path / "consents.csv",
        [
            (IDS[0], "identity-verification", "2025-01-01", "2026-12-31", "EV-1"),
            (IDS[1], "identity-verification", "2025-01-01T08:00:00+08:00", "2027-01-01", "EV-2"),
            (IDS[2], "credit-check", "2025-01-01", "2025-12-31", "EV-3"),
        ],
    )
    summary = ledger.import_file(path)
    assert (summary["added"], summary["subjects"], summary["duplicates"]) == (3, 3, 0)
    listed = ledger.list()
    key = load_key(home, PSEUDONYM)
    assert sorted(listed["subject_token"].to_list()) == sorted(
        subject_token(key, i) for i in IDS[:3]
    )
    # The timezone-aware grant time is stored in UTC; date-only expiry holds all that day.
    row = listed.filter(pl.col("evidence_ref") == "EV-2").row(0, named=True)
    assert row["granted_at"] == dt.datetime(2025, 1, 1, 0, 0)
    assert row["expires_at"] == dt.datetime(2027, 1, 2)
    # No raw ID anywhere in the state database (ledger and audit log alike).
    raw = b"".join(p.read_bytes() for p in home.root.glob("state.db*"))
    for sid in IDS[:3]:
        assert sid.encode() not in raw
    entry = audit.tail(home, 1)[0]
    assert (entry["action"], entry["outcome"]) == ("consent.import", "ok")
    assert entry["details"]["added"] == 3 and "consents.csv" in entry["object"]
    again = ledger.import_file(path)
    assert (again["added"], again["duplicates"]) == (0, 3)
    assert ledger.list().height == 3


def test_import_parquet_with_typed_dates_and_fixed_purpose(
    ledger: ConsentLedger, tmp_path: Path
) -> None:
    frame = pl.DataFrame(
        {
            "身份证号": IDS,
            "granted_at": [dt.date(2025, 1, 1)] * 4,
            "expires_at": [dt.date(2026, 6, 30)] * 4,
            "evidence_ref": [f"EV-{i}" for i in range(4)],
        }
    )
    path = tmp_path / "c.parquet"
    frame.write_parquet(path)
    summary = ledger.import_file(path, id_column="身份证号", purpose="identity-verification")
    assert summary["added"] == 4 and summary["purposes"] == {"identity-verification": 4}
    assert ledger.list()["expires_at"].unique().to_list() == [dt.datetime(2026, 7, 1)]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([(IDS[0], "p", "2025-01-01", "2024-01-01", "EV")], "expires_at not after granted_at"),
        ([(IDS[0], "p", "01/02/2025", "2026-01-01", "EV")], "column granted_at: 1 value"),
        ([("", "p", "2025-01-01", "2026-01-01", "EV")], "empty subject_id"),
        ([(IDS[0], "p", "2025-01-01", "2026-01-01", "")], "empty evidence_ref"),
    ],
)
def test_import_errors_name_the_problem(
    ledger: ConsentLedger, tmp_path: Path, rows: list[tuple[str, ...]], message: str
) -> None:
    path = _csv(tmp_path / "bad.csv", [(IDS[1], "p", "2025-01-01", "2026-01-01", "OK"), *rows])
    with pytest.raises(ValidationError, match=message) as info:
        ledger.import_file(path)
    assert "bad.csv" in info.value.message and "data row 2" in info.value.message
    assert ledger.list().height == 0  # nothing half-imported


def test_import_missing_columns(ledger: ConsentLedger, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("subject_id,purpose\n1,p\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"missing column.*granted_at, expires_at"):
        ledger.import_file(path)


def _seed(ledger: ConsentLedger) -> dict[str, str]:
    tok = {sid: ledger.token(sid) for sid in IDS}
    ledger.grant(
        token=tok[IDS[0]],
        purpose="verify",
        evidence_ref="A",
        granted_at=dt.date(2025, 1, 1),
        expires_at=dt.date(2026, 12, 31),
    )
    ledger.grant(
        token=tok[IDS[1]],
        purpose="verify",
        evidence_ref="B",
        granted_at=dt.date(2024, 1, 1),
        expires_at=dt.date(2025, 12, 31),
    )
    cid = ledger.grant(
        subject_id=IDS[2],
        purpose="verify",
        evidence_ref="C",
        granted_at=dt.date(2025, 1, 1),
        expires_at=dt.date(2027, 1, 1),
    )
    ledger.revoke(consent_id=cid, reason="subject withdrew")
    ledger.grant(
        token=tok[IDS[3]],
        purpose="marketing",
        evidence_ref="D",
        granted_at=dt.date(2025, 1, 1),
        expires_at=dt.date(2027, 1, 1),
    )
    return tok


def test_check_reasons(ledger: ConsentLedger) -> None:
    tok = _seed(ledger)
    assert ledger.check(tok[IDS[0]], "verify", AT).reason == "ok"
    assert ledger.check(tok[IDS[0]], "verify", AT).ok
    assert ledger.check(tok[IDS[1]], "verify", AT).reason == "expired"
    assert ledger.check(tok[IDS[1]], "verify", dt.date(2025, 12, 31)).reason == "ok"
    assert ledger.check(tok[IDS[2]], "verify", AT).reason == "revoked"
    assert ledger.check(tok[IDS[3]], "verify", AT).reason == "wrong_purpose"
    assert ledger.check("0" * 64, "verify", AT).reason == "missing"
    assert ledger.check(tok[IDS[0]], "verify", dt.date(2024, 6, 1)).reason == "not_yet_valid"
    # A renewed grant beside an expired one makes the subject valid again.
    ledger.grant(
        token=tok[IDS[1]],
        purpose="verify",
        evidence_ref="B2",
        granted_at=dt.date(2026, 1, 1),
        expires_at=dt.date(2026, 12, 31),
    )
    assert ledger.check(tok[IDS[1]], "verify", AT).ok


def test_check_many_matches_single_checks_in_order(ledger: ConsentLedger) -> None:
    tok = _seed(ledger)
    pairs = [(tok[sid], p) for sid in IDS for p in ("verify", "marketing")]
    tokens = [t for t, _ in pairs] + ["f" * 64, None, tok[IDS[1]]] + [t for t, _ in pairs[:3]]
    purposes = [p for _, p in pairs] + ["verify", "verify", "verify"] + [p for _, p in pairs[:3]]
    queries = pl.DataFrame({"token": tokens, "purpose": purposes, "query_id": list(range(14))})
    out = ledger.check_many(queries, AT)
    assert out["query_id"].to_list() == list(range(14))
    assert out.columns == ["token", "purpose", "query_id", "consent_id", "reason", "ok"]
    singles = [
        ledger.check(t, p, AT).reason if t is not None else "missing"
        for t, p in zip(tokens, purposes, strict=True)
    ]
    assert out["reason"].to_list() == singles
    assert out["ok"].to_list() == [r == "ok" for r in singles]
    assert set(singles) >= {"ok", "expired", "revoked", "wrong_purpose", "missing"}


def test_decide_picks_valid_record_over_revoked_and_expired() -> None:
    t = dt.datetime
    ledger_rows = pl.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "subject_token": ["a", "a", "a", "b"],
            "purpose": ["p", "p", "p", "p"],
            "granted_at": [t(2024, 1, 1), t(2025, 1, 1), t(2025, 6, 1), t(2024, 1, 1)],
            "expires_at": [t(2025, 1, 1), t(2027, 1, 1), t(2027, 1, 1), t(2025, 1, 1)],
            "revoked": [False, True, False, True],
        }
    )
    q = pl.DataFrame(
        {
            "token": ["a", "a", "b"],
            "purpose": ["p", "p", "p"],
            "at": [t(2026, 1, 1), t(2025, 3, 1), t(2026, 1, 1)],
        }
    )
    out = decide(q, ledger_rows)
    assert out["reason"].to_list() == ["ok", "revoked", "revoked"]
    assert out["consent_id"].to_list() == [3, 2, 4]


@pytest.mark.parametrize(
    ("subject", "purpose", "reason", "text"),
    [
        (4, "verify", "missing", "no authorization is recorded"),
        (1, "verify", "expired", "has expired"),
        (2, "verify", "revoked", "was revoked"),
        (3, "verify", "wrong_purpose", "only for other purposes"),
    ],
)
def test_require_refuses_with_message_and_audit(
    home: Home, ledger: ConsentLedger, subject: int, purpose: str, reason: str, text: str
) -> None:
    tok = _seed(ledger)
    token = tok[IDS[subject]] if subject < 4 else ledger.token("999999999999999999")
    with pytest.raises(PermissionDenied, match=f"consent refused \\({reason}\\)") as info:
        ledger.require(token, purpose, AT)
    assert text in info.value.message and info.value.audited
    entry = audit.tail(home, 1)[0]
    assert (entry["action"], entry["outcome"]) == ("consent.check", "refused")
    assert entry["details"]["reason"] == reason
    assert token[:16] in entry["object"] and token not in str(entry)  # a prefix only
    assert ledger.require(tok[IDS[0]], "verify", AT).ok
    assert audit.tail(home, 1)[0]["outcome"] == "ok"


def test_check_many_writes_one_summary_entry(home: Home, ledger: ConsentLedger) -> None:
    tok = _seed(ledger)
    before = len(list(audit.entries(home)))
    queries = pl.DataFrame({"token": [tok[IDS[0]], tok[IDS[1]]], "purpose": ["verify"] * 2})
    ledger.check_many(queries, AT)
    assert len(list(audit.entries(home))) == before + 1
    entry = audit.tail(home, 1)[0]
    assert entry["outcome"] == "refused"
    assert entry["details"]["reasons"] == {"expired": 1, "ok": 1}


def test_revoke_by_subject_and_unknown(home: Home, ledger: ConsentLedger) -> None:
    tok = _seed(ledger)
    assert ledger.revoke(subject_id=IDS[0], purpose="verify") == 1
    assert ledger.check(tok[IDS[0]], "verify", AT).reason == "revoked"
    with pytest.raises(NotFoundError, match="no active consent"):
        ledger.revoke(subject_id=IDS[0])
    assert audit.tail(home, 1)[0]["outcome"] == "error"
    active = ledger.list(include_revoked=False)
    assert set(active["evidence_ref"].to_list()) == {"B", "D"}
