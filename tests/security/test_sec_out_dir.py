"""Hostile output directories: links planted in --out never redirect what a run writes.

Each test plants something in a real --out, runs the real ``bulkscribe run`` in a
subprocess, and checks the file the plant points at (outside --out) byte for byte and by
mtime. The manifests name missing files, so a run that is not refused takes a second.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """Two lines naming files that do not exist: each fails at once with not_found."""
    path = tmp_path / "manifest.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"a{i}", "source": str(tmp_path / f"no{i}.wav")}) + "\n"
            for i in range(2)
        )
    )
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside --out that a plant points at, with an old mtime."""
    path = tmp_path / "outside" / "victim.conf"
    path.parent.mkdir()
    path.write_bytes(b"root:precious:data\n")
    os.utime(path, (1_000_000_000, 1_000_000_000))
    return path


def untouched(path: Path) -> bool:
    st = path.stat()
    return path.read_bytes() == b"root:precious:data\n" and st.st_mtime == 1_000_000_000


def refused(proc: subprocess.CompletedProcess[str], what: str) -> bool:
    """Exit 2, one error line naming ``what``, no traceback."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    return (
        proc.returncode == 2
        and len(errors) == 1
        and what in errors[0]
        and "Traceback" not in proc.stderr
    )


@pytest.mark.parametrize(
    "name",
    [
        ".bulkscribe/lock",
        ".bulkscribe/ledger.db",
        ".bulkscribe/ledger.db-journal",
        ".bulkscribe/ledger.db-wal",
        ".bulkscribe/ledger.db-shm",
        "bulkscribe.log",
    ],
)
def test_planted_file_link_is_refused(
    run_cli: RunCli, tmp_path: Path, manifest: Path, victim: Path, name: str
) -> None:
    """A symlink where the run keeps its lock, ledger (or a SQLite side file) or log:
    exit 2 naming it, and the file it points at is untouched."""
    out = tmp_path / "out"
    (out / ".bulkscribe").mkdir(parents=True)
    (out / name).symlink_to(victim)
    proc = run_cli("run", str(manifest), "--out", str(out))
    assert refused(proc, f"{out / name} is a symbolic link"), proc.stderr
    assert untouched(victim)
    assert (out / name).is_symlink()  # left for the operator to look at


def test_planted_state_dir_link_is_refused(run_cli: RunCli, tmp_path: Path, manifest: Path) -> None:
    """.bulkscribe itself a link to a directory elsewhere: refused, nothing lands there."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / ".bulkscribe").symlink_to(elsewhere, target_is_directory=True)
    proc = run_cli("run", str(manifest), "--out", str(out))
    assert refused(proc, f"{out / '.bulkscribe'} is a symbolic link"), proc.stderr
    assert list(elsewhere.iterdir()) == []


def test_planted_media_link_is_refused(run_cli: RunCli, tmp_path: Path, manifest: Path) -> None:
    """The media store under the state dir a link elsewhere: refused."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (out / ".bulkscribe").mkdir(parents=True)
    elsewhere.mkdir()
    (out / ".bulkscribe" / "media").symlink_to(elsewhere, target_is_directory=True)
    proc = run_cli("run", str(manifest), "--out", str(out))
    assert refused(proc, "media is a symbolic link"), proc.stderr
    assert list(elsewhere.iterdir()) == []


def test_scratch_link_inside_out_is_refused(
    run_cli: RunCli, tmp_path: Path, manifest: Path
) -> None:
    """A scratch directory configured inside --out that is a link elsewhere: refused."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "scratch").symlink_to(elsewhere, target_is_directory=True)
    proc = run_cli(
        "run",
        str(manifest),
        "--out",
        str(out),
        env={"BULKSCRIBE_SCRATCH_DIR": str(out / "scratch")},
    )
    assert refused(proc, f"{out / 'scratch'} is a symbolic link"), proc.stderr
    assert list(elsewhere.iterdir()) == []


def test_hard_linked_lock_is_refused(
    run_cli: RunCli, tmp_path: Path, manifest: Path, victim: Path
) -> None:
    """A hard link to an outside file as the lock (no symlink to see): refused all the same."""
    out = tmp_path / "out"
    (out / ".bulkscribe").mkdir(parents=True)
    os.link(victim, out / ".bulkscribe" / "lock")
    proc = run_cli("run", str(manifest), "--out", str(out))
    assert refused(proc, "hard links"), proc.stderr
    assert untouched(victim)


def test_fifo_lock_is_refused_without_hanging(
    run_cli: RunCli, tmp_path: Path, manifest: Path
) -> None:
    """A FIFO where the lock goes would block a plain open(); it is refused at once."""
    out = tmp_path / "out"
    (out / ".bulkscribe").mkdir(parents=True)
    os.mkfifo(out / ".bulkscribe" / "lock")
    proc = run_cli("run", str(manifest), "--out", str(out), timeout=60)
    assert refused(proc, "is not a regular file"), proc.stderr


def test_state_dir_of_another_user_is_refused(
    run_cli: RunCli, tmp_path: Path, manifest: Path
) -> None:
    """A .bulkscribe someone else created (and could fill with links later): refused."""
    out = tmp_path / "out"
    (out / ".bulkscribe").mkdir(parents=True)
    other = os.geteuid() + 4242
    os.chown(out / ".bulkscribe", other, other)
    proc = run_cli("run", str(manifest), "--out", str(out))
    assert refused(proc, f"belongs to uid {other}"), proc.stderr
    assert list((out / ".bulkscribe").iterdir()) == []


def test_results_link_is_replaced_not_followed(
    run_cli: RunCli, tmp_path: Path, manifest: Path, victim: Path
) -> None:
    """results.jsonl is written to a new file and renamed: a planted link there needs no
    refusal. The run goes on (exit 1: its items are missing files), the victim is
    untouched and results.jsonl is now a regular file of the run's own."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").symlink_to(victim)
    proc = run_cli("run", str(manifest), "--out", str(out))
    assert proc.returncode == 1, proc.stderr
    assert untouched(victim)
    assert not (out / "results.jsonl").is_symlink()
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["error"]["code"] for line in lines] == ["not_found"] * 2


def test_clean_run_keeps_its_state_private(run_cli: RunCli, tmp_path: Path, manifest: Path) -> None:
    """A normal run: the state dir is 0700 and the run's own, the lock names its pid."""
    out = tmp_path / "out"
    proc = run_cli("run", str(manifest), "--out", str(out))
    assert proc.returncode == 1, proc.stderr
    st = (out / ".bulkscribe").stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o700, os.geteuid())
    assert (out / ".bulkscribe" / "lock").read_text().startswith("pid ")
    assert (out / "bulkscribe.log").is_file()


@pytest.mark.parametrize(
    "where", ["/sys/kernel/bulkscribe-out", "/proc/1/bulkscribe-out", "below-a-file"]
)
def test_unwritable_out_is_a_usage_error(
    run_cli: RunCli, tmp_path: Path, manifest: Path, where: str
) -> None:
    """--out that cannot be created or written (root can write a chmod'ed directory, so
    /sys, /proc and a path below a regular file): exit 2, one line with the directory and
    the OS error, before any item is touched (no ledger anywhere)."""
    if where == "below-a-file":
        (tmp_path / "plain").write_text("a file\n")
        where = str(tmp_path / "plain" / "out")
    proc = run_cli("run", str(manifest), "--out", where)
    assert refused(proc, f"cannot write to the output directory {where}: [Errno "), proc.stderr
    assert not Path(where).exists()


def test_status_refuses_a_planted_ledger_link(
    run_cli: RunCli, tmp_path: Path, victim: Path
) -> None:
    """``status --out`` checks the state dir as ``run`` does before SQLite opens anything."""
    out = tmp_path / "out"
    (out / ".bulkscribe").mkdir(parents=True, mode=0o700)
    (out / ".bulkscribe" / "ledger.db").symlink_to(victim)
    proc = run_cli("status", "--out", str(out))
    assert refused(proc, "ledger.db is a symbolic link"), proc.stderr
    assert untouched(victim)


@pytest.mark.ffmpeg
@pytest.mark.model
def test_transcript_link_outside_fails_the_item_not_the_victim(
    run_cli: RunCli, tmp_path: Path, victim: Path
) -> None:
    """<id>.txt planted as a link to a file outside --out: that item fails with
    output_refused, nothing is written through the link, and the run finishes (exit 1)."""
    from support import ffmpeg

    tone = tmp_path / "tone.wav"
    ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-ar", "16000", str(tone)])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "tone", "source": str(tone)}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "tone.txt").symlink_to(victim)
    proc = run_cli("run", str(manifest), "--out", str(out))
    assert proc.returncode == 1, proc.stderr
    assert untouched(victim)
    assert (out / "tone.txt").is_symlink()
    line = json.loads((out / "results.jsonl").read_text())
    assert (line["status"], line["error"]["code"]) == ("FAILED", "output_refused")
    assert "tone.txt under" in line["error"]["message"]
