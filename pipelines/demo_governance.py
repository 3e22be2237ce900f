"""Demo stage "governance": keys, agreements, the consent ledger and the audit chain.

Runs after ingestion. It records authorizations (信息主体授权) for a sample of the demo
population so the verification product has consents to check: most valid, some expired,
a few revoked, all for the purpose ``identity-verification``.
"""

from __future__ import annotations

import datetime as dt
import time

import polars as pl
from rich.console import Console

from catalogs.catalog import Catalog
from governance import audit, roles
from governance.agreements import load_agreements, load_blacklist, validate_against_catalog
from governance.authorization import AuthorizationRequest, authorize
from governance.consent import ConsentLedger
from shuyu_core import snapshots
from shuyu_core.errors import ValidationError
from shuyu_core.home import Home
from shuyu_core.keys import ENCRYPTION, PSEUDONYM, init_key

CONSENT_PURPOSE = "identity-verification"
CONSENT_SHARE = 0.8  # share of the population with an authorization on record
EXPIRED_SHARE = 0.025  # of those, share whose authorization has already expired
REVOKED = 20  # authorizations revoked one by one, as a data subject would
SEED = 20250101


def stage(home: Home, console: Console) -> dict[str, object]:
    t0 = time.perf_counter()
    roles.require(home, "demo", "governance stage")
    created = {name: init_key(home, name)[1] for name in (PSEUDONYM, ENCRYPTION)}
    audit.record(home, "keys.init", "keys", "ok", {"created": created})

    catalog = Catalog.load()
    agreements = load_agreements()
    blacklist = load_blacklist()
    problems = validate_against_catalog(agreements, catalog)
    if problems:
        raise ValidationError(
            f"{len(problems)} agreement problem(s): " + "; ".join(problems),
            hint="align catalogs/agreements with the catalog",
        )
    audit.record(
        home,
        "agreements.validate",
        str(agreements.directory),
        "ok",
        {"agreements": len(agreements), "blacklisted": len(blacklist.entries)},
    )
    console.print(
        f"agreements: {len(agreements)} valid ({', '.join(a.id for a in agreements)}), "
        f"{len(blacklist.entries)} blacklisted developer(s)",
        highlight=False,
    )

    # Every scenario of every agreement is checked once today, so the log shows the gate.
    today = dt.date.today()
    authorized: dict[str, bool] = {}
    for ag in agreements:
        for sc in ag.scenarios:
            res = authorize(
                home,
                AuthorizationRequest(
                    agreement_id=ag.id,
                    scenario=sc.id,
                    developer=ag.developer,
                    inputs=sc.inputs,
                    purpose=(sc.purposes or ag.purposes)[0],
                    at=today,
                ),
                catalog,
            )
            authorized[f"{ag.id}/{sc.id}"] = res.ok

    ids = (
        snapshots.scan(home, "RKJBXX", columns=["公民身份号码"])
        .select(pl.col("公民身份号码").alias("subject_id"))
        .unique()
        .sort("subject_id")
        .collect()
    )
    sample = ids.sample(fraction=CONSENT_SHARE, seed=SEED, shuffle=True).with_row_index("n")
    n_expired = int(sample.height * EXPIRED_SHARE)
    consents = sample.with_columns(
        pl.lit(CONSENT_PURPOSE).alias("purpose"),
        pl.lit(dt.date(2025, 1, 1)).alias("granted_at"),
        pl.when(pl.col("n") < n_expired)
        .then(pl.lit(dt.date(2025, 6, 30)))
        .otherwise(pl.lit(max(dt.date(2027, 12, 31), today + dt.timedelta(days=730))))
        .alias("expires_at"),
        pl.format("YK-AUTH-2025-{}", pl.col("n").cast(pl.String).str.zfill(7)).alias(
            "evidence_ref"
        ),
    ).drop("n")
    ledger = ConsentLedger(home)
    summary = ledger.import_frame(consents, source="demo: sample of RKJBXX (latest snapshot)")
    revoked = 0
    # On a rerun every grant is a duplicate and the withdrawals were already recorded.
    if summary["added"]:
        for sid in consents["subject_id"].slice(n_expired, REVOKED).to_list():
            revoked += ledger.revoke(
                subject_id=sid, purpose=CONSENT_PURPOSE, reason="demo: withdrawn by the subject"
            )
    del ids, sample, consents  # raw IDs leave memory; the ledger holds tokens only
    console.print(
        f"consent ledger: {summary['added']} authorizations imported for "
        f"{summary['subjects']} subjects ({n_expired} expired, {revoked} revoked), purpose "
        f"{CONSENT_PURPOSE}",
        highlight=False,
    )

    check = audit.verify(home)
    console.print(("[green]" if check.ok else "[red]") + check.one_line() + "[/]", highlight=False)
    if not check.ok:
        raise audit.AuditChainBroken(check.one_line(), hint="investigate before continuing")
    return {
        "keys_created": created,
        "agreements": [a.id for a in agreements],
        "scenarios_authorized": sum(authorized.values()),
        "scenarios_checked": len(authorized),
        "consents_imported": summary["added"],
        "consents_expired": n_expired,
        "consents_revoked": revoked,
        "consent_purpose": CONSENT_PURPOSE,
        "audit_entries": check.entries,
        "audit_head": f"{check.head_seq}:{check.head_hash}",
        "seconds": round(time.perf_counter() - t0, 2),
    }
