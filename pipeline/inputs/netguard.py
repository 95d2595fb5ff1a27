"""Where a download may connect, and for how long: checked where the socket is opened.

Manifests name URLs that someone else wrote, so fetching them must not become a way into
this host's neighbourhood (server-side request forgery). :class:`AddressPolicy` says which
addresses are refused; :class:`GuardedBackend` is the httpcore network backend that resolves
a host name once, refuses it if any of its addresses is refused, and connects to exactly
the address it checked, so DNS rebinding (a name that answers a public address to the check
and a private one to the connect) has no second lookup to exploit. Every hop of a redirect
is a new connection and goes through the same check.

:class:`Deadline` bounds a whole download by wall-clock time. A read timeout restarts with
every byte, so a server trickling one byte a second would hold a worker for ever; the
deadline's timer shuts down the download's sockets instead, which wakes a blocked read at
once, whatever the server does.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from pipeline.errors import SourceRefused

# Instance metadata services hand out cloud credentials to whoever asks from inside the
# host: AWS/GCP/Azure/OCI (169.254.169.254, and AWS's IPv6 fd00:ec2::254), AWS ECS task
# metadata (169.254.170.2), Alibaba Cloud (100.100.100.200, outside link-local).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(SourceRefused):
    """The source's host is, or resolves to, an address the download policy refuses."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"refused to connect to {host} ({address}): {reason}")
        self.host, self.address, self.reason = host, address, reason


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Link-local and cloud metadata addresses are always refused; private, loopback and
    other non-global ones only when ``allow_private`` is false."""

    allow_private: bool = True
    setting: str = "download.allow_private"  # named when a private address is refused

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why ``address`` may not be reached, or None when it may."""
        ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
        if ip in METADATA_ADDRESSES:
            return "a cloud metadata address, always refused"
        if ip.is_link_local:
            return "a link-local address, always refused"
        if ip.is_multicast:
            return "a multicast address, always refused"
        if not self.allow_private and not ip.is_global:
            return (
                f"a private, loopback or reserved address, refused because {self.setting} is false"
            )
        return None

    def check_host(self, host: str) -> None:
        """Refuse an IP literal before anything is resolved or sent; names pass (they are
        checked when they are resolved, at connect time)."""
        try:
            ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return
        reason = self.refusal(ip)
        if reason is not None:
            raise AddressRefused(host, str(ip), reason)


_DEADLINE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "bulkscribe_download_deadline", default=None
)


class Deadline:
    """``with Deadline(s):`` a watchdog over one download in this thread: after ``s``
    seconds it shuts down every socket the download opened (see :class:`GuardedBackend`)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._expired = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._token: contextvars.Token[Deadline | None] | None = None

    @property
    def expired(self) -> bool:
        return self._expired.is_set()

    def __enter__(self) -> Deadline:
        self._token = _DEADLINE.set(self)
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()
        if self._token is not None:
            _DEADLINE.reset(self._token)
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def track(self, sock: socket.socket) -> None:
        """Watch the connection behind ``sock``. A duplicate descriptor is kept: TLS wraps
        the socket into a new object (the original is detached), but shutting down any
        descriptor of a connection wakes every reader of it, mid-handshake or after."""
        dup = sock.dup()
        with self._lock:
            self._sockets.append(dup)
            if self._expired.is_set():
                _shut(dup)

    def _expire(self) -> None:
        with self._lock:
            self._expired.set()
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    # shutdown(), not close(): closing a socket another thread is blocked reading does not
    # wake that thread on Linux; shutting it down makes the read return at once.
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's own socket backend, with the address policy applied between resolving
    the host and connecting to it, and each socket handed to the current :class:`Deadline`."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:  # one bad answer refuses the name: it is not ours to trust
            reason = self.policy.refusal(address)
            if reason is not None:
                raise AddressRefused(host, address, reason)
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                stream = super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            deadline = _DEADLINE.get()
            if deadline is not None:
                deadline.track(stream.get_extra_info("socket"))
            return stream
        raise error


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport on a :class:`GuardedBackend`. No keep-alive: each download opens
    its own connection, so its deadline owns every socket it reads from."""

    def __init__(self, policy: AddressPolicy, *, max_connections: int = 64) -> None:
        super().__init__(trust_env=False)
        # httpx builds its httpcore pool without a way to pass a network backend; the pool
        # is replaced whole, with httpx's own TLS settings.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=0,
            network_backend=GuardedBackend(policy),
        )


def guarded_client(
    policy: AddressPolicy,
    *,
    connect_timeout_s: float,
    read_timeout_s: float,
    user_agent: str = "bulkscribe",
) -> httpx.Client:
    """The client downloads use: policy-checked connections, no proxies from the
    environment (a proxy would connect on our behalf, past the check)."""
    return httpx.Client(
        transport=GuardedTransport(policy),
        headers={"user-agent": user_agent},
        timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
    )
