"""An embedded run's own files under ``--out``, opened so that nobody else can redirect them.

An output directory may be writable by others (a shared drop folder), and the run is often
root: a symbolic link planted there must never make it truncate, append to or create a file
elsewhere. So everything the run writes in ``--out`` is opened without following links:

- ``.bulkscribe/`` (the state directory) is created 0700 and opened with ``O_NOFOLLOW``;
  one that is a link, not a directory or not owned by this user is refused. Group and other
  write are taken off it, so no one else can plant anything inside once it is checked.
- ``.bulkscribe/lock`` and ``bulkscribe.log`` are opened ``O_NOFOLLOW`` (the lock relative
  to the state directory's descriptor) and must be regular files with a single link.
- ``.bulkscribe/ledger.db`` and SQLite's side files (``-journal``, ``-wal``, ``-shm``), which
  SQLite opens by name, and ``.bulkscribe/media``, must not be links and must be this user's
  own regular files (directory, for media) when present. The state directory being this
  user's alone, what is checked stays true for the run.
- Transcripts and ``results.jsonl`` are written to a new temporary file and renamed over
  the target (``render.atomic_write``): a link there is replaced, never followed.

A refusal is a :class:`OutDirRefused` with one line saying what is wrong and what to do;
the CLI turns it into a usage error (exit 2) before any item is touched.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

STATE_DIR = ".bulkscribe"
LOG_FILE = "bulkscribe.log"
LEDGER_FILE = "ledger.db"
# SQLite opens these beside the database by name (rollback journal, WAL, shared memory).
LEDGER_SIDE_FILES = ("-journal", "-wal", "-shm")

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a planted FIFO never hangs


class OutDirRefused(Exception):
    """--out, or something the run keeps in it, cannot be used safely (a usage error)."""


def open_out_dir(out_dir: Path) -> int:
    """``--out`` (created if missing) as a directory descriptor; refused with the OS error
    when it cannot be created or written (a read-only mount, /sys, a path below a file)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise OutDirRefused(_cannot(out_dir, exc)) from None
    if not os.access(out_dir, os.W_OK):
        read_only = bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY)
        os.close(fd)
        code = errno.EROFS if read_only else errno.EACCES
        raise OutDirRefused(_cannot(out_dir, OSError(code, os.strerror(code))))
    return fd


def open_state_dir(out_fd: int, out_dir: Path) -> int:
    """``.bulkscribe/`` under ``--out``, created private, as a descriptor (see the module)."""
    path = out_dir / STATE_DIR
    try:
        os.mkdir(STATE_DIR, 0o700, dir_fd=out_fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise OutDirRefused(_cannot(out_dir, exc)) from None
    try:
        fd = os.open(STATE_DIR, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=out_fd)
    except OSError as exc:
        raise OutDirRefused(_refusal(path, _lstat(STATE_DIR, out_fd), exc)) from None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        os.close(fd)
        raise OutDirRefused(_refusal(path, st))
    if st.st_mode & 0o022:  # made by an older version under a permissive umask
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o022)
    return fd


def check_existing(out_dir: Path) -> None:
    """For readers of a run's state (``status --out``): the same checks, creating nothing."""
    out_fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _lstat(STATE_DIR, out_fd) is None:
            return
        state_fd = open_state_dir(out_fd, out_dir)
        try:
            check_state_files(state_fd, out_dir)
        finally:
            os.close(state_fd)
    finally:
        os.close(out_fd)


def open_regular(
    name: str, flags: int, *, dir_fd: int | None, shown: Path, mode: int = 0o644
) -> int:
    """Open (or create) a regular file without following a link; refuse anything else."""
    try:
        fd = os.open(name, flags | _NOFOLLOW, mode, dir_fd=dir_fd)
    except OSError as exc:
        raise OutDirRefused(_refusal(shown, _lstat(name, dir_fd), exc)) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise OutDirRefused(_refusal(shown, st))
    return fd


def check_state_files(state_fd: int, out_dir: Path) -> None:
    """The files SQLite and the media store open by name: none may be a link, and each
    present must be this user's own regular file (directory, for media)."""
    names = [LEDGER_FILE, *(LEDGER_FILE + s for s in LEDGER_SIDE_FILES), "media"]
    for name in names:
        st = _lstat(name, state_fd)
        if st is None:
            continue
        kind_ok = (
            stat.S_ISDIR(st.st_mode)
            if name == "media"
            else (stat.S_ISREG(st.st_mode) and st.st_nlink == 1)
        )
        if not kind_ok or st.st_uid != os.geteuid():
            raise OutDirRefused(_refusal(out_dir / STATE_DIR / name, st))


def check_entry(name: str, dir_fd: int, shown: Path) -> None:
    """A file the run will open in ``--out`` later (the log): not a link, a regular file."""
    st = _lstat(name, dir_fd)
    if st is not None and (not stat.S_ISREG(st.st_mode) or st.st_nlink != 1):
        raise OutDirRefused(_refusal(shown, st))


def check_no_links_below(root: Path, path: Path) -> None:
    """Every existing component of ``path`` below ``root`` is a real directory (for a
    scratch directory configured inside ``--out``)."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return
    current = root
    for part in parts:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise OutDirRefused(_refusal(current, st))


def _lstat(name: str, dir_fd: int | None) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None


def _cannot(out_dir: Path, exc: OSError) -> str:
    return (
        f"cannot write to the output directory {out_dir}: "
        f"[Errno {exc.errno}] {exc.strerror}; choose a directory you can write to"
    )


def _refusal(path: Path, st: os.stat_result | None, exc: OSError | None = None) -> str:
    fix = (
        "; remove it (anyone who can write to the output directory could have put it "
        "there) and run again"
    )
    if st is not None and stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link, which bulkscribe does not follow{fix}"
    if st is not None and st.st_uid != os.geteuid():
        return (
            f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()}), "
            f"so bulkscribe will not use it{fix}"
        )
    if st is not None and st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
        return f"{path} has {st.st_nlink} hard links, so it may be another file{fix}"
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return f"{path} is not a regular file{fix}"
    if exc is not None:
        return f"cannot open {path}: [Errno {exc.errno}] {exc.strerror}"
    return f"{path} is not what bulkscribe expects there{fix}"
