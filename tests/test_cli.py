"""The feedsvc command as a user runs it: a real child process on real files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import SEED

CLI = [sys.executable, "-m", "feedsvc.cli"]


def run(
    tmp_path: Path, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run feedsvc with its data folder in tmp_path."""
    env = {"FEEDSVC_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [*CLI, "--config", str(Path(__file__).parent.parent / "config" / "feedsvc.toml"), *args],
        capture_output=True,
        input=stdin,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


def test_import_export_round_trips_byte_for_byte(tmp_path: Path) -> None:
    first = run(tmp_path, "import", str(SEED))
    assert first.returncode == 0, first.stderr
    assert b"imported 23 of 23" in first.stdout
    again = run(tmp_path, "import", str(SEED))
    assert b"imported 0 of 23" in again.stdout
    exported = run(tmp_path, "export")
    assert exported.returncode == 0
    assert exported.stdout == SEED.read_bytes()
    tail = run(tmp_path, "export", "--after", "20")
    assert tail.stdout == b"".join(SEED.read_bytes().splitlines(keepends=True)[20:])


def test_a_corrupt_line_names_its_number_and_imports_nothing(tmp_path: Path) -> None:
    lines = SEED.read_bytes().splitlines(keepends=True)
    broken = tmp_path / "broken.ndjson"
    broken.write_bytes(b"".join(lines[:5]) + b'{"position": 6, oops\n' + b"".join(lines[6:]))
    result = run(tmp_path, "import", str(broken))
    assert result.returncode == 2
    assert b"line 6" in result.stderr
    assert b"Traceback" not in result.stderr
    assert not (tmp_path / "data" / "feedsvc.sqlite3").exists() or (
        run(tmp_path, "export").stdout == b""
    )


def test_an_invalid_event_line_is_refused_naming_the_field(tmp_path: Path) -> None:
    lines = SEED.read_bytes().splitlines(keepends=True)
    bad = (
        lines[3].replace(b'"headline":"', b'"headline":"', 1).replace(b'"kind":"', b'"kind":"x', 1)
    )
    path = tmp_path / "bad.ndjson"
    path.write_bytes(b"".join([*lines[:3], bad, *lines[4:]]))
    result = run(tmp_path, "import", str(path))
    assert result.returncode == 2
    assert b"line 4" in result.stderr and b"/data/kind" in result.stderr


def test_check_passes_a_sound_log_and_reports_a_broken_one(tmp_path: Path) -> None:
    assert run(tmp_path, "import", str(SEED)).returncode == 0
    ok = run(tmp_path, "check")
    assert ok.returncode == 0 and b"23 events" in ok.stdout
    # break the log behind feedsvc's back: a gap and a bad event (INSERT is allowed)
    with sqlite3.connect(tmp_path / "data" / "feedsvc.sqlite3") as conn:
        conn.execute(
            "INSERT INTO events VALUES (30, 'x', 'ct-doj-section-1373-compliance', 40, "
            "'story.retitled', 1, '2017', '2017-10-13T00:00:00.000000Z', '{\"title\": \"\"}', '{}')"
        )
    bad = run(tmp_path, "check")
    assert bad.returncode == 1
    report = bad.stderr.decode()
    assert "position 30" in report
    assert "gap" in report and "expected version 24" in report and "/data/title" in report


def test_bad_database_paths_give_one_clear_line(tmp_path: Path) -> None:
    missing = run(tmp_path, "check")
    assert missing.returncode == 2
    assert missing.stderr.decode().count("\n") == 1 and b"does not exist" in missing.stderr
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "feedsvc.sqlite3").write_bytes(b"garbage" * 200)
    garbage = run(tmp_path, "export")
    assert garbage.returncode == 2 and b"not a feedsvc database" in garbage.stderr
    assert b"Traceback" not in garbage.stderr


def test_unwritable_data_folder_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o500)
    try:
        result = run(tmp_path, "import", str(SEED))
    finally:
        data.chmod(0o700)
    # root ignores permission bits; either it worked or it said why, never a traceback
    assert b"Traceback" not in result.stderr
    assert result.returncode == 0 or b"error" in result.stderr


def test_rebuild_reports_the_position_it_reached(tmp_path: Path) -> None:
    assert run(tmp_path, "import", str(SEED)).returncode == 0
    result = run(tmp_path, "rebuild")
    assert result.returncode == 0, result.stderr
    assert b"position 23" in result.stdout
    assert (tmp_path / "data" / "readmodel" / "current").read_text().startswith("gen-")
