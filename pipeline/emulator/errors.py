"""Errors the emulator answers with, in the native and the OpenAI-compatible dialect.

Handlers raise :class:`ApiError` with the native code; the edge renders it either as
``{"request_id", "code", "message"}`` (§2.5) or as ``{"error": {...}}`` (§5.1) depending on
the route. Messages are the service's own where the protocol notes record them.
"""

from __future__ import annotations

from typing import Any

INTERNAL_MESSAGE = (
    "An internal error has occured, please try again later or contact "
    "service support."
)  # sic, as the service spells it
THROTTLED_MESSAGE = "Requests throttling triggered."
INVALID_KEY_MESSAGE = "Invalid API-key provided."
ASYNC_ONLY_MESSAGE = "current user api does not support synchronous calls"
MODEL_NOT_EXIST = "Model not exist."
BAD_OSS_URL = (
    "The provided URL does not appear to be valid. Ensure it is correctly "
    "formatted; oss:// URLs need the header X-DashScope-OssResourceResolve: enable."
)
STREAM_ONLY = (
    "This model only support stream mode, please enable the stream parameter to access the model."
)

# native code -> (OpenAI error type, OpenAI error code)
_COMPAT: dict[str, tuple[str, str]] = {
    "InvalidParameter": ("invalid_request_error", "invalid_parameter_error"),
    "BadRequest.EmptyModel": ("invalid_request_error", "invalid_parameter_error"),
    "BadRequest.EmptyInput": ("invalid_request_error", "invalid_parameter_error"),
    "InvalidApiKey": ("invalid_request_error", "invalid_api_key"),
    "AccessDenied": ("invalid_request_error", "access_denied"),
    "ModelNotFound": ("invalid_request_error", "model_not_found"),
    "Throttling": ("limit_requests", "limit_requests"),
    "InternalError": ("internal_error", "internal_error"),
}


class ApiError(Exception):
    """A request the emulator refuses: HTTP status, native code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def native_body(self, request_id: str) -> dict[str, Any]:
        return {"request_id": request_id, "code": self.code, "message": self.message}

    def compat_body(self, request_id: str) -> dict[str, Any]:
        kind, code = _COMPAT.get(self.code, ("invalid_request_error", self.code))
        message = "Incorrect API key provided. " if self.code == "InvalidApiKey" else self.message
        return {
            "error": {"message": message, "type": kind, "param": None, "code": code},
            "request_id": request_id,
        }


def invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidParameter", message)


def throttled() -> ApiError:
    return ApiError(429, "Throttling", THROTTLED_MESSAGE)


def internal() -> ApiError:
    return ApiError(500, "InternalError", INTERNAL_MESSAGE)


def invalid_key() -> ApiError:
    return ApiError(401, "InvalidApiKey", INVALID_KEY_MESSAGE)


def too_large(cap: int) -> ApiError:
    return ApiError(
        413,
        "RequestEntityTooLarge",
        f"The request body is larger than the {cap} bytes this route accepts.",
    )
