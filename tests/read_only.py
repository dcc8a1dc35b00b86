"""Read-only files and folders for tests, real even as root: the child process that must not write gives up
root's power to ignore file modes (CI containers often run as root), so the kernel refuses its writes."""

from __future__ import annotations

import ctypes
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest


def _without_permission_overrides() -> None:
    """Runs in the child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set,
    which the exec that follows turns into a process without them."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_without_write_access(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """`args` run by a child for which file modes hold; stdout and stderr come back as text."""
    return subprocess.run(
        args, capture_output=True, text=True, timeout=120, preexec_fn=_without_permission_overrides, **kwargs
    )


@pytest.fixture
def read_only(tmp_path):
    """read_only(path) takes write permission away from a file or folder (given back after the test);
    skips where a child could still write it (a file system that ignores modes)."""
    taken: list[Path] = []

    def take(path: Path) -> None:
        path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
        taken.append(path)

    probe = tmp_path / "read-only-probe"
    probe.write_text("x")
    take(probe)
    if (
        run_without_write_access([sys.executable, "-c", "import sys; open(sys.argv[1], 'a')", str(probe)]).returncode
        == 0
    ):
        pytest.skip("a read-only file can still be written here")
    yield take
    for path in reversed(taken):
        path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o200)
