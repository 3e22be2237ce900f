"""The permission table: which role may do which action, and on whose objects.

Scoped roles act only on their own objects: ``source_unit:<code>`` on the quality feedback
and tickets of its own resources (pass the resource's source-unit code as ``resource_unit``),
``developer:<id>`` on builds and releases under its own agreements (pass the product's
developer id as ``developer``). A scoped call without that owner is refused: ownership must
be shown, never assumed.

Call sites use the action names below; an unknown name is a programming error (ValueError),
so a typo fails in tests instead of silently refusing or allowing.
"""

from __future__ import annotations

from dataclasses import dataclass

from governance.actors import Actor, current_actor
from shuyu_core.errors import PermissionDenied
from shuyu_core.home import Home


@dataclass(frozen=True)
class Permission:
    action: str
    description: str
    roles: frozenset[str]
    # True for actions on shared, non-confidential objects (the resource directory): scoped
    # roles may do them without showing ownership.
    any_owner: bool = False


def _p(action: str, description: str, *roles: str, any_owner: bool = False) -> Permission:
    return Permission(action, description, frozenset(roles), any_owner)


OPERATOR, REVIEWER, SOURCE_UNIT, DEVELOPER = "operator", "reviewer", "source_unit", "developer"
ADMIN = "admin"  # 安全管理员
SCOPED = frozenset({SOURCE_UNIT, DEVELOPER})

PERMISSIONS: dict[str, Permission] = {
    p.action: p
    for p in [
        # data handling inside the domain: operators only
        _p("ingest", "ingest a source file as a snapshot (数据汇聚)", OPERATOR),
        _p("scan", "scan data for personal information", OPERATOR),
        _p("desensitize", "desensitize data (脱敏)", OPERATOR),
        _p("quality.check", "run quality checks, open and verify tickets", OPERATOR),
        _p("keys.init", "create pseudonymization and encryption keys", OPERATOR),
        _p("consent.import", "import data-subject authorizations (授权台账)", OPERATOR),
        _p("consent.revoke", "revoke a data-subject authorization", OPERATOR),
        _p("consent.read", "list data-subject authorizations (tokens only)", OPERATOR),
        _p("budget.set", "set a privacy budget (隐私预算)", OPERATOR),
        _p("budget.read", "show privacy budgets and charges", OPERATOR, REVIEWER),
        _p(
            "ledger.resolve",
            "resolve a ledger break: restore the audited ledger (隐私预算台账)",
            ADMIN,
        ),
        # products: operators build anything; developers build under their own agreements
        _p("build", "build a data product release", OPERATOR, DEVELOPER),
        _p("verify.query", "run verification queries (数据核验)", OPERATOR, DEVELOPER),
        _p("release.read", "read a release and its outputs", OPERATOR, REVIEWER, DEVELOPER),
        _p("assessment.run", "run the pre-release assessment (发布前评估)", OPERATOR),
        _p("assessment.read", "read assessment reports", OPERATOR, REVIEWER),
        _p("publish", "publish an approved release (发布)", OPERATOR),
        # review (实施机构 / 数据管理部门)
        _p("review.approve", "approve a release (通过)", REVIEWER),
        _p("review.reject", "reject a release (未通过)", REVIEWER),
        _p("review.rectify", "order rectification within 30 days (限期整改)", REVIEWER),
        # quality feedback loop: a source unit sees and answers only its own
        _p(
            "quality.report.read",
            "read quality reports (质量反馈)",
            OPERATOR,
            REVIEWER,
            SOURCE_UNIT,
        ),
        _p("ticket.read", "read correction tickets (数据校核)", OPERATOR, REVIEWER, SOURCE_UNIT),
        _p("ticket.ack", "acknowledge a correction ticket", SOURCE_UNIT),
        _p("ticket.answer", "answer a correction ticket", SOURCE_UNIT),
        # governance records
        _p("agreements.read", "list, show and check agreements", OPERATOR, REVIEWER),
        _p("blacklist.read", "list the developer blacklist", OPERATOR, REVIEWER),
        _p("audit.read", "tail and verify the audit log", OPERATOR, REVIEWER),
        _p("audit.export", "export the audit log", OPERATOR, REVIEWER),
        _p("audit.purge", "purge audit entries older than five years", OPERATOR),
        _p("recover", "check and repair what interrupted runs left (shuyu doctor)", OPERATOR),
        _p(
            "catalog.read",
            "read the resource directory",
            OPERATOR,
            REVIEWER,
            SOURCE_UNIT,
            DEVELOPER,
        ),
        _p("demo", "run the end-to-end demo", OPERATOR),
        # identity and the domain policy (安全管理员)
        _p("accounts.manage", "add accounts, grant and revoke roles, set passwords", ADMIN),
        _p("accounts.read", "list accounts and their roles", ADMIN, OPERATOR, REVIEWER),
        _p("tokens.manage", "issue, list and revoke API tokens (接口令牌)", ADMIN),
        _p("policy.apply", "change the domain privacy policy (域内隐私策略)", ADMIN),
        _p("policy.read", "show the domain privacy policy", ADMIN, OPERATOR, REVIEWER),
        # operations (运维)
        _p("ops.check", "check the domain's health (shuyu ops check)", OPERATOR, ADMIN),
        _p("ops.stack", "start and stop the one-machine Prefect stack", OPERATOR, ADMIN),
        _p("notify.run", "queue and send notifications (通知)", OPERATOR, ADMIN),
    ]
}


def permission(action: str) -> Permission:
    try:
        return PERMISSIONS[action]
    except KeyError:
        raise ValueError(
            f"unknown action {action!r}; known: {', '.join(sorted(PERMISSIONS))}"
        ) from None


def check(
    actor: Actor, action: str, resource_unit: str | None = None, developer: str | None = None
) -> str | None:
    """The reason ``actor`` may not do ``action``, or None when allowed."""
    perm = permission(action)
    if actor.kind not in perm.roles:
        return f"role {actor.role} may not {action} (allowed: {', '.join(sorted(perm.roles))})"
    if perm.any_owner:
        return None
    if actor.kind == SOURCE_UNIT:
        if resource_unit is None:
            return f"role {actor.role} may {action} only on its own unit's data; no unit given"
        if resource_unit != actor.scope:
            return f"role {actor.role} may not {action} data of source unit {resource_unit}"
    if actor.kind == DEVELOPER:
        if developer is None:
            return f"role {actor.role} may {action} only under its own agreements; no owner given"
        if developer != actor.scope:
            return f"role {actor.role} may not {action} for developer {developer}"
    return None


def _reads_only(action: str) -> bool:
    """Actions that change nothing (and the audit commands needed to investigate a break)."""
    return action.endswith(".read") or action.startswith("audit.") or action == "recover"


def require(
    home: Home,
    action: str,
    obj: str,
    resource_unit: str | None = None,
    *,
    developer: str | None = None,
    actor: Actor | None = None,
) -> Actor:
    """The current actor if it may do ``action`` on ``obj``; else an audited refusal.

    ``resource_unit``: the source-unit code owning ``obj`` (for ``source_unit:<code>``);
    ``developer``: the developer id owning ``obj`` (for ``developer:<id>``).
    """
    who = actor or current_actor()
    reason = check(who, action, resource_unit, developer) or _account_reason(home, who)
    if reason is None:
        if not _reads_only(action):
            # A permitted change must not happen and then fail on its audit entry: a head
            # that disagrees with the log stops it here, before anything is done (exit 8).
            from governance.audit import head_check

            head_check(home)
        return who
    from governance.audit import record

    exc = PermissionDenied(
        f"{who.name} refused: {reason} (object {obj})",
        hint="act with an account whose granted role allows it (--role selects one of your "
        "roles; an admin grants roles with 'shuyu users grant'); see docs/governance.md",
    )
    record(
        home,
        action,
        obj,
        "refused",
        {"reason": reason, "resource_unit": resource_unit, "developer": developer},
        actor=who,
    )
    exc.audited = True
    raise exc


def _account_reason(home: Home, who: Actor) -> str | None:
    """Why ``who`` is not backed by an active account holding its role, or None.

    The actor in the context was resolved from the accounts, or set by trusted in-process code;
    a gate re-derives it anyway, so an account disabled or a role revoked since takes effect.
    """
    from governance.accounts import get

    acc = get(home, who.name)
    if acc is None:
        return f"{who.name} has no account in this domain"
    if not acc.active:
        return f"account {who.name} is disabled"
    if not acc.holds(who.role):
        return f"account {who.name} does not hold role {who.role}"
    return None


def table_markdown() -> str:
    """The permission table as Markdown (docs/governance.md embeds it)."""
    cols = [OPERATOR, REVIEWER, SOURCE_UNIT, DEVELOPER, ADMIN]
    lines = [
        "| action | what | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for p in PERMISSIONS.values():
        marks = [
            ("own" if c in SCOPED and not p.any_owner else "yes") if c in p.roles else "—"
            for c in cols
        ]
        lines.append(f"| `{p.action}` | {p.description} | " + " | ".join(marks) + " |")
    return "\n".join(lines)
