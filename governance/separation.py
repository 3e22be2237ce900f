"""Separation of duties (四眼原则) for one release, judged from the audit chain.

Who built, assessed and published a release is read from the audit entries about it (evidence
recorded outside the release), never from its manifest. The approving reviewer must be none of
them and must hold no operator or developer grant; the publisher must not be the approver. The
domain policy may switch this off only with a reason, which every decision then records.
"""

from __future__ import annotations

from governance import accounts, domain_policy
from governance.actors import Actor
from governance.audit import entries_for
from shuyu_core.home import Home

# The audit actions whose actors are parties to a release, by what they did.
PARTY_ACTIONS = {
    "product.build": "built",
    # written in-process by the build itself, before the release is renamed into place (the
    # product.build entry may come later from the recovery sweep, naming the intent's actor)
    "release.sealed": "built",
    "assessment.run": "assessed",
    "publish": "published",
}


def relaxed_reason(home: Home) -> str | None:
    """The policy's recorded reason when four-eyes is switched off; None when it is on."""
    sod = domain_policy.effective(home).separation_of_duties
    return None if sod.enabled else (sod.reason or "")


def parties(home: Home, release_id: str) -> dict[str, set[str]]:
    """Account name → what it did to ``release_id`` (built, assessed, published)."""
    found: dict[str, set[str]] = {}
    for e in entries_for(home, release_id, tuple(PARTY_ACTIONS), "ok"):
        found.setdefault(e["actor"], set()).add(PARTY_ACTIONS[e["action"]])
    return found


def approval_conflicts(home: Home, release_id: str, reviewer: Actor) -> list[str]:
    """Why ``reviewer`` may not approve ``release_id`` (empty: allowed or four-eyes relaxed)."""
    if relaxed_reason(home) is not None:
        return []
    reasons: list[str] = []
    did = parties(home, release_id).get(reviewer.name, set())
    if did:
        reasons.append(f"{reviewer.name} {' and '.join(sorted(did))} this release")
    acc = accounts.get(home, reviewer.name)
    if acc is not None and acc.kinds() & {"operator", "developer"}:
        reasons.append(f"account {reviewer.name} holds an operator or developer role")
    return reasons


def publish_conflicts(home: Home, approver: str, publisher: Actor) -> list[str]:
    """Why ``publisher`` may not publish a release approved by ``approver``."""
    if relaxed_reason(home) is not None:
        return []
    if publisher.name == approver.split(" (", 1)[0]:
        return [f"{publisher.name} approved this release and may not also publish it"]
    return []
