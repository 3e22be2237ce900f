"""Agreement parties at assessment: a developer party to no agreement fails legality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from assessment_testkit import agreements_copy

from assessment.engine import assess
from governance import audit
from shuyu_core.home import Home

SI = "si_enrolment_report"


def test_developer_party_to_no_agreement_fails_the_legality_check(
    demo: tuple[Home, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, releases = demo

    # The development agreement now names another developer: dev-001, who built the
    # release, is party to no agreement at all (the operation agreement authorizes only
    # the operator).
    def reassign(docs: dict[str, dict[str, Any]]) -> None:
        da = docs["DA-2025-001"]
        da["developer"] = "dev-002"
        da["parties"]["grantee"]["id"] = "dev-002"

    monkeypatch.setenv("SHUYU_AGREEMENTS", str(agreements_copy(tmp_path / "ag", reassign)))
    a = assess(home, releases[SI])
    check = a.check("agreement_in_force")
    assert check.status == "fail" and a.verdict == "fail"
    assert "developer_mismatch" in check.evidence
    assert "party to no agreement at all" in check.evidence
    refused = [
        e
        for e in audit.entries(home)
        if e["action"] == "authorization.check" and e["outcome"] == "refused"
    ]
    assert refused and refused[-1]["details"]["developer"] == "dev-001"
    assert [f["code"] for f in refused[-1]["details"]["failures"]] == ["developer_mismatch"]
