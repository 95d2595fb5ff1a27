"""Server-sent events framing, for both of DashScope's streaming dialects.

Native streams (§2.6) write ``id:1``, ``event:result``, a ``:HTTP_STATUS/200`` comment and
``data:{...}`` without a space; errors are ``event:error`` plus an optional ``status:400``
line. The OpenAI-compatible endpoint writes ``data: {...}`` and ends with ``data: [DONE]``.
One parser serves both: fields split at the first colon with one optional space removed (the
SSE standard), events end at a blank line, several ``data`` lines join with newlines.

The in-band status is taken from a ``status:`` line, else from the service's
``:HTTP_STATUS/nnn`` comment (the 1.x SDK ignores that comment; reading it lets a real
service's 5xx-in-a-stream stay transient).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_HTTP_STATUS_COMMENT = re.compile(r"^:\s*HTTP_STATUS/(\d{3})")


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event; ``event`` is ``"message"`` when the stream did not name it."""

    data: str
    event: str = "message"
    status: int | None = None

    @property
    def is_error(self) -> bool:
        return self.event.strip().lower() == "error"


def iter_events(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Events from decoded lines (as ``httpx.Response.iter_lines`` yields them).

    A last event that the stream did not close with a blank line is still dispatched: a
    truncated stream then fails on its content (half a JSON object, no finish), not silently.
    """
    data: list[str] = []
    event = ""
    status: int | None = None
    comment_status: int | None = None
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data or event:
                yield SseEvent("\n".join(data), event or "message", status or comment_status)
            data, event, status, comment_status = [], "", None, None
            continue
        if line.startswith(":"):
            if m := _HTTP_STATUS_COMMENT.match(line):
                comment_status = int(m.group(1))
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "status":
            try:
                status = int(value.strip())
            except ValueError:
                status = None
        # "id", "retry" and unknown fields carry nothing we use
    if data or event:
        yield SseEvent("\n".join(data), event or "message", status or comment_status)
