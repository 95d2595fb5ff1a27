"""The one way bulkscribe calls ffprobe and ffmpeg.

Argv lists, never a shell. The child gets SIGKILL if the thread that started it dies (Linux
``PR_SET_PDEATHSIG``), so a killed worker leaves no orphaned ffmpeg writing into scratch.
Failures are raised as :class:`MediaCommandError` with the exit code and the stderr tail;
stages translate them into failure codes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1
_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - exotic libc
        _libc = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class MediaCommandError(Exception):
    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-3:]
        what = "timed out" if returncode is None else f"exited with {returncode}"
        super().__init__(f"{argv[0]} {what}: {' | '.join(tail) or 'no output'}")

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


class MediaToolMissing(Exception):
    pass


@dataclass(frozen=True, slots=True)
class MediaOutput:
    stdout: bytes
    stderr: str


def run_media(argv: Sequence[str], *, timeout_s: float) -> MediaOutput:
    """Run ffprobe/ffmpeg; raise MediaCommandError on a non-zero exit or a timeout."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent if _libc is not None else None,
        )
    except FileNotFoundError as exc:
        raise MediaToolMissing(
            f"{argv[0]} is not installed; install ffmpeg (Debian/Ubuntu: apt-get install ffmpeg)"
        ) from exc
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise MediaCommandError(argv, None, err.decode("utf-8", "replace")) from None
    except BaseException:
        proc.kill()  # KeyboardInterrupt and friends: never leave the child running
        proc.wait()
        raise
    stderr = err.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise MediaCommandError(argv, proc.returncode, stderr)
    return MediaOutput(out, stderr)
