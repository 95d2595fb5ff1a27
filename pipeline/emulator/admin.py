"""``/_emulator/*``: what tests and operators need beyond the DashScope API.

Not part of the API, so no injected faults; but with ``--api-key`` they need the key like
every route (the listing shows every client's file URLs). ``GET tasks`` lists every task received
since the last reset; ``POST config`` changes fault rates and latency at runtime; ``POST
reset`` forgets all tasks and restarts the seeded fault sequences; ``GET stats`` counts.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.emulator.config import ConfigInvalid
from pipeline.emulator.errors import ApiError
from pipeline.emulator.web import Json, emulator, read_json


async def tasks(request: Request) -> Response:
    return Json(emulator(request).listing())


async def config(request: Request) -> Response:
    em = emulator(request)
    if request.method == "POST":
        try:
            patch = await read_json(request)
            if not isinstance(patch, dict):
                raise ConfigInvalid("the body must be a JSON object")
            em.config = em.config.with_changes(patch)
        except (ConfigInvalid, ApiError) as exc:
            return Json({"error": str(exc)}, status_code=400)
    return Json(em.config.public())


async def reset(request: Request) -> Response:
    emulator(request).reset()
    return Json({"reset": True})


async def stats(request: Request) -> Response:
    return Json(emulator(request).stats())


routes = [
    Route("/_emulator/tasks", tasks, methods=["GET"]),
    Route("/_emulator/config", config, methods=["GET", "POST"]),
    Route("/_emulator/reset", reset, methods=["POST"]),
    Route("/_emulator/stats", stats, methods=["GET"]),
]
