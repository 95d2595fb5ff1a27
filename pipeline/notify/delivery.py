"""Sending outbox messages: signed POSTs through the download address policy.

Endpoints are URLs an operator typed, but a webhook is still a request this host makes on
someone's say-so, so it goes through :mod:`pipeline.inputs.netguard` like a download: the address
is checked where the socket is opened (private, loopback and reserved addresses refused
unless ``notify.allow_private``; link-local and metadata addresses always), redirects are
not followed, one try is bounded by a wall-clock :class:`~pipeline.inputs.netguard.Deadline`, and
no more than :data:`MAX_ANSWER_BYTES` of an answer is read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import httpx
from sqlalchemy import Engine

from pipeline.inputs.manifest import display
from pipeline.inputs.netguard import AddressPolicy, AddressRefused, Deadline, guarded_client
from pipeline.log import get_logger, redact_text
from pipeline.notify import outbox
from pipeline.notify.policy import Decision, GiveUp, Gone, Retry, decide, retry_after
from pipeline.notify.signing import signed_headers
from pipeline.settings import NotifySettings, Settings

log = get_logger("bulkscribe.notify")

MAX_ANSWER_BYTES = 4096  # of an endpoint's answer body; the rest is never read
CLAIM_MARGIN_S = 5.0  # a try's claim outlives its deadline (notify.timeout_s) by this much


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None  # None: no HTTP answer (error says why)
    error: str | None = None
    retry_after_s: float | None = None
    refused: bool = False  # the address policy refused the endpoint


class Sender(Protocol):
    def __call__(self, url: str, headers: dict[str, str], body: bytes) -> Answer: ...


@dataclass
class HttpSender:
    """One POST per call on a policy-checked client; never follows a redirect."""

    client: httpx.Client
    policy: AddressPolicy
    timeout_s: float

    def close(self) -> None:
        self.client.close()

    def __call__(self, url: str, headers: dict[str, str], body: bytes) -> Answer:
        try:
            self.policy.check_host(httpx.URL(url).host)
            with Deadline(self.timeout_s) as deadline:
                try:
                    return self._post(url, headers, body)
                except httpx.HTTPError as exc:
                    if deadline.expired or isinstance(exc, httpx.TimeoutException):
                        return Answer(
                            None, f"no answer within {self.timeout_s:g} s (notify.timeout_s)"
                        )
                    return Answer(None, f"{type(exc).__name__}: {redact_text(str(exc))}")
        except AddressRefused as exc:
            return Answer(None, exc.message, refused=True)
        except httpx.InvalidURL as exc:
            return Answer(None, f"not a valid URL ({exc})", refused=True)

    def _post(self, url: str, headers: dict[str, str], body: bytes) -> Answer:
        with self.client.stream(
            "POST", url, content=body, headers=headers, follow_redirects=False
        ) as resp:
            read = 0
            for chunk in resp.iter_raw(1024):  # raw: a compressed answer is not inflated
                read += len(chunk)
                if read >= MAX_ANSWER_BYTES:
                    break  # closing the stream drops the connection (no keep-alive)
            return Answer(
                resp.status_code,
                None if resp.is_success else _short(resp),
                retry_after(resp.headers.get("retry-after")),
            )


def _short(resp: httpx.Response) -> str:
    where = (
        f" (redirect to {display(resp.headers['location'])}, not followed)"
        if resp.is_redirect and "location" in resp.headers
        else ""
    )
    return f"HTTP {resp.status_code}{where}"


@dataclass(slots=True)
class DeliveryReport:
    states: dict[str, int] = field(default_factory=dict)

    def add(self, state: str | None) -> None:
        key = state or "lost_claim"
        self.states[key] = self.states.get(key, 0) + 1

    @property
    def tries(self) -> int:
        return sum(self.states.values())


@dataclass
class Deliverer:
    """Claims due messages, sends each once, records what came back."""

    engine: Engine
    send: Sender
    secret: str | None
    schedule: tuple[float, ...]
    hold_s: float
    clock: Callable[[], float] = time.monotonic

    def deliver_due(
        self, *, limit: int = 20, ids: list[str] | None = None, report: DeliveryReport | None = None
    ) -> DeliveryReport:
        report = report or DeliveryReport()
        msgs = outbox.claim_due(self.engine, hold_s=self.hold_s, limit=limit, ids=ids)
        disabled = outbox.disabled_urls(self.engine, {m.url for m in msgs}) if msgs else {}
        for msg in msgs:
            report.add(self._one(msg, msg.url in disabled))
        return report

    def drain(self, budget_s: float, *, limit: int = 50) -> DeliveryReport:
        """Deliver what is due now, pass after pass, for at most about ``budget_s``; tries
        falling due later are left to the next call (the sweeper queues one each sweep)."""
        report = DeliveryReport()
        end = self.clock() + budget_s
        while self.clock() < end:
            before = report.tries
            self.deliver_due(limit=limit, report=report)
            if report.tries == before:
                break
        return report

    def close(self) -> None:
        close = getattr(self.send, "close", None)
        if close is not None:
            close()

    def flush(self, budget_s: float, *, ids: list[str] | None = None) -> DeliveryReport:
        """Deliver until nothing is due within ``budget_s`` from now (tries falling due
        later wait in the outbox: the next run, the sweeper or ``notify replay``)."""
        report = DeliveryReport()
        end = self.clock() + budget_s
        while self.clock() < end:
            before = report.tries
            self.deliver_due(ids=ids, report=report)
            if report.tries > before:
                continue
            due = outbox.next_due(self.engine)
            if due is None:
                break
            wait = (due - datetime.now(UTC)).total_seconds()
            if self.clock() + max(wait, 0) >= end:
                break
            time.sleep(min(max(wait, 0.01), 1.0))
        return report

    def _one(self, msg: outbox.Message, disabled: bool) -> str | None:
        if disabled:
            return outbox.record(
                self.engine, msg, Gone(), status=None, error="endpoint disabled (410 Gone)"
            )
        if self.secret is None:
            answer = Answer(None, "BULKSCRIBE_NOTIFY_SECRET is not set: not sent")
        else:
            body = msg.body.encode("utf-8")
            headers = {
                "content-type": "application/json",
                "user-agent": "bulkscribe",
                **signed_headers(self.secret, msg.id, datetime.now(UTC), body),
            }
            answer = self.send(msg.url, headers, body)
        decision: Decision = (
            GiveUp(answer.error or "refused")
            if answer.refused
            else decide(answer.status, answer.error, msg.tries, self.schedule, answer.retry_after_s)
        )
        state = outbox.record(self.engine, msg, decision, status=answer.status, error=answer.error)
        log.info(
            "notify.try",
            msg_id=msg.id,
            event_type=msg.event_type,
            url=display(msg.url),
            tries=msg.tries,
            status=answer.status,
            error=answer.error,
            state=state,
            retry_in_s=decision.after_s if isinstance(decision, Retry) else None,
        )
        return state


def deliverer(settings: Settings, engine: Engine) -> Deliverer:
    """The deliverer ``run``, ``notify replay`` and the workers use, from the settings."""
    n: NotifySettings = settings.notify
    policy = AddressPolicy(allow_private=n.allow_private, setting="notify.allow_private")
    client = guarded_client(
        policy,
        connect_timeout_s=min(5.0, n.timeout_s),
        read_timeout_s=n.timeout_s,
        user_agent="bulkscribe",
    )
    secret = settings.notify_secret.get_secret_value() if settings.notify_secret else None
    return Deliverer(
        engine,
        HttpSender(client, policy, n.timeout_s),
        secret,
        n.retry_schedule_s,
        hold_s=n.timeout_s + CLAIM_MARGIN_S,
    )
