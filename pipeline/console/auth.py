"""Who may use the console: tokens, session cookies and CSRF tokens.

Pure functions over a frozen :class:`Access`. Two tokens: the operator's (every page and
action) and an optional read-only one (pages and GETs; POSTs are refused). Without a token
the console is only served on a loopback address and everyone reaching it is an operator.
A session cookie is ``role.expiry.nonce.mac``, signed with a key derived from the tokens, so
changing a token ends every session; the CSRF token of a page is a MAC of the session's
nonce. Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass

ADMIN = "operator"
VIEWER = "viewer"
SESSION_COOKIE = "bulkscribe_session"
SESSION_S = 12 * 3600


@dataclass(frozen=True, slots=True)
class Access:
    token: str | None
    readonly_token: str | None
    key: bytes  # signs sessions and CSRF tokens

    @classmethod
    def build(cls, token: str | None, readonly_token: str | None) -> Access:
        if token:
            material = f"{token}\0{readonly_token or ''}".encode()
            key = hashlib.sha256(b"bulkscribe-console-session\0" + material).digest()
        else:  # loopback only: sessions last as long as this process
            key = secrets.token_bytes(32)
        return cls(token or None, readonly_token or None, key)

    @property
    def open(self) -> bool:
        """No token: loopback-only, every visitor an operator."""
        return self.token is None


def role_for_token(access: Access, presented: str) -> str | None:
    """The role a presented token grants, or None."""
    got = presented.encode()
    if access.token and hmac.compare_digest(got, access.token.encode()):
        return ADMIN
    if access.readonly_token and hmac.compare_digest(got, access.readonly_token.encode()):
        return VIEWER
    return None


def bearer_role(access: Access, authorization: str | None) -> str | None:
    if access.open:
        return ADMIN
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return role_for_token(access, value.strip())


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def new_session(access: Access, role: str, *, now: float | None = None) -> str:
    expiry = int((now if now is not None else time.time()) + SESSION_S)
    payload = f"{role}.{expiry}.{secrets.token_hex(16)}"
    return f"{payload}.{_mac(access.key, payload)}"


@dataclass(frozen=True, slots=True)
class Session:
    role: str
    nonce: str


def read_session(access: Access, cookie: str | None, *, now: float | None = None) -> Session | None:
    """The session a cookie carries, if its MAC holds and it has not expired."""
    if not cookie or cookie.count(".") != 3:
        return None
    role, expiry, nonce, mac = cookie.split(".")
    if not hmac.compare_digest(mac, _mac(access.key, f"{role}.{expiry}.{nonce}")):
        return None
    if role not in (ADMIN, VIEWER) or not expiry.isdigit():
        return None
    if int(expiry) < (now if now is not None else time.time()):
        return None
    return Session(role, nonce)


def csrf_token(access: Access, session: Session) -> str:
    return _mac(access.key, f"csrf.{session.nonce}")


def csrf_ok(access: Access, session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(str(presented), csrf_token(access, session))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this site only."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
