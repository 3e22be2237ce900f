"""A small domain for the portal tests: defective source data (so tickets open for two
units), one built and assessed release, and accounts with portal passwords."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from fastapi.testclient import TestClient

from governance import accounts
from governance.actors import Actor, set_current
from shuyu_core.home import Home

PASSWORD = "correct-horse-battery"
ADMIN = Actor("test-admin", "admin")
USERS: dict[str, list[str]] = {
    "yb-clerk": ["source_unit:SU-YB"],
    "scjg-clerk": ["source_unit:SU-SCJG"],
    "reviewer-li": ["reviewer"],
    "reviewer-wang": ["reviewer"],
    "ops-zhao": ["operator"],
    "admin-sun": ["admin"],
    "multi-role": ["operator", "admin"],
}
SI = "si_enrolment_report"


def add_users(home: Home) -> None:
    for name, roles in USERS.items():
        if accounts.get(home, name) is None:
            accounts.add(home, name, roles, ADMIN, password=PASSWORD, display_name=name)


def build_template(home: Home) -> dict[str, str]:
    """Clean person and social-insurance data (one release built on it and assessed), and
    defective enterprise and medical data whose checks open tickets for SU-SCJG and SU-YB."""
    from assessment import engine
    from pipelines.ingest import ingest_path
    from products.engine import build
    from quality.api import run_check
    from shuyu_core.keys import ENCRYPTION, PSEUDONYM, init_key
    from synthetic_data.generate import generate_frames_detailed

    set_current(Actor("test-operator", "operator"))
    init_key(home, PSEUDONYM)
    init_key(home, ENCRYPTION)
    clean = generate_frames_detailed(persons=1500, seed=7, defect_rate=0.0).frames
    dirty = generate_frames_detailed(persons=1500, seed=7, defect_rate=0.06).frames
    src = home.root / "sources"
    src.mkdir(parents=True, exist_ok=True)
    for code, frames in (("RKJBXX", clean), ("SBCBJF", clean), ("SCZTDJ", dirty), ("YBJS", dirty)):
        frames[code].write_parquet(src / f"{code}.parquet")
        ingest_path(home, code, src / f"{code}.parquet")
        run_check(home, code)
    rid = build(home, SI).manifest.release_id
    engine.assess(home, rid)
    add_users(home)
    set_current(None)
    return {SI: rid}


def copy_home(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def login(client: TestClient, name: str, password: str = PASSWORD, follow: bool = True) -> object:
    page = client.get("/login")
    return client.post(
        "/login",
        data={"username": name, "password": password, "csrf": csrf_of(page.text)},
        follow_redirects=follow,
    )


def post(client: TestClient, url: str, form_page: str, data: dict[str, str]) -> object:
    """POST ``data`` to ``url`` with the CSRF token read from ``form_page``."""
    token = csrf_of(client.get(form_page).text)
    return client.post(url, data={**data, "csrf": token}, follow_redirects=False)
