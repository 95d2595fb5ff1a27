"""The one way bulkscribe calls ffprobe and ffmpeg.

Argv lists, never a shell. On Linux the child is started through util-linux ``setpriv
--pdeathsig KILL``, so it dies with the process that started it and a killed worker leaves no
orphaned ffmpeg writing into scratch. (Not ``preexec_fn``: that makes CPython fork() instead of
vfork(), and forking beside a thread in an OpenBLAS matmul can deadlock.) Failures are raised
as :class:`MediaCommandError` with the exit code and the stderr tail; stages translate them
into failure codes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def _with_death_signal(argv: Sequence[str]) -> list[str]:
    if _SETPRIV is None:
        return list(argv)
    return [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]


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
    if shutil.which(argv[0]) is None:
        raise MediaToolMissing(
            f"{argv[0]} is not installed; install ffmpeg (Debian/Ubuntu: apt-get install ffmpeg)"
        )
    proc = subprocess.Popen(
        _with_death_signal(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
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
