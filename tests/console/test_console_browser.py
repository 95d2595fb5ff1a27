"""The console in a real browser (Debian's Chromium through Playwright), over a real
embedded run: counts, a failed item, a confirmed retry, live counts, login, CSRF, escaping.

Screenshots of each page go to tests/console/artifacts/ (not committed)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import httpx
import pytest
from conftest import TOKEN, Served, login, shot

pytestmark = [pytest.mark.ffmpeg, pytest.mark.model]


def test_pages(serve: Callable[..., Served], page) -> None:  # type: ignore[no-untyped-def]
    """Batch list shows the finished run's counts; a click leads to the failed item with its
    code and message; the hostile file name is shown escaped and no dialog fires; Retry,
    after its confirmation page, changes the item's state in the ledger."""
    s = serve()
    login(page, s)
    row = page.locator("tr.batch-row")
    assert row.locator('[data-state="SUCCEEDED"] b').inner_text() == "2"
    assert row.locator('[data-state="FAILED"] b').inner_text() == "1"
    shot(page, "batches")
    row.locator("a").first.click()
    page.wait_for_selector("h1 code")
    shot(page, "batch")
    assert page.locator("table.failures").inner_text().count("not_media") == 1
    page.locator("table.items a", has_text="_img_src").click()
    page.wait_for_selector("#item-error")
    assert "not_media" in page.locator("#item-error").inner_text()
    assert "is not a media file" in page.locator("#item-error").inner_text()
    assert "<img src=x onerror=alert(1)>.wav" in page.locator("code.src").inner_text()
    assert page.locator("img").count() == 0 and page.dialogs == []
    shot(page, "item-failed")

    page.goto(page.url.split("/items/")[0] + "/")
    page.locator("tr.batch-row a").first.click()
    page.click("text=Retry failures")
    page.wait_for_selector("form.confirm")
    shot(page, "confirm")
    with sqlite3.connect(s.ledger_path) as db:
        assert (
            db.execute("SELECT state FROM items WHERE key LIKE '_img%'").fetchone()[0] == "FAILED"
        )  # nothing happens before the confirmation
    page.click("form.confirm button[type=submit]")
    page.wait_for_selector(".flash")
    assert "retried 1" in page.locator(".flash").inner_text()
    with sqlite3.connect(s.ledger_path) as db:
        assert (
            db.execute("SELECT state FROM items WHERE key LIKE '_img%'").fetchone()[0] == "PENDING"
        )
    page.locator("table.items a", has_text="_img_src").click()
    assert "retry" in page.locator("ol.timeline").inner_text()


def test_item_transcript_and_phone(serve: Callable[..., Served], browser) -> None:  # type: ignore[no-untyped-def]
    """A finished item shows its sentences with times and an audio player that seeks to a
    clicked sentence; the pages fit a phone's width."""
    s = serve()
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    pg = ctx.new_page()
    login(pg, s)
    shot(pg, "batches-phone")
    batch = httpx.get(f"{s.url}/api/batches", headers={"authorization": f"Bearer {TOKEN}"}).json()[
        "batches"
    ][0]
    pg.goto(f"{s.url}/items/{batch['batch_id']}/day2/meeting")
    assert "meeting" in pg.locator("ol.transcript").inner_text().lower()
    assert pg.locator("audio#player").count() == 1
    seeks = pg.locator("button.seek")
    assert seeks.count() >= 1
    seeks.last.click()
    start = float(seeks.last.get_attribute("data-start"))
    now = -1.0
    for _ in range(50):  # (no wait_for_function: the page's CSP forbids string eval)
        now = pg.evaluate("document.getElementById('player').currentTime")
        if abs(now - start) < 0.6:
            break
        pg.wait_for_timeout(100)
    assert abs(now - start) < 0.6
    width = pg.evaluate("document.documentElement.scrollWidth")
    assert width <= 400  # no sideways scrolling of the page itself
    shot(pg, "item-phone")
    ctx.close()


def test_live_counts(serve: Callable[..., Served], page) -> None:  # type: ignore[no-untyped-def]
    """Counts update over server-sent events without a reload: the ledger is changed under
    the open page (as a running batch would) and the page follows."""
    s = serve()
    login(page, s)
    page.evaluate("window.__marker = 'same page'")
    page.locator("tr.batch-row a").first.click()
    page.wait_for_selector("#counts")
    page.evaluate("window.__marker = 'same page'")
    with sqlite3.connect(s.ledger_path) as db:
        db.execute("UPDATE items SET state = 'TRANSCRIBING' WHERE key = 'hello'")
    page.wait_for_selector('#counts [data-state="TRANSCRIBING"]', timeout=10000)
    assert page.locator('#counts [data-state="SUCCEEDED"] .n').inner_text() == "1"
    with sqlite3.connect(s.ledger_path) as db:
        db.execute("UPDATE items SET state = 'SUCCEEDED' WHERE key = 'hello'")
    page.locator('#counts [data-state="TRANSCRIBING"]').wait_for(state="detached", timeout=10000)
    assert page.locator('#counts [data-state="SUCCEEDED"] .n').inner_text() == "2"
    assert page.evaluate("window.__marker") == "same page"  # never reloaded
    page.goto(s.url + "/")
    page.evaluate("window.__marker = 'list'")
    with sqlite3.connect(s.ledger_path) as db:
        db.execute("UPDATE items SET state = 'DEAD' WHERE key = 'hello'")
    page.wait_for_selector('tr.batch-row [data-state="DEAD"]', timeout=10000)
    assert page.evaluate("window.__marker") == "list"
    for name in ("dead", "schedules", "fleet"):  # (the fleet's own: test_console_distributed)
        page.goto(f"{s.url}/{name}")
        shot(page, f"{name}-embedded" if name != "dead" else name)
    assert "hello" in page.goto(f"{s.url}/dead").text()


def test_login_and_csrf(serve: Callable[..., Served], page) -> None:  # type: ignore[no-untyped-def]
    """Pages without a session show the login form (401); a wrong token is refused; the
    cookie is HttpOnly and SameSite=Strict; a POST without the page's CSRF token is 403;
    the read-only token sees pages but no actions."""
    s = serve()
    response = page.goto(s.url + "/batches/x")
    assert response.status == 401 and page.locator("input[name=token]").count() == 1
    shot(page, "login")
    page.fill("input[name=token]", "wrong")
    page.click("button[type=submit]")
    assert "wrong token" in page.locator(".error").inner_text()
    login(page, s)
    cookie = next(c for c in page.context.cookies() if c["name"] == "bulkscribe_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    batch = page.locator("tr.batch-row").get_attribute("data-batch")
    forged = page.request.post(f"{s.url}/do", form={"action": "retry", "batch": batch})
    assert forged.status == 403
    bad = page.request.post(
        f"{s.url}/do", form={"action": "retry", "batch": batch, "csrf": "0" * 64}
    )
    assert bad.status == 403
    with sqlite3.connect(s.ledger_path) as db:
        assert db.execute("SELECT count(*) FROM items WHERE state = 'PENDING'").fetchone()[0] == 0
    page.context.clear_cookies()
    login(page, s, token="viewer-token-for-tests")
    page.locator("tr.batch-row a").first.click()
    assert page.locator("text=Retry failures").count() == 0
    assert page.goto(f"{s.url}/confirm?action=retry&batch={batch}").status == 403
