"""Pure parts of notifications: the retry schedule, answers to decisions, payloads, and
signatures checked with the standardwebhooks library."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from notify_support import OTHER_SECRET, SECRET
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from pipeline.notify import events
from pipeline.notify.policy import (
    Delivered,
    GiveUp,
    Gone,
    Retry,
    decide,
    next_wait,
    retry_after,
    total_span_s,
)
from pipeline.notify.signing import check_secret, signed_headers
from pipeline.settings import NOTIFY_RETRY_SCHEDULE_S, load_settings

AT = datetime(2026, 12, 6, 17, 0, tzinfo=UTC)


def test_default_schedule_is_the_standard_webhooks_one() -> None:
    """Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight tries, 27.6 h in all."""
    assert load_settings().notify.retry_schedule_s == NOTIFY_RETRY_SCHEDULE_S
    waits = [next_wait(n) for n in range(9)]
    assert waits == [0, 5, 300, 1800, 7200, 18000, 36000, 36000, None]
    assert total_span_s() == 99_305


@pytest.mark.parametrize(
    ("status", "tries", "after", "expected"),
    [
        (200, 1, None, Delivered()),
        (204, 8, None, Delivered()),
        (410, 1, None, Gone()),
        (503, 1, None, Retry(5)),
        (500, 2, None, Retry(300)),
        (404, 3, None, Retry(1800)),
        (429, 1, 120.0, Retry(120)),  # Retry-After lengthens the wait
        (429, 2, 1.0, Retry(300)),  # ... never shortens it
        (429, 1, 10**9, Retry(86400)),  # ... and a day at most
        (None, 1, None, Retry(5)),  # no answer (timeout, refused connection)
    ],
)
def test_decide(status: int | None, tries: int, after: float | None, expected: object) -> None:
    """Each kind of answer after a try, with the default schedule."""
    assert decide(status, None if status else "timed out", tries, retry_after_s=after) == expected


def test_give_up_when_the_schedule_runs_out() -> None:
    """The eighth failed try is the last; the reason names the answer."""
    assert decide(503, None, 8) == GiveUp("HTTP 503 after 8 tries")
    assert decide(None, "ConnectError: refused", 2, (0, 1)) == GiveUp(
        "ConnectError: refused after 2 tries"
    )


def test_retry_after_header() -> None:
    """Seconds or an HTTP date; anything else is ignored."""
    assert retry_after("30") == 30
    assert retry_after("Sun, 06 Dec 2026 17:02:00 GMT", now=AT) == 120
    assert retry_after("Sun, 06 Dec 2026 16:00:00 GMT", now=AT) == 0
    assert retry_after("soon") is None
    assert retry_after(None) is None


def test_batch_completed_envelope() -> None:
    """The Standard Webhooks envelope, ids and counts only, a console link when configured."""
    ev = events.batch_completed(
        batch_id="b-1",
        kind="submit",
        counts={"SUCCEEDED": 3, "FAILED": 1},
        audio_s=12.3456,
        results="s3://out/b-1/results.jsonl",
        at=AT,
        console_url="https://console.example/",
    )
    doc = json.loads(ev.body)
    assert doc == {
        "type": "batch.completed",
        "timestamp": "2026-12-06T17:00:00Z",
        "data": {
            "batch_id": "b-1",
            "kind": "submit",
            "total": 4,
            "counts": {"FAILED": 1, "SUCCEEDED": 3},
            "audio_s": 12.346,
            "cost": None,
            "currency": None,
            "results": "s3://out/b-1/results.jsonl",
            "console": "https://console.example/batches/b-1",
        },
    }


def test_items_dead_is_one_event_per_500_ids() -> None:
    """A sweep that finds 1,200 dead items of one batch writes three events, not 1,200."""
    evs = events.items_dead(batch_id="b", ids=[f"i{n}" for n in range(1200)], at=AT)
    counts = [json.loads(e.body)["data"]["count"] for e in evs]
    assert counts == [500, 500, 200]
    assert json.loads(evs[2].body)["data"]["ids"][-1] == "i1199"
    assert all(len(e.body) < 8000 for e in evs)


def test_signature_verifies_with_standardwebhooks() -> None:
    """Our headers pass the library's verification; tampering or another secret fail it."""
    body = events.batch_completed(
        batch_id="b", kind="run", counts={"SUCCEEDED": 1}, audio_s=1, results=None, at=AT
    ).body
    now = datetime.now(UTC)
    headers = signed_headers(SECRET, "msg_1", now, body)
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert Webhook(SECRET).verify(body, headers)["data"]["batch_id"] == "b"
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b'"b"', b'"c"'), headers)
    with pytest.raises(WebhookVerificationError):  # replayed an hour later
        Webhook(SECRET).verify(
            body, signed_headers(SECRET, "msg_1", now - timedelta(hours=1), body)
        )


@pytest.mark.parametrize("bad", ["secret", "whsec_", "whsec_c2hvcnQ="])
def test_unusable_secrets_are_refused(bad: str) -> None:
    """A secret without the whsec_ prefix, or too short to be one, is a settings error."""
    with pytest.raises(ValueError, match="BULKSCRIBE_NOTIFY_SECRET"):
        check_secret(bad)
    assert check_secret(SECRET) == SECRET


def test_notify_settings_are_checked(
    notify_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Endpoints from the environment and schedules must be http(s) URLs; the secret must
    be a whsec_ secret; nothing leaks the secret when settings are printed."""
    from pydantic import ValidationError

    from pipeline.settings import ScheduleSettings

    monkeypatch.setenv("BULKSCRIBE_NOTIFY__URLS", '["https://a.example/h"]')
    s = load_settings()
    assert s.notify.urls == ("https://a.example/h",)
    assert SECRET not in repr(s)
    monkeypatch.setenv("BULKSCRIBE_NOTIFY__URLS", '["file:///etc/passwd"]')
    with pytest.raises(ValidationError, match="http"):
        load_settings()
    monkeypatch.delenv("BULKSCRIBE_NOTIFY__URLS")
    monkeypatch.setenv("BULKSCRIBE_NOTIFY_SECRET", "hunter2")
    with pytest.raises(ValidationError, match="whsec_"):
        load_settings()
    with pytest.raises(ValidationError, match="http"):
        ScheduleSettings(name="n", source="s3://b/p/", out="s3://b/o", notify_urls=("gopher://x",))
