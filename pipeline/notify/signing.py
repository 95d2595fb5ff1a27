"""Standard Webhooks signatures: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``.

The signature is ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body`` under the secret's
decoded bytes; the ``standardwebhooks`` package computes it, so receivers that verify with
it (or any conforming library) agree byte for byte.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from standardwebhooks.webhooks import Webhook

PREFIX = "whsec_"


def check_secret(secret: str) -> str:
    """A usable secret: ``whsec_`` and at least 16 bytes of base64; ValueError otherwise."""
    if not secret.startswith(PREFIX):
        raise ValueError("BULKSCRIBE_NOTIFY_SECRET must start with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix(PREFIX) + "==", validate=False)
    except (binascii.Error, ValueError):
        raise ValueError("BULKSCRIBE_NOTIFY_SECRET: whsec_ must be followed by base64") from None
    if len(key) < 16:
        raise ValueError("BULKSCRIBE_NOTIFY_SECRET is too short: use 16 to 64 random bytes")
    return secret


def signed_headers(secret: str, msg_id: str, at: datetime, body: bytes) -> dict[str, str]:
    """The three ``webhook-*`` headers for one try of one message."""
    signature = Webhook(secret).sign(msg_id, at, body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
