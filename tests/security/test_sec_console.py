"""The console against hostile ledger contents and hostile requests, in process.

File names, item ids and provider messages are attacker-controlled; the console must show
them escaped, never run them, and never show a credential (the DashScope key, a presigned
signature, the password in a source URL). Requests: forged sessions, missing CSRF tokens,
open redirects after login, read-only sessions trying actions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pipeline.console import auth
from pipeline.console.app import Console, create_app
from pipeline.ledger import Failure, ItemSeed, Ledger, open_ledger, sqlite_url
from pipeline.settings import Settings
from pipeline.states import ItemState

TOKEN = "op-token"
API_KEY = "sk-supersecretdashscopekey123"
EVIL = "<script>alert(1)</script>"
SOURCE = (
    "s3://AKIAEXAMPLE:hunter2pass@bucket/<img src=x onerror=alert(1)>.wav"
    "?X-Amz-Signature=deadbeefsignature"
)
MESSAGE = (
    f"{EVIL} provider said no; fetch https://oss.example/x.wav?Signature=topsecretsig "
    f"with key {API_KEY}"
)


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[TestClient, Ledger]]:
    ledger = open_ledger(sqlite_url(tmp_path / "ledger.db"))
    ledger.ensure_batch("b1", kind="submit", out=str(tmp_path), engine="dashscope", model="fun-asr")
    ledger.sync_items(
        "b1",
        [ItemSeed(f"dir/{EVIL}", 1, SOURCE, {"source": SOURCE}, "f")],
        engine="dashscope",
        model="fun-asr",
    )
    row = ledger.list_items("b1")[0]
    ledger.fail(
        row.id, ItemState.PENDING, Failure("provider_failed", MESSAGE, False, {"message": MESSAGE})
    )
    settings = Settings(dashscope_api_key=API_KEY)  # type: ignore[call-arg]
    console = Console(ledger=ledger, settings=settings, access=auth.Access.build(TOKEN, "view"))
    with TestClient(create_app(console), base_url="http://127.0.0.1") as client:
        yield client, ledger


def _login(client: TestClient, token: str = TOKEN) -> None:
    r = client.post("/login", data={"token": token, "next": "/"}, follow_redirects=False)
    assert r.status_code == 303


def _pages(client: TestClient) -> dict[str, str]:
    item = "/items/b1/dir/" + EVIL.replace("<", "%3C").replace(">", "%3E")
    out = {}
    for url in (
        "/",
        "/batches/b1",
        "/batches/b1?state=FAILED",
        item,
        "/dead",
        "/confirm?action=retry&batch=b1",
        "/fragments/batches",
    ):
        r = client.get(url)
        assert r.status_code == 200, url
        out[url] = r.text
    return out


def test_pages_escape_and_hide_secrets(hostile: tuple[TestClient, Ledger]) -> None:
    """Every page shows the hostile id, file name and message escaped; no inline script, no
    credential; the CSP forbids inline scripts and framing."""
    client, _ = hostile
    _login(client)
    for url, html in _pages(client).items():
        assert EVIL not in html and "<img src=x" not in html, url
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), url  # only src= scripts
        for secret in (API_KEY, "hunter2pass", "deadbeefsignature", "topsecretsig"):
            assert secret not in html, (url, secret)
    item_html = _pages(client)["/batches/b1"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in item_html
    r = client.get("/")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and r.headers["x-frame-options"] == "DENY"


def test_api_hides_secrets(hostile: tuple[TestClient, Ledger]) -> None:
    client, _ = hostile
    headers = {"authorization": f"Bearer {TOKEN}"}
    bodies = [
        client.get(u, headers=headers).text
        for u in (
            "/api/batches",
            "/api/batches/b1",
            "/api/batches/b1/items",
            "/api/items/b1/dir/" + EVIL,
        )
    ]
    for body in bodies:
        for secret in (API_KEY, "hunter2pass", "deadbeefsignature", "topsecretsig"):
            assert secret not in body, secret
    assert "provider_failed" in bodies[2]


def test_forged_requests(hostile: tuple[TestClient, Ledger]) -> None:
    """A tampered cookie is no session; a POST without the page's CSRF token or from a
    read-only session changes nothing; login never redirects off the site."""
    client, ledger = hostile
    client.cookies.set(auth.SESSION_COOKIE, "operator.99999999999.00.bad")
    assert client.get("/").status_code == 401
    client.cookies.clear()
    r = client.post(
        "/login", data={"token": TOKEN, "next": "//evil.example/x"}, follow_redirects=False
    )
    assert r.headers["location"] == "/"
    assert "httponly" in r.headers["set-cookie"].lower()
    assert "samesite=strict" in r.headers["set-cookie"].lower()
    assert client.post("/do", data={"action": "retry", "batch": "b1"}).status_code == 403
    client.cookies.clear()
    _login(client, "view")
    page = client.get("/batches/b1").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]*)"', page)
    assert csrf is None  # no action forms for viewers
    assert (
        client.post("/do", data={"action": "retry", "batch": "b1", "csrf": "x"}).status_code == 403
    )
    assert ledger.list_items("b1")[0].state is ItemState.FAILED
    assert (
        client.post("/api/batches/b1/retry", headers={"authorization": "Bearer view"}).status_code
        == 403
    )
    assert ledger.actions_of(batch_id="b1") == []
