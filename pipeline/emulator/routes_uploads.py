"""Temporary uploads: the policy (E6) and the OSS PostObject endpoint it points at (E7)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.emulator.errors import invalid
from pipeline.emulator.uploads import (
    UPLOAD_PATH,
    UploadRejected,
    check_post,
    make_policy,
    oss_error_xml,
)
from pipeline.emulator.web import Json, base_url, emulator, native_error, request_id


async def get_policy(request: Request) -> Response:
    """E6: ``GET /api/v1/uploads?action=getPolicy&model=M``; the answer lives under ``data``."""
    rid = request_id(request)
    em = emulator(request)
    model = request.query_params.get("model")
    if request.query_params.get("action") != "getPolicy" or not model:
        return native_error(invalid("action=getPolicy and model are required."), rid)
    data = make_policy(
        em.secret,
        model=model,
        now=em.clock(),
        upload_host=base_url(request) + UPLOAD_PATH,
        max_file_size_mb=em.config.upload_max_bytes // (1024 * 1024),
    )
    return Json({"request_id": rid, "data": data})


def _oss_error(exc: UploadRejected, rid: str) -> Response:
    return Response(
        oss_error_xml(exc.code, exc.message, rid),
        status_code=exc.status,
        media_type="application/xml",
        headers={"x-oss-request-id": rid},
    )


async def post_object(request: Request) -> Response:
    """E7: an OSS PostObject form; no Authorization, the signed policy is the credential."""
    rid = request_id(request)
    em = emulator(request)
    async with request.form(max_files=1, max_fields=32) as form:
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = form.get("file")
        try:
            accepted = check_post(fields, em.secret, em.clock())
            if not isinstance(upload, UploadFile):
                raise UploadRejected(400, "InvalidArgument", "missing form field file")
            size = upload.size or 0
            if accepted.max_bytes and size > accepted.max_bytes:
                raise UploadRejected(
                    400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size."
                )
            if accepted.forbid_overwrite and em.uploads.exists(accepted.key, em.clock()):
                raise UploadRejected(
                    409,
                    "FileAlreadyExists",
                    "The object you specified already exists and can not be overwritten.",
                )
        except UploadRejected as exc:
            return _oss_error(exc, rid)
        await run_in_threadpool(em.uploads.put, accepted.key, upload.file, em.clock())
    return Response(b"", status_code=200, headers={"x-oss-request-id": rid})


routes = [
    Route("/api/v1/uploads", get_policy, methods=["GET"]),
    Route(UPLOAD_PATH, post_object, methods=["POST"]),
]
