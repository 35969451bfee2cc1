"""The progress bar on real pseudo-terminals, including one that reports its size as 0x0."""
from __future__ import annotations

import os
import select
import struct
import subprocess
import sys

import pytest

termios = pytest.importorskip("termios", reason="pseudo-terminals need a POSIX system")
import fcntl  # noqa: E402  (POSIX only, like termios)
import pty  # noqa: E402

# Three images on one host, then the bar is closed; what the terminal shows is what tqdm drew.
CHILD = """
import sys
from kaokore.pipeline.report import Progress
progress = Progress({"host": 3}, stream=sys.stderr)
for _ in range(3):
    progress.advance("host", True)
progress.close()
"""


def run_on_terminal(rows: int, cols: int) -> str:
    """Run CHILD with stderr on a pseudo-terminal of the given size; return everything it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    try:
        child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=slave, env=env)
    finally:
        os.close(slave)
    shown = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                child.kill()
                pytest.fail(f"no output for 60 s; so far: {shown!r}")
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert child.wait(timeout=60) == 0, shown
    return shown.decode(errors="replace")


def last_frame(shown: str) -> str:
    """The bar as last drawn: tqdm redraws in place with carriage returns."""
    frames = [f for f in shown.replace("\r\n", "\n").replace("\n", "\r").split("\r") if f.strip()]
    assert frames, repr(shown)
    return frames[-1]


@pytest.mark.parametrize("rows, cols, width", [
    (0, 0, 80),  # a terminal reporting no size at all gets 80 columns
    (0, 100, 100),  # no rows: tqdm would hide the bar as below the screen
    (24, 40, 40),
    (24, 120, 120),
])
def test_every_terminal_shows_the_bar_within_its_width(rows, cols, width):
    frame = last_frame(run_on_terminal(rows, cols))
    assert frame.startswith("kaokore") and "3/3" in frame, frame
    assert len(frame) <= width
