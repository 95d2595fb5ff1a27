"""Credentials in source URLs: used for the fetch, never shown or stored for display.

A loopback server demands basic auth and a token; the real ``bulkscribe run`` fetches with
them, and then every file under --out, the ledger's display columns, stdout and stderr are
searched for the password and the token.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.inputs.manifest import display
from pipeline.log import redact_text, redact_url

BULKSCRIBE = Path(sys.executable).with_name("bulkscribe")
USER, PASSWORD = "archivist", "pw-Zq8vR2sK"
TOKEN = "tok-4f9c1e7a2b"
SIGNATURE = "sig-77aa90Xq"


@pytest.fixture
def guarded_server(harvard_wav: Path) -> Iterator[tuple[str, Counter[str]]]:
    """Serves harvard.wav at /talk.wav only with basic auth and ?token=TOKEN; 403 else."""
    data = harvard_wav.read_bytes()
    hits: Counter[str] = Counter()
    expected_auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            authorised = self.headers.get(
                "Authorization"
            ) == expected_auth and f"token={TOKEN}" in query.split("&")
            hits[f"{path}:{'ok' if authorised else 'refused'}"] += 1
            if not authorised:
                self.send_error(403)
            elif path == "/talk.wav":
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_redact_url_masks_user_info_and_secret_parameters() -> None:
    """User info and secret query values become ***; other parameters and the rest of the
    URL stay byte for byte, and a URL with nothing secret is unchanged."""
    url = (
        f"https://{USER}:{PASSWORD}@media.example/a%20b.wav?token={TOKEN}&lang=en"
        f"&X-Amz-Signature={SIGNATURE}&X-Amz-Credential=AKIA/x&X-Amz-Date=20260101"
        f"&Expires=17&Signature={SIGNATURE}&OSSAccessKeyId=LTAI&security-token=st&sig=s"
        f"&access_token=a&API_KEY=k#frag"
    )
    assert redact_url(url) == (
        "https://***@media.example/a%20b.wav?token=***&lang=en&X-Amz-Signature=***"
        "&X-Amz-Credential=***&X-Amz-Date=20260101&Expires=17&Signature=***"
        "&OSSAccessKeyId=***&security-token=***&sig=***&access_token=***&API_KEY=***#frag"
    )
    for plain in (
        "https://media.example/a.wav?lang=en&x",
        "/data/a.wav",
        "s3://b/k.wav",
        "file:///data/a.wav",
        "http://host/?token=",
    ):
        assert redact_url(plain) == plain
    assert display(url) == redact_url(url)
    text = f"failed: http://u:{PASSWORD}@h/x?token={TOKEN} (HTTP 403)"
    assert PASSWORD not in redact_text(text) and TOKEN not in redact_text(text)


def _walk(out: Path) -> Iterator[Path]:
    for path in sorted(out.rglob("*")):
        if path.is_file():
            yield path


@pytest.mark.ffmpeg
@pytest.mark.model
def test_credentials_are_used_for_the_fetch_and_never_shown(
    tmp_path: Path, guarded_server: tuple[str, Counter[str]]
) -> None:
    """The run fetches with the URL's credentials; neither the password nor the token nor
    the signature appears in any output file, log, display column of the ledger, stdout or
    stderr. Only the ledger's items.source column keeps the fetchable URL."""
    host, hits = guarded_server
    good = f"http://{USER}:{PASSWORD}@{host}/talk.wav?token={TOKEN}&Signature={SIGNATURE}"
    gone = f"http://{USER}:{PASSWORD}@{host}/gone.wav?token={TOKEN}&Signature={SIGNATURE}"
    refused = f"http://{USER}:wrong@{host}/talk.wav?token={TOKEN}&Signature={SIGNATURE}"
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in (
                {"id": "talk", "source": good},
                {"id": "gone", "source": gone},
                {"id": "refused", "source": refused},
            )
        )
    )
    out = tmp_path / "out"
    env = {**os.environ, "BULKSCRIBE_RETRY__BACKOFF_BASE_S": "0.1"}
    runs = [
        subprocess.run(
            [str(BULKSCRIBE), "run", str(manifest), "--out", str(out), *flags],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        for flags in (["-vv"], ["--json", "--retry-failed"])
    ]
    assert hits["/talk.wav:ok"] == 1  # the fetch used the credentials
    assert hits["/talk.wav:refused"] == 2  # 'refused' once per run: 403 is permanent
    results = {
        json.loads(line)["id"]: json.loads(line)
        for line in (out / "results.jsonl").read_text().splitlines()
    }
    assert results["talk"]["status"] == "SUCCEEDED", results
    assert (results["gone"]["error"]["code"], results["refused"]["error"]["code"]) == (
        "not_found",
        "download_failed",
    )
    shown = f"http://***@{host}/talk.wav?token=***&Signature=***"
    assert results["talk"]["source"] == shown
    assert json.loads((out / "talk.json").read_text())["file_url"] == shown
    assert "/gone.wav?token=***" in results["gone"]["error"]["message"]

    secrets = (PASSWORD, TOKEN, SIGNATURE)
    for run in runs:
        for secret in secrets:
            assert secret not in run.stdout and secret not in run.stderr, secret
    assert "talk" in runs[0].stderr or "talk" in runs[0].stdout  # -vv did log the items
    checked = []
    for path in _walk(out):
        if path.name.startswith("ledger.db"):
            continue  # SQLite: checked column by column below
        data = path.read_bytes()
        checked.append(path.name)
        for secret in secrets:
            assert secret.encode() not in data, (path, secret)
    assert {
        "results.jsonl",
        "talk.json",
        "talk.txt",
        "talk.srt",
        "talk.vtt",
        "bulkscribe.log",
    } <= set(checked)
    assert "***" in (out / "bulkscribe.log").read_text()

    db = sqlite3.connect(f"file:{out / '.bulkscribe' / 'ledger.db'}?mode=ro", uri=True)
    try:
        for table in ("batches", "items", "attempts"):
            columns = [c[1] for c in db.execute(f"PRAGMA table_info({table})")]
            for row in db.execute(f"SELECT * FROM {table}"):
                for column, value in zip(columns, row, strict=True):
                    if (table, column) == ("items", "source"):
                        continue
                    for secret in secrets:
                        assert secret not in str(value), (table, column, value)
        fetchable = {k: s for k, s in db.execute("SELECT key, source FROM items")}
    finally:
        db.close()
    assert fetchable["talk"] == good  # the one column kept fetchable, for any worker


def test_new_credentials_are_a_new_attempt_but_never_stored_for_display() -> None:
    """Two manifest lines differing only in their token have the same (masked) spec but
    different fingerprints, so a rotated token is fetched, not the stale one."""
    from pipeline.inputs.batches import seeds_for
    from pipeline.models import ManifestItem

    seeds = [
        seeds_for(
            [ManifestItem(item_id="a", source=f"https://h/a.wav?token={t}", line_no=1)],
            engine="local",
            model="tiny.en",
            language=None,
        )[0]
        for t in ("old-tok", "new-tok")
    ]
    assert seeds[0].spec == seeds[1].spec and seeds[0].spec["source"] == "https://h/a.wav?token=***"
    assert seeds[0].fingerprint != seeds[1].fingerprint
    assert [s.source for s in seeds] == [
        "https://h/a.wav?token=old-tok",
        "https://h/a.wav?token=new-tok",
    ]
