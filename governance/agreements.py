"""Loading agreements and the developer blacklist, and checking them against the catalog.

``SHUYU_AGREEMENTS`` names another agreement directory and ``SHUYU_BLACKLIST`` another
blacklist file (tests point them at temporary copies with expired or suspended agreements).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from catalogs.agreement_models import Agreement, AgreementKind, Blacklist
from catalogs.catalog import Catalog
from catalogs.loading import load_model
from shuyu_core.errors import NotFoundError, ValidationError

PACKAGED_AGREEMENTS = Path(__file__).resolve().parent.parent / "catalogs" / "agreements"
PACKAGED_BLACKLIST = Path(__file__).resolve().parent.parent / "catalogs" / "blacklist.yaml"


def agreements_dir() -> Path:
    env = os.environ.get("SHUYU_AGREEMENTS")
    return Path(env) if env else PACKAGED_AGREEMENTS


def blacklist_path() -> Path:
    env = os.environ.get("SHUYU_BLACKLIST")
    return Path(env) if env else PACKAGED_BLACKLIST


@dataclass(frozen=True)
class AgreementSet:
    directory: Path
    agreements: dict[str, Agreement]

    def get(self, agreement_id: str) -> Agreement:
        try:
            return self.agreements[agreement_id]
        except KeyError:
            known = ", ".join(sorted(self.agreements)) or "none"
            raise NotFoundError(
                f"unknown agreement {agreement_id!r} in {self.directory}",
                hint=f"see 'shuyu agreements list' (known: {known})",
            ) from None

    def find(self, agreement_id: str) -> Agreement | None:
        return self.agreements.get(agreement_id)

    def __iter__(self) -> Iterator[Agreement]:
        return iter(self.agreements[k] for k in sorted(self.agreements))

    def __len__(self) -> int:
        return len(self.agreements)


def load_agreements(directory: Path | None = None) -> AgreementSet:
    """Every agreement file, validated one by one and then as a set (parents, duplicates)."""
    root = directory or agreements_dir()
    if not root.is_dir():
        raise NotFoundError(
            f"agreement directory {root} does not exist",
            hint="set SHUYU_AGREEMENTS to a directory of agreement YAML files",
        )
    found: dict[str, Agreement] = {}
    for path in sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml")):
        ag = load_model(Agreement, path)
        if ag.id in found:
            raise ValidationError(
                f"{path}: agreement id {ag.id} is declared twice", hint="give each its own id"
            )
        if path.stem != ag.id:
            raise ValidationError(
                f"{path}: file name must be the agreement id ({ag.id}.yaml)",
                hint=f"rename it to {ag.id}.yaml",
            )
        found[ag.id] = ag
    for ag in found.values():
        _check_parent(root, ag, found)
    return AgreementSet(root, found)


def _check_parent(root: Path, ag: Agreement, found: dict[str, Agreement]) -> None:
    """A development agreement can never reach beyond the operation agreement it rests on."""
    if ag.kind is not AgreementKind.DEVELOPMENT or ag.parent is None:
        return
    where = root / f"{ag.id}.yaml"
    parent = found.get(ag.parent)
    if parent is None or parent.kind is not AgreementKind.OPERATION:
        raise ValidationError(
            f"{where}: parent {ag.parent!r} is not an operation agreement in {root}",
            hint="name the operation agreement this development agreement rests on",
        )
    problems: list[str] = []
    if ag.term.start < parent.term.start or ag.term.end > parent.term.end:
        problems.append(
            f"term {ag.term.start}..{ag.term.end} lies outside the parent's "
            f"{parent.term.start}..{parent.term.end}"
        )
    for code, fields in ag.resources.items():
        extra = [f for f in fields if f not in parent.resources.get(code, [])]
        if extra:
            problems.append(f"{code} field(s) {', '.join(extra)} are outside the parent's scope")
    for label, mine, theirs in (
        ("purpose", ag.purposes, parent.purposes),
        ("destination", ag.destinations, parent.destinations),
    ):
        extra = [x for x in mine if x not in theirs]
        if extra:
            problems.append(f"{label}(s) {', '.join(extra)} are not allowed by the parent")
    if ag.reversible_outputs and not parent.reversible_outputs:
        problems.append("reversible outputs are not allowed by the parent")
    if problems:
        raise ValidationError(
            f"{where}: exceeds parent {parent.id}: " + "; ".join(problems),
            hint="narrow the development agreement to its parent's scope",
        )


def load_blacklist(path: Path | None = None) -> Blacklist:
    target = path or blacklist_path()
    if not target.exists():
        raise NotFoundError(
            f"blacklist file {target} does not exist",
            hint="set SHUYU_BLACKLIST to the blacklist YAML (an empty one is 'entries: []')",
        )
    return load_model(Blacklist, target)


def validate_against_catalog(agreements: AgreementSet, catalog: Catalog) -> list[str]:
    """Problems an agreement has with today's catalog: unknown resources or fields, and
    negative-listed resources (the negative list is reviewed yearly, so a signed agreement
    can come to cover one)."""
    problems: list[str] = []
    for ag in agreements:
        where = f"{agreements.directory / (ag.id + '.yaml')}"
        for code, fields in ag.resources.items():
            res = catalog.resources.get(code)
            if res is None:
                problems.append(f"{where}: resources.{code}: not in the catalog")
                continue
            unknown = [f for f in fields if f not in res.field_names]
            if unknown:
                problems.append(
                    f"{where}: resources.{code}: field(s) {', '.join(unknown)} not in the catalog"
                )
            if res.negative_list.listed:
                problems.append(
                    f"{where}: resources.{code}: negative-listed (负面清单: "
                    f"{res.negative_list.reason})"
                )
    return problems
