"""Real transcripts for the emulator: fetch, probe, normalize, transcribe, off the event loop.

Sources are ``http(s)://`` URLs (streamed with the pipeline's own downloader: its deadline
and address policy), ``data:`` URIs
and ``oss://`` keys uploaded to the emulator earlier. Transcripts are cached by the SHA-256 of
the file's bytes (plus the options that change them), so the same file submitted a hundred
times is transcribed once. Blocking work runs in two bounded thread pools, one for async tasks
and one for sync calls, so a long queue of tasks cannot starve ``qwen3-asr-flash`` callers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote_to_bytes

from pipeline.asr.base import ClipEngine
from pipeline.asr.windows import transcribe_file
from pipeline.errors import FailureCode, MediaRejected, PipelineError
from pipeline.inputs.manifest import display
from pipeline.inputs.netguard import AddressPolicy, guarded_client
from pipeline.inputs.sources import download_http
from pipeline.models import AsrOptions, MediaLimits, NormalizeSpec, ProbeResult
from pipeline.outputs.transcript import Transcript
from pipeline.settings import DownloadSettings
from pipeline.stages.normalize import normalize
from pipeline.stages.probe import probe

_DATA_URI = re.compile(r"data:(?P<mime>[^,;]*)(?P<params>(;[^,;]*)*?),(?P<data>.*)", re.S)


class Problem(StrEnum):
    """Why a file could not be transcribed; API layers turn these into their own codes."""

    DOWNLOAD = "download"
    DECODE = "decode"
    TOO_LONG = "too_long"
    TOO_LARGE = "too_large"
    BAD_CHANNEL = "bad_channel"
    ENGINE = "engine"


class AudioFailure(Exception):
    def __init__(self, problem: Problem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


@dataclass(frozen=True, slots=True)
class AudioRequest:
    source: str  # http(s) URL, data: URI or oss:// URL
    channels: tuple[int, ...] = (0,)
    language: str | None = None
    context: str | None = None
    limits: MediaLimits = field(default_factory=MediaLimits)


@dataclass(frozen=True, slots=True)
class Transcribed:
    probe: ProbeResult
    transcripts: tuple[Transcript, ...]
    sha256: str
    cached: bool = False


class TranscriptCache:
    """A bounded LRU of transcripts keyed by content hash and options; thread-safe."""

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[object, ...], tuple[Transcript, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.transcriptions = 0  # files actually run through the engine

    def get(self, key: tuple[object, ...]) -> tuple[Transcript, ...] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
            return found

    def put(self, key: tuple[object, ...], value: tuple[Transcript, ...]) -> None:
        with self._lock:
            self.transcriptions += 1
            self._items[key] = value
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)


def engine_language(requested: str | None, multilingual: bool) -> str | None:
    """The language to force on the engine; hints an English-only model cannot honour go."""
    if not requested:
        return None
    code = requested.split("-")[0].lower()
    return code if code == "en" or multilingual else None


def decode_data_uri(uri: str) -> bytes:
    m = _DATA_URI.fullmatch(uri)
    if m is None:
        raise AudioFailure(Problem.DOWNLOAD, "malformed data URI")
    if ";base64" in m.group("params"):
        try:
            return base64.b64decode(m.group("data"))
        except (binascii.Error, ValueError) as exc:
            raise AudioFailure(Problem.DECODE, f"bad base64 in data URI: {exc}") from None
    return unquote_to_bytes(m.group("data"))


class Backend:
    def __init__(
        self,
        engine: ClipEngine,
        *,
        workers: int,
        resolve_oss: Callable[[str], Path | None],
        cache: TranscriptCache | None = None,
        download: DownloadSettings | None = None,
    ) -> None:
        self.engine = engine
        self.cache = cache or TranscriptCache()
        self._resolve_oss = resolve_oss
        self._task_pool = ThreadPoolExecutor(workers, thread_name_prefix="emu-task")
        self._sync_pool = ThreadPoolExecutor(workers, thread_name_prefix="emu-sync")
        self._scratch = Path(tempfile.mkdtemp(prefix="bulkscribe-emulator-"))
        # The pipeline's own downloader and address policy: clients name the URLs.
        self._download = download or DownloadSettings()
        self._http = guarded_client(
            AddressPolicy(self._download.allow_private),
            connect_timeout_s=self._download.connect_timeout_s,
            read_timeout_s=self._download.read_timeout_s,
            user_agent="bulkscribe-emulator",
        )
        self._stripes = [threading.Lock() for _ in range(64)]  # one file, one transcription

    async def run(self, req: AudioRequest, *, sync: bool = False) -> Transcribed:
        pool = self._sync_pool if sync else self._task_pool
        return await asyncio.get_running_loop().run_in_executor(pool, self.transcribe, req)

    def transcribe(self, req: AudioRequest) -> Transcribed:
        """Blocking: the whole path from a source string to per-channel transcripts."""
        with tempfile.TemporaryDirectory(dir=self._scratch) as tmp:
            src = self._materialize(req, Path(tmp))
            with src.open("rb") as f:
                sha = hashlib.file_digest(f, "sha256").hexdigest()
            probed = self._probe(src, req.limits)
            for c in req.channels:
                if c >= probed.channels:
                    raise AudioFailure(
                        Problem.BAD_CHANNEL,
                        f"channel {c} requested; the audio has {probed.channels}",
                    )
            multilingual = bool(getattr(self.engine, "multilingual", False))
            options = AsrOptions(
                language=engine_language(req.language, multilingual),
                words=True,
                context=req.context,
            )
            key = (sha, req.channels, options.language, options.context)
            with self._stripes[hash(key) % len(self._stripes)]:
                cached = self.cache.get(key)
                if cached is not None:
                    return Transcribed(probed, cached, sha, cached=True)
                out = tuple(self._channel(src, probed, c, options, Path(tmp)) for c in req.channels)
                self.cache.put(key, out)
            return Transcribed(probed, out, sha)

    def _materialize(self, req: AudioRequest, tmp: Path) -> Path:
        source, max_bytes = req.source, req.limits.max_bytes
        if source.startswith("data:"):
            if len(source) > max_bytes:  # the service counts a data URI after encoding
                raise AudioFailure(Problem.TOO_LARGE, f"data URI of {len(source)} bytes")
            dest = tmp / "source"
            dest.write_bytes(decode_data_uri(source))
            return dest
        if source.startswith("oss://"):
            path = self._resolve_oss(source[len("oss://") :])
            if path is None:
                raise AudioFailure(Problem.DOWNLOAD, f"{source} was never uploaded or expired")
            return path
        if source.split("://", 1)[0].lower() not in ("http", "https"):
            raise AudioFailure(Problem.DOWNLOAD, f"unsupported URL scheme: {display(source)[:40]}")
        dest = tmp / "source"
        try:
            download_http(
                self._http,
                source,
                dest,
                max_bytes=max_bytes,
                deadline_s=self._download.deadline_s,
                policy=AddressPolicy(self._download.allow_private),
            )
        except MediaRejected as exc:  # only TOO_LARGE comes out of the downloader this way
            raise AudioFailure(Problem.TOO_LARGE, exc.message) from None
        except PipelineError as exc:
            raise AudioFailure(Problem.DOWNLOAD, exc.message) from None
        return dest

    def _probe(self, src: Path, limits: MediaLimits) -> ProbeResult:
        try:
            return probe(src, limits, name="audio")
        except MediaRejected as exc:
            problem = {
                FailureCode.TOO_LONG: Problem.TOO_LONG,
                FailureCode.TOO_LARGE: Problem.TOO_LARGE,
            }.get(exc.code, Problem.DECODE)
            raise AudioFailure(problem, exc.message) from None
        except PipelineError as exc:
            raise AudioFailure(Problem.DOWNLOAD, exc.message) from None

    def _channel(
        self, src: Path, probed: ProbeResult, channel: int, options: AsrOptions, tmp: Path
    ) -> Transcript:
        try:
            audio = normalize(
                src,
                tmp / f"ch{channel}.wav",
                probed,
                NormalizeSpec(),
                channel=channel if probed.channels > 1 else None,
                name="audio",
            )
        except PipelineError as exc:
            raise AudioFailure(Problem.DECODE, exc.message) from None
        try:
            return transcribe_file(audio, self.engine, options, channel_id=channel)
        except PipelineError as exc:
            raise AudioFailure(Problem.ENGINE, exc.message) from None

    def close(self) -> None:
        for pool in (self._task_pool, self._sync_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
        shutil.rmtree(self._scratch, ignore_errors=True)
