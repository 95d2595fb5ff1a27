"""Hostile manifests and INPUTs: none may abort, hang or exhaust a run, or write outside --out.

Each case from the security review is run through the real ``bulkscribe run``: one line
nested 1,000 deep, a FIFO, /dev/zero, huge lines and options, ids long in bytes but short in
characters, binary files, misnamed media, a BOM, a newline in a file name, a symlink loop.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
from support import LIBRIVOX_DIR

EXE = Path(sys.executable).with_name("bulkscribe")
SPEECH = LIBRIVOX_DIR / "sense_and_sensibility_01_austen_64kb-0930.wav"  # "...amiable..."


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "BULKSCRIBE_WORKERS": "1", **(env or {})},
        timeout=timeout,
    )


def results(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def tree(root: Path, out: Path) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and out not in p.parents
    }


@pytest.fixture
def speech_server() -> Iterator[str]:
    """A loopback HTTP server answering every GET with the speech clip."""
    data = SPEECH.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.ffmpeg
@pytest.mark.model
def test_a_line_nested_1000_deep_fails_alone(tmp_path: Path) -> None:
    """A 2 KB line of JSON nested 1,000 deep is that line's manifest_invalid; the good line
    is transcribed and results.jsonl is written."""
    shutil.copyfile(SPEECH, tmp_path / "a.wav")
    deep = '{"source": "a.wav", "x": ' + "[" * 1000 + "]" * 1000 + "}"
    (tmp_path / "m.jsonl").write_text(deep + '\n{"source": "a.wav", "id": "good"}\n')
    proc = cli("run", "m.jsonl", "--out", "o", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    bad, good = results(tmp_path / "o")
    assert bad["status"] == "FAILED" and bad["error"] == {
        "code": "manifest_invalid",
        "message": "line 1: not valid JSON (nested too deep to parse)",
    }
    assert (good["id"], good["status"]) == ("good", "SUCCEEDED")


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "socket"])
def test_non_regular_inputs_exit_2_before_the_lock(tmp_path: Path, kind: str) -> None:
    """A FIFO (which would block for ever), /dev/zero (read until memory runs out) or a
    socket is refused at once with one error line and exit 2; --out is not even created."""
    if kind == "fifo":
        target = tmp_path / "m.jsonl"
        os.mkfifo(target)
    elif kind == "socket":
        import socket

        target = tmp_path / "s.list"
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(target))
    else:
        target = Path("/dev/zero")
    proc = cli("run", str(target), "--out", "o", cwd=tmp_path, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: cannot read")
    assert {"fifo": "a FIFO", "dev_zero": "a character device", "socket": "a socket"}[
        kind
    ] in proc.stderr
    assert not (tmp_path / "o").exists()


def test_huge_lines_and_options_are_capped(tmp_path: Path) -> None:
    """A 50 MB line and 20 KB of options each fail their line (never reaching the ledger);
    the ledger stays small."""
    with (tmp_path / "m.jsonl").open("w") as f:
        f.write('{"source": "a.wav", "note": "' + "x" * 50_000_000 + '"}\n')
        f.write(json.dumps({"source": "b.wav", "note": "y" * 20_000}) + "\n")
    proc = cli("run", "m.jsonl", "--out", "o", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    a, b = results(tmp_path / "o")
    assert a["error"] == {
        "code": "manifest_invalid",
        "message": "line 1: longer than the limit of 64 KiB",
    }
    assert b["error"]["code"] == "manifest_invalid"  # type: ignore[index]
    assert "over the limit of 16 KiB" in b["error"]["message"]  # type: ignore[index]
    assert (tmp_path / "o" / ".bulkscribe" / "ledger.db").stat().st_size < 1_000_000


def test_manifest_size_is_capped_by_a_setting(tmp_path: Path) -> None:
    """A manifest over manifest.max_bytes is refused with exit 2 before anything is written."""
    (tmp_path / "m.txt").write_text("a.wav\n" * 100)
    proc = cli(
        "run", "m.txt", "--out", "o", cwd=tmp_path, env={"BULKSCRIBE_MANIFEST__MAX_BYTES": "100"}
    )
    assert proc.returncode == 2
    assert (
        "over manifest.max_bytes" in proc.stderr and "BULKSCRIBE_MANIFEST__MAX_BYTES" in proc.stderr
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.ffmpeg
@pytest.mark.model
def test_ids_are_checked_in_bytes_before_any_work(tmp_path: Path, speech_server: str) -> None:
    """An explicit id of 128 CJK characters (384 bytes) is manifest_invalid before anything is
    transcribed; an id derived from a URL with a 600-byte name is shortened stably, and its
    outputs are written."""
    shutil.copyfile(SPEECH, tmp_path / "a.wav")
    long_name = "東" * 200
    url = f"{speech_server}/talks/{quote(long_name)}.wav"
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"id": "東" * 128, "source": "a.wav"}, ensure_ascii=False)
        + "\n"
        + json.dumps({"source": url})
        + "\n"
    )
    proc = cli("run", "m.jsonl", "--out", "o", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    explicit, derived = results(tmp_path / "o")
    assert explicit["error"]["code"] == "manifest_invalid"  # type: ignore[index]
    assert "at most 250 bytes" in explicit["error"]["message"]  # type: ignore[index]
    assert derived["status"] == "SUCCEEDED", derived
    item_id = str(derived["id"])
    name = item_id.split("/")[-1]
    assert item_id.startswith("talks/東") and len(name.encode()) <= 250
    assert "amiable" in (tmp_path / "o" / f"{item_id}.txt").read_text()
    log = (tmp_path / "o" / "bulkscribe.log").read_text()
    assert log.count('"transcribe.done"') == 1


@pytest.mark.ffmpeg
@pytest.mark.model
def test_bad_inputs_each_get_their_own_answer(tmp_path: Path) -> None:
    """A binary file named .txt, a recording named .txt, a manifest with a BOM, a file name
    with a newline and a folder holding a symlink loop, given together: the binary fails as
    not_media on its own line, the rest is transcribed once each, and nothing outside --out
    is written or lost."""
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 64)
    shutil.copyfile(SPEECH, tmp_path / "speech.txt")
    shutil.copyfile(SPEECH, tmp_path / "new\nline.wav")
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"id": "bom", "source": "speech.txt"}\n')
    loop = tmp_path / "folder"
    (loop / "sub").mkdir(parents=True)
    shutil.copyfile(SPEECH, loop / "sub" / "clip.wav")
    (loop / "sub" / "up").symlink_to(loop)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")  # already in --out: must survive
    before = tree(tmp_path, tmp_path / "o")
    proc = cli(
        "run",
        "blob.txt",
        "speech.txt",
        "bom.jsonl",
        "new\nline.wav",
        "folder",
        "--out",
        "o",
        "--formats",
        "json",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    got = {str(r["id"]): r for r in results(tmp_path / "o")}
    assert list(got) == ["blob", "speech", "bom", "new_line", "sub/clip"]
    assert got["blob"]["status"] == "FAILED"
    assert got["blob"]["error"]["code"] == "not_media"  # type: ignore[index]
    assert all(got[k]["status"] == "SUCCEEDED" for k in ("speech", "bom", "new_line", "sub/clip"))
    assert f"warning: skipped {loop}/sub/up: it leads to a directory already walked" in proc.stderr
    assert tree(tmp_path, tmp_path / "o") == before
    assert (tmp_path / "o" / "keep.txt").read_text() == "mine"


def test_unsafe_ids_never_reach_the_ledger_as_paths(tmp_path: Path) -> None:
    """Ids that would climb out of --out or name an absolute path fail as manifest_invalid,
    and no file appears outside --out."""
    rows = [{"id": i, "source": "a.wav"} for i in ("../x", "a/../../x", "/etc/x", "a//b", "a/")]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = tree(tmp_path, tmp_path / "o")
    proc = cli("run", "m.jsonl", "--out", "o", cwd=tmp_path)
    assert proc.returncode == 1
    assert [r["error"]["code"] for r in results(tmp_path / "o")] == (  # type: ignore[index]
        ["manifest_invalid"] * 5
    )
    assert tree(tmp_path, tmp_path / "o") == before
    with sqlite3.connect(tmp_path / "o" / ".bulkscribe" / "ledger.db") as db:
        assert {k for (k,) in db.execute("SELECT key FROM items")} == {
            f"@line{n}" for n in range(1, 6)
        }
