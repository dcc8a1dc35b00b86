"""Start-up time (`python -m sala_report.app.start_bench`): `sala-report --help`, and the terminal app's first
paint (from launch until the start screen's text reaches a pseudo-terminal), median of 5 fresh processes each.

Each is timed as it runs now and as it ran before the lazy start: every subcommand imported before `--help`,
and torch imported at launch (for the device label).
"""

from __future__ import annotations

import argparse
import os
import pty
import resource
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIRST_PAINT_MARKER = b"Question: what do you want to know?"  # a label of the start screen
EAGER_HELP = (
    "from sala_report.app.cli import _register_commands, main; _register_commands(); raise SystemExit(main(['--help']))"
)
TORCH_AT_START = "import torch; from sala_report.app.cli import main; raise SystemExit(main())"
LAZY_START = "from sala_report.app.cli import main; raise SystemExit(main())"


def time_help(code: str | None, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `--help`."""
    args = [sys.executable, "-c", code] if code else [sys.executable, "-m", "sala_report.app", "--help"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def time_first_paint(code: str, env: dict[str, str], timeout_s: float = 60.0) -> tuple[float, float]:
    """(wall seconds, CPU seconds) from launch until the start screen's text is written to the terminal;
    CPU time barely depends on the machine's load, wall time does."""
    import fcntl
    import termios

    start = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the app, on the pseudo-terminal
        os.execve(sys.executable, [sys.executable, "-c", code], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    seen = b""
    painted = None
    try:
        while time.perf_counter() - start < timeout_s:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
            if FIRST_PAINT_MARKER in seen:
                painted = time.perf_counter() - start
                break
    finally:
        os.kill(pid, signal.SIGKILL)
        _, _, usage = os.wait4(pid, 0)
        os.close(fd)
    if painted is None:
        raise RuntimeError(f"no first paint within {timeout_s} s; the terminal got: {seen[-300:]!r}")
    return painted, usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sala-start-bench-") as tmp:
        env = {
            **os.environ,
            "SALA_REPORT_HOME": str(Path(tmp) / "data"),
            "TERM": "xterm-256color",
            "SALA_REPORT_CONFIG": str(Path(tmp) / "none.toml"),
        }
        time_help(None, env)  # the first run writes bytecode and fills the disk cache; not counted
        rows = [
            (
                "sala-report --help",
                "before: every subcommand imported",
                [time_help(EAGER_HELP, env) for _ in range(args.repeats)],
            ),
            ("sala-report --help", "now: lazy subcommands", [time_help(None, env) for _ in range(args.repeats)]),
            (
                "terminal app first paint",
                "before: torch imported at launch",
                [time_first_paint(TORCH_AT_START, env) for _ in range(args.repeats)],
            ),
            (
                "terminal app first paint",
                "now: device label without torch",
                [time_first_paint(LAZY_START, env) for _ in range(args.repeats)],
            ),
        ]
    print(f"{'what':<26} | {'how':<36} | {'median s':>8} | {'min s':>6} | {'max s':>6} | {'CPU s':>6}")
    print("-" * 103)
    for what, how, runs in rows:
        wall = [w for w, _ in runs]
        cpu = statistics.median(c for _, c in runs)
        print(
            f"{what:<26} | {how:<36} | {statistics.median(wall):8.2f} | {min(wall):6.2f} | {max(wall):6.2f} | {cpu:6.2f}"
        )
    print(f"{args.repeats} fresh processes each; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
