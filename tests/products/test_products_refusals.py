"""Refusals come before charges; a developer builds only as the party its agreement authorizes."""

from __future__ import annotations

import pytest
from products_testkit import with_changes

from governance import audit
from privacy.dp import ledger
from products import engine, specs
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home

SI = "si_enrolment_report"


def _last(home: Home, action: str) -> dict[str, object]:
    return [e for e in audit.entries(home) if e["action"] == action][-1]


def test_developer_cannot_build_under_the_operation_agreement(data_home: Home) -> None:
    spec = with_changes(specs.get(SI), agreement_id="OA-2025-001", version="1.0.1")
    with pytest.raises(PermissionDenied, match="developer_mismatch") as info:
        engine.build(data_home, spec)
    assert info.value.exit_code == 5 and "party to DA-2025-001" in info.value.message
    check = _last(data_home, "authorization.check")
    assert check["outcome"] == "refused"
    assert ledger.all_entries(data_home) == []


def test_developer_party_to_no_agreement_is_refused_at_build(data_home: Home) -> None:
    for agreement in ("OA-2025-001", "DA-2025-001"):
        spec = with_changes(
            specs.get(SI), agreement_id=agreement, developer="dev-404", version="1.0.2"
        )
        with pytest.raises(PermissionDenied, match="party to no agreement at all"):
            engine.build(data_home, spec)
        assert _last(data_home, "authorization.check")["outcome"] == "refused"
    assert ledger.all_entries(data_home) == []
