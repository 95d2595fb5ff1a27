"""An httpx client for DashScope's speech models: async tasks, sync recognition, upload.

Each method is one request (two for the upload): build it from pure pieces
(:mod:`.params`, :mod:`.upload`), send it through :meth:`DashScopeClient._send`, where every
failure is mapped once by :func:`.wire.to_error`, and parse the answer into a frozen value
(:mod:`.tasks`, :mod:`.sync`). Nothing here retries or sleeps: the pipeline decides retries
from the exception's branch, and polling is :func:`.polling.decide`'s business.

The ``httpx.Client`` is injected, so timeouts, proxies and connection pools are the caller's
(:func:`.wire.new_http_client` gives connect 10 s / read 60 s), and tests script faults with
``httpx.MockTransport``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote

import httpx

from pipeline.asr.dashscope.params import chat_body, native_body, submit_body
from pipeline.asr.dashscope.sse import SseEvent, iter_events
from pipeline.asr.dashscope.sync import (
    SyncResult,
    compat_result,
    compat_stream_result,
    native_result,
    native_stream_result,
)
from pipeline.asr.dashscope.tasks import (
    Submitted,
    TaskStatus,
    TaskSummary,
    parse_submitted,
    parse_task_list,
    parse_task_status,
)
from pipeline.asr.dashscope.upload import check_size, form_fields, object_key, parse_policy
from pipeline.asr.dashscope.wire import Source, json_object, to_error
from pipeline.errors import ConfigError, FailureCode
from pipeline.settings import Settings

T = TypeVar("T")

ASYNC = {"X-DashScope-Async": "enable"}
OSS_RESOLVE = {"X-DashScope-OssResourceResolve": "enable"}
SSE = {"X-DashScope-SSE": "enable", "Accept": "text/event-stream"}


def compat_base_from(base_url: str) -> str | None:
    """``…/api/v1`` → ``…/compatible-mode/v1``; None when the URL has another shape."""
    base = base_url.rstrip("/")
    if base.endswith("/api/v1"):
        return base[: -len("/api/v1")] + "/compatible-mode/v1"
    return None


class DashScopeClient:
    """One account on one DashScope deployment (native root ``…/api/v1``)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        http: httpx.Client,
        *,
        compat_base_url: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        compat = compat_base_url or compat_base_from(self.base_url) or ""
        self.compat_base_url = compat.rstrip("/")
        self._api_key = api_key
        self._http = http

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.Client) -> DashScopeClient:
        key = settings.dashscope_api_key
        return cls(settings.dashscope_base_url, key.get_secret_value() if key else None, http)

    def __repr__(self) -> str:  # never the key
        return f"DashScopeClient({self.base_url!r})"

    # -- async file transcription (§3) -----------------------------------------------------

    def submit_transcription(
        self,
        model: str,
        file_urls: Sequence[str],
        parameters: Mapping[str, Any],
        *,
        oss_resolve: bool = False,
    ) -> Submitted:
        """E1: start a task; ``oss://`` URLs switch on the resolve header by themselves."""
        body = submit_body(model, file_urls, dict(parameters))
        headers = dict(ASYNC)
        if oss_resolve or any(u.startswith("oss://") for u in file_urls):
            headers.update(OSS_RESOLVE)
        url = f"{self.base_url}/services/audio/asr/transcription"
        return parse_submitted(self._json(self._api("POST", url, json=body, headers=headers)))

    def query_task(self, task_id: str) -> TaskStatus:
        """E2: where a task stands; an expired or foreign id comes back as ``UNKNOWN``."""
        url = f"{self.base_url}/tasks/{quote(task_id, safe='')}"
        return parse_task_status(self._json(self._api("GET", url)), task_id)

    def list_tasks(
        self, *, model: str | None = None, page_size: int = 100, max_pages: int = 50
    ) -> list[TaskSummary]:
        """E9: the account's tasks of the last 24 h, newest first (all pages, bounded)."""
        out: list[TaskSummary] = []
        for page_no in range(1, max_pages + 1):
            params: dict[str, Any] = {"page_no": page_no, "page_size": page_size}
            if model:
                params["model_name"] = model
            tasks, total = parse_task_list(
                self._json(self._api("GET", f"{self.base_url}/tasks", params=params))
            )
            out.extend(tasks)
            if not tasks or len(out) >= total:
                break
        return out

    def cancel_task(self, task_id: str) -> None:
        """E8: cancel a PENDING task (others answer 400 UnsupportedOperation)."""
        self._send(self._api("POST", f"{self.base_url}/tasks/{quote(task_id, safe='')}/cancel"))

    def fetch_result(self, url: str) -> dict[str, Any]:
        """E3: the result document, by plain GET: a signed OSS URL must not get our key."""
        request = self._http.build_request("GET", url, headers={"Accept": "application/json"})
        request.headers.pop("Authorization", None)  # even if the injected client sets one
        return json_object(self._send(request, source="result"))

    # -- temporary upload (§6) -------------------------------------------------------------

    def upload_temporary(
        self, path_or_bytes: bytes | str | os.PathLike[str], filename: str, model: str
    ) -> str:
        """E6 + E7: put a local file where ``model`` can read it; returns ``oss://…``."""
        policy_req = self._api(
            "GET", f"{self.base_url}/uploads", params={"action": "getPolicy", "model": model}
        )
        policy = parse_policy(self._json(policy_req))
        key = object_key(policy, filename)
        with _opened(path_or_bytes) as (fileobj, size):
            check_size(policy, size, filename)
            request = self._http.build_request(
                "POST",
                policy.upload_host,
                headers={"Accept": "application/json"},
                data=form_fields(policy, key),
                files={"file": (key.rsplit("/", 1)[-1], fileobj)},
            )
            request.headers.pop("Authorization", None)  # the policy is the credential
            self._send(request, source="upload")
        return f"oss://{key}"

    # -- sync recognition (§4, §5) ---------------------------------------------------------

    def recognize(
        self,
        model: str,
        audio: str,
        *,
        language: str | None = None,
        enable_itn: bool = False,
        context: str | None = None,
        stream: bool = False,
    ) -> SyncResult:
        """E4, DashScope native: ``audio`` is an http(s) URL, a data: URI or ``oss://``."""
        body = native_body(
            model, audio, language=language, enable_itn=enable_itn, context=context, stream=stream
        )
        headers = {**(SSE if stream else {}), **(OSS_RESOLVE if audio.startswith("oss://") else {})}
        url = f"{self.base_url}/services/aigc/multimodal-generation/generation"
        request = self._api("POST", url, json=body, headers=headers)
        if stream:
            return self._stream(request, native_stream_result, native_result)
        return native_result(self._json(request))

    def chat_transcribe(
        self,
        model: str,
        audio_data: str,
        *,
        language: str | None = None,
        context: str | None = None,
        stream: bool = False,
        fmt: str = "wav",
    ) -> SyncResult:
        """E5, OpenAI-compatible; qwen3-omni-flash is always streamed (it refuses otherwise)."""
        if not self.compat_base_url:
            raise ConfigError(
                FailureCode.CONFIG_INVALID,
                f"cannot derive the compatible-mode URL from {self.base_url}; pass compat_base_url",
            )
        body = chat_body(
            model, audio_data, language=language, context=context, stream=stream, fmt=fmt
        )
        headers = {"Accept": "text/event-stream"} if body["stream"] else {}
        request = self._api(
            "POST", f"{self.compat_base_url}/chat/completions", json=body, headers=headers
        )
        if body["stream"]:
            return self._stream(request, compat_stream_result, compat_result)
        return compat_result(self._json(request))

    # -- the edge --------------------------------------------------------------------------

    def _api(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> httpx.Request:
        """A request to DashScope's own API: always authenticated, as the SDK insists."""
        if not self._api_key:
            raise ConfigError(
                FailureCode.PROVIDER_AUTH, "no DashScope API key: set DASHSCOPE_API_KEY"
            )
        all_headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "application/json",
            **(headers or {}),
        }
        return self._http.build_request(method, url, headers=all_headers, **kwargs)

    def _send(self, request: httpx.Request, *, source: Source = "api") -> httpx.Response:
        try:
            response = self._http.send(request)
        except httpx.HTTPError as exc:
            raise to_error(exc, source=source) from exc
        if not response.is_success:
            raise to_error(response, source=source)
        return response

    def _json(self, request: httpx.Request) -> dict[str, Any]:
        return json_object(self._send(request))

    def _stream(
        self,
        request: httpx.Request,
        on_events: Callable[[Iterable[SseEvent]], T],
        on_json: Callable[[dict[str, Any]], T],
    ) -> T:
        """Send, then parse SSE; a plain JSON answer (errors, usually) is parsed as such."""
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise to_error(exc) from exc
        try:
            if not response.is_success:
                response.read()
                raise to_error(response)
            if "text/event-stream" not in response.headers.get("content-type", ""):
                response.read()
                return on_json(json_object(response))
            return on_events(iter_events(response.iter_lines()))
        except httpx.HTTPError as exc:  # a read timeout or a dropped connection mid-stream
            raise to_error(exc) from exc
        finally:
            response.close()


@contextmanager
def _opened(source: bytes | str | os.PathLike[str]) -> Iterator[tuple[IO[bytes], int]]:
    """``(file object, size)`` for bytes or a path, closing what it opened."""
    if isinstance(source, bytes | bytearray):
        yield io.BytesIO(source), len(source)
        return
    path = Path(source)
    with path.open("rb") as fileobj:
        yield fileobj, path.stat().st_size
