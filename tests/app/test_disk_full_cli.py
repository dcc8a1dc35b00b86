"""`sala-report sources add` when the disk refuses a write: one clear message and exit 1 (no traceback), and
a store that still opens and passes its integrity check. The refusal is real: the child process runs under
a file-size limit (ulimit -f), so a write past it fails with EFBIG, which SQLite reports as a disk I/O error
(on a full disk it says SQLITE_FULL instead: tests/app/warp/test_disk_full.py)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

from sala_report.retrieval import Store

LIMIT_BYTES = 2 * 1024 * 1024


def _limited():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then comes up short instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_BYTES, LIMIT_BYTES))


def test_a_write_the_disk_refuses_during_ingest_gives_one_clear_error(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(40):  # about 4 MB of distinct text: more than the limit lets the store grow to
        words = " ".join(f"word{i}x{j} heat pump defrost cycle" for j in range(2500))
        (folder / f"note-{i:02d}.md").write_text(f"# Note {i}\n\n{words}\n", encoding="utf-8")
    home = Path(os.environ["SALA_REPORT_HOME"])
    proc = subprocess.run(
        [sys.executable, "-m", "sala_report.app", "sources", "add", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limited,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Error: Cannot write to the disk:" in proc.stderr and "Traceback" not in proc.stderr
    assert "resume ID" in proc.stderr
    store = Store.open(home / "sala.db")
    try:
        assert store.check_integrity() == []
        stored = store.sources()
        assert 0 < len(stored) < 40  # some documents were saved before the limit, each one whole
        assert all(s.chunk_count > 0 for s in stored if s.status == "ok")
    finally:
        store.close()
