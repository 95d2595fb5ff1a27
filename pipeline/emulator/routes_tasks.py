"""The async task API: submit (E1), query (E2), result files (E3), cancel (E8), list (E9)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.emulator.access import signed_result_query
from pipeline.emulator.errors import ASYNC_ONLY_MESSAGE, ApiError
from pipeline.emulator.parse import parse_submit
from pipeline.emulator.schemas import TaskView, list_entry, task_output
from pipeline.emulator.tasks import Status
from pipeline.emulator.web import (
    Json,
    base_url,
    emulator,
    header_enabled,
    native_error,
    read_json,
    request_id,
)

CANCEL_REFUSED = "Failed to cancel the task, please confirm if the task is in PENDING status."


async def submit(request: Request) -> Response:
    """E1: validate, create the task, answer PENDING; nothing is downloaded yet."""
    rid = request_id(request)
    em = emulator(request)
    try:
        if not header_enabled(request, "x-dashscope-async"):
            raise ApiError(403, "AccessDenied", ASYNC_ONLY_MESSAGE)
        req = parse_submit(
            await read_json(request),
            oss_resolve=header_enabled(request, "x-dashscope-ossresourceresolve"),
            max_files=em.config.max_files_per_task,
        )
    except ApiError as err:
        return native_error(err, rid)
    spec = em.submit(req)
    if em.config.submit_delay_s > 0:
        # Test hook: the task exists, the client does not know its id yet (see config.py).
        await asyncio.sleep(em.config.submit_delay_s)
    return Json(
        {
            "request_id": rid,
            "output": {"task_id": spec.task_id, "task_status": Status.PENDING.value},
        }
    )


def _task_body(
    view: TaskView | None, task_id: str, rid: str, base: str, secret: bytes
) -> dict[str, object]:
    if view is None:  # never known, or expired and swept: 200 UNKNOWN, never 404 (§3.3)
        return {"request_id": rid, "output": {"task_id": task_id, "task_status": "UNKNOWN"}}
    expires = int(view.expires_at)

    def result_url(i: int) -> str:
        # A presigned URL, as OSS hands out: with --api-key the signature is the credential
        # (clients fetch result files without headers); expiry is enforced either way.
        query = signed_result_query(secret, view.spec.task_id, i, expires)
        return f"{base}/results/{view.spec.task_id}/{i}.json?{query}"

    output, usage = task_output(view, result_url)
    body: dict[str, object] = {"request_id": rid, "output": output}
    if usage is not None:
        body["usage"] = usage
    return body


async def query(request: Request) -> Response:
    """E2 (GET or POST): the task's status now, with results once it has ended."""
    task_id = request.path_params["task_id"]
    em = emulator(request)
    view = em.view(task_id)
    return Json(_task_body(view, task_id, request_id(request), base_url(request), em.secret))


async def cancel(request: Request) -> Response:
    """E8: only a PENDING task can be cancelled."""
    em = emulator(request)
    rid = request_id(request)
    em.tick()
    if not em.store.cancel(request.path_params["task_id"], em.clock(), em.config.task_ttl_s):
        return native_error(ApiError(400, "UnsupportedOperation", CANCEL_REFUSED), rid)
    return Json({"request_id": rid})


async def list_tasks(request: Request) -> Response:
    """E9: a page of live tasks, newest first; flat body as the 2.0 SDK reads it (§3.4)."""
    em = emulator(request)
    rid = request_id(request)
    try:
        page_no = max(1, int(request.query_params.get("page_no", 1)))
        page_size = min(100, max(1, int(request.query_params.get("page_size", 10))))
    except ValueError:
        return native_error(
            ApiError(400, "InvalidParameter", "page_no and page_size must be integers."), rid
        )
    status = request.query_params.get("status")
    model = request.query_params.get("model_name")
    views = [
        v
        for v in em.views()
        if v.status is not Status.UNKNOWN
        and (not status or v.status.value == status)
        and (not model or v.spec.model == model)
    ]
    views.sort(key=lambda v: v.spec.submitted_at, reverse=True)
    page = views[(page_no - 1) * page_size : page_no * page_size]
    return Json(
        {
            "request_id": rid,
            "page_no": page_no,
            "page_size": page_size,
            "total": len(views),
            "tasks": [list_entry(v) for v in page],
        }
    )


async def result_file(request: Request) -> Response:
    """E3: the result document; 403 after the task expired, 404 if unknown. With --api-key
    the gate has checked the URL's signature (or a Bearer key) already."""
    delay = emulator(request).config.result_delay_s
    if delay > 0:  # test hook: hold the client in its persist step (see config.py)
        await asyncio.sleep(delay)
    status, doc = emulator(request).result_file(
        request.path_params["task_id"], request.path_params["index"]
    )
    if doc is not None:
        return Response(doc, media_type="application/json")
    code, message = (
        ("AccessDenied", "Request has expired.")
        if status == 403
        else ("NoSuchKey", "The specified key does not exist.")
    )
    return Json(
        {"Code": code, "Message": message, "RequestId": request_id(request)}, status_code=status
    )


routes = [
    Route("/api/v1/services/audio/asr/transcription", submit, methods=["POST"]),
    Route("/api/v1/tasks", list_tasks, methods=["GET"]),
    Route("/api/v1/tasks/{task_id}", query, methods=["GET", "POST"]),
    Route("/api/v1/tasks/{task_id}/cancel", cancel, methods=["POST"]),
    Route("/results/{task_id}/{index:int}.json", result_file, methods=["GET"]),
]
