"""Upload: stored audio made fetchable by the provider, its URL kept with the item.

Either a presigned URL of our own bucket (pure computation, so it is written with the
submit claim) or DashScope's temporary storage (an upload, so only once the item is ours;
the request itself is in pipeline/asr/dashscope/upload.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.errors import FailureCode, PermanentError, TransientError
from pipeline.flow.client import Provider
from pipeline.flow.context import FlowContext
from pipeline.flow.media import MediaKeeper
from pipeline.ledger import ItemRow
from pipeline.states import ItemState


class PresignPublisher:
    # A presigned URL is pure computation: the submit step writes it with its claim.
    before_claim = True

    def __init__(self, expires_s: int) -> None:
        self.expires_s = expires_s

    def publish(self, key: str, keeper: MediaKeeper, workdir: Path, model: str) -> str:
        return keeper.store.presign(key, expires_s=self.expires_s)


class TemporaryUploadPublisher:
    """DashScope's own temporary storage (``oss://``, 48 h): no bucket of ours needed."""

    before_claim = False  # an upload: only once the item is ours

    def __init__(self, client_factory: Callable[[], Provider]) -> None:
        self.client_factory = client_factory

    def publish(self, key: str, keeper: MediaKeeper, workdir: Path, model: str) -> str:
        path = keeper.local(key, workdir)
        return str(self.client_factory().upload_temporary(str(path), path.name, model))


def early_url(ctx: FlowContext, row: ItemRow) -> str | None:
    """The URL, when publishing is side-effect free: then it is written with the claim."""
    if ctx.publisher is None or not ctx.publisher.before_claim:
        return None
    return url_for(ctx, row, row.model_or(ctx.rules.model))


def url_for(ctx: FlowContext, row: ItemRow, model: str) -> str:
    if ctx.publisher is None:
        raise PermanentError(FailureCode.CONFIG_INVALID, "no way to publish audio for the provider")
    return ctx.publisher.publish(str(row.media_key), ctx.media, ctx.workdir(row), model)


def publish(ctx: FlowContext, row: ItemRow, model: str) -> str:
    """The provider-facing URL, written to the ledger before the submit goes out."""
    url = url_for(ctx, row, model)
    if not ctx.ledger.update_if(row.id, ItemState.SUBMITTING, media_url=url):
        raise TransientError(FailureCode.LEASE_EXPIRED, f"{row.key}: claim lost before submit")
    return url
