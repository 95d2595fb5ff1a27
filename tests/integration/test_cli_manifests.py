"""The CLI's other manifest formats (CSV, plain list, directory) and its usage errors (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from e2e import read_results

pytestmark = [pytest.mark.ffmpeg, pytest.mark.usefixtures("one_worker")]


@pytest.mark.model
def test_csv_manifest(media, run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A CSV with id/source/start_s/channel columns and an empty cell runs item by item."""
    csv = tmp_path / "batch.csv"
    csv.write_text(
        "id,source,start_s,channel\n"
        f"right,{media['stereo']},,1\n"
        f"trim,{media['lv_0890']},1.0,\n"
        f"nothing,{tmp_path / 'absent.wav'},,\n"
    )
    proc = run_cli("run", str(csv), "--out", str(tmp_path / "out"), "--formats", "json,txt")
    assert proc.returncode == 1, proc.stderr
    results = read_results(tmp_path / "out")
    assert [(r["id"], r["status"]) for r in results] == [
        ("right", "SUCCEEDED"),
        ("trim", "SUCCEEDED"),
        ("nothing", "FAILED"),
    ]
    assert results[2]["error"]["code"] == "not_found"
    doc = json.loads((tmp_path / "out" / "trim.json").read_text())
    assert doc["transcripts"][0]["sentences"][0]["begin_time"] >= 1000
    assert (tmp_path / "out" / "right.txt").read_text().strip()


@pytest.mark.model
def test_plain_list_manifest_with_a_non_utf8_name(media, run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A list file naming b"caf\\xe9.wav" as raw bytes transcribes it with id "caf_"."""
    cafe = os.path.join(os.fsencode(tmp_path), b"caf\xe9.wav")
    shutil.copyfile(media["lv_0930"], cafe)
    listing = tmp_path / "files.txt"
    listing.write_bytes(
        b"# recordings\n"
        + os.path.basename(cafe)
        + b"\n\n"
        + str(media["lv_0880"]).encode()
        + b"\n"
    )
    proc = run_cli("run", str(listing), "--out", str(tmp_path / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    results = read_results(tmp_path / "out")  # strict UTF-8 even though the name is not
    # A path outside the list's directory keeps all its components in its id.
    outside = str(media["lv_0880"].with_suffix("")).lstrip("/")
    assert [(r["id"], r["status"]) for r in results] == [
        ("caf_", "SUCCEEDED"),
        (outside, "SUCCEEDED"),
    ]
    assert results[0]["source"].endswith("caf\\xe9.wav")
    assert "amiable" in (tmp_path / "out" / "caf_.txt").read_text()


@pytest.mark.model
def test_directory_manifest(media, run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A directory is walked for media files (hidden and non-media skipped), in byte order,
    its tree mirrored in the ids."""
    tree = tmp_path / "archive"
    (tree / "2019").mkdir(parents=True)
    (tree / ".cache").mkdir()
    shutil.copyfile(media["lv_m4a"], tree / "b-talk.m4a")
    shutil.copyfile(media["lv_0930"], tree / "2019" / "a-talk.wav")
    shutil.copyfile(media["lv_0930"], tree / ".cache" / "hidden.wav")
    (tree / "notes.pdf").write_bytes(b"%PDF-1.4")
    proc = run_cli("run", str(tree), "--out", str(tmp_path / "out"), "--formats", "json")
    assert proc.returncode == 0, proc.stderr
    results = read_results(tmp_path / "out")
    assert [(r["id"], r["status"]) for r in results] == [
        ("2019/a-talk", "SUCCEEDED"),
        ("b-talk", "SUCCEEDED"),
    ]
    assert (tmp_path / "out" / "2019" / "a-talk.json").is_file()
    assert results[0]["source"] == str(tree / "2019" / "a-talk.wav")


def test_missing_manifest_is_a_usage_error(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A manifest path that does not exist exits 2 naming it, and creates no output dir."""
    proc = run_cli("run", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "nope.jsonl" in proc.stderr and "No such file or directory" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args", [["--bogus"], ["--workers", "0"], ["--formats", "json,docx"], ["--engine", "whisperx"]]
)
def test_bad_options_are_usage_errors(run_cli, tmp_path: Path, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    """An unknown option, or an option value out of range, exits 2 with a message."""
    manifest = tmp_path / "m.txt"
    manifest.write_text("a.wav\n")
    proc = run_cli("run", str(manifest), "--out", str(tmp_path / "out"), *args)
    assert proc.returncode == 2, proc.stderr
    assert "Error:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_unreadable_csv_is_a_usage_error(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A CSV without a source column cannot be read at all: exit 2 naming the file."""
    csv = tmp_path / "batch.csv"
    csv.write_text("id,path\na,a.wav\n")
    proc = run_cli("run", str(csv), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert str(csv) in proc.stderr and "'source'" in proc.stderr


def test_missing_model_directory_is_a_usage_error(media, run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--model naming a directory that does not exist exits 2 before any item is worked on."""
    manifest = tmp_path / "m.txt"
    manifest.write_text(f"{media['lv_0930']}\n")
    proc = run_cli(
        "run", str(manifest), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "no-model")
    )
    assert proc.returncode == 2
    assert f"model directory {tmp_path / 'no-model'} does not exist" in proc.stderr


def test_status_of_a_directory_without_a_run(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`bulkscribe status --out DIR` on a directory no run used exits 2 saying so."""
    proc = run_cli("status", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "holds no bulkscribe run" in proc.stderr


def test_undecodable_settings_env_is_a_usage_error(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An environment value pydantic cannot decode exits 2 with a message, not a traceback."""
    manifest = tmp_path / "m.txt"
    manifest.write_text("a.wav\n")
    proc = run_cli(
        "run", str(manifest), "--out", str(tmp_path / "out"), env={"BULKSCRIBE_LOCAL": "notjson"}
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "local" in proc.stderr.lower()
