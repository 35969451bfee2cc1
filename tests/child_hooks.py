"""Hooks a test puts into a child `kaokore` process, to stop it at an exact point of its I/O.

Imported by the child (``python -c "import child_hooks; ..."`` with tests/ on its PYTHONPATH),
never by pytest. Each hook is switched on by an environment variable and wraps the lowest
layer Python offers kaokore for it: `open` (the file objects made from kaokore's own
descriptors), `os.open` (files read by descriptor, as verify reads images) and `os.write`.
A file is recognised by its name, read back from the descriptor.

KAOKORE_TEST_KILL_IN_WRITE="<regex> <n>"
    The n-th write to a file whose name matches <regex> (the temporary's name, or the final
    one if kaokore ever wrote there directly) writes half its bytes, then the process
    SIGKILLs itself: a power cut in the middle of that write.
KAOKORE_TEST_HOLD_OPEN="<regex> <marker> <release>"
    The first open of a file whose name matches <regex> creates the file <marker>, then waits
    (at most 60 s) until the file <release> exists: the process is caught in the middle of
    its work, where a signal can be sent to it.

Linux only (the names are read from /proc/self/fd).
"""
from __future__ import annotations

import builtins
import os
import re
import signal
import threading
import time

_KILL = os.environ.get("KAOKORE_TEST_KILL_IN_WRITE")
_HOLD = os.environ.get("KAOKORE_TEST_HOLD_OPEN")
_real_open = builtins.open
_real_os_open = os.open
_real_write = os.write
_lock = threading.Lock()
_seen = {"writes": 0, "held": False}


def _name(file) -> str:
    if isinstance(file, int):
        try:
            return os.path.basename(os.readlink(f"/proc/self/fd/{file}"))
        except OSError:
            return ""
    return os.path.basename(os.fspath(file)) if isinstance(file, (str, bytes, os.PathLike)) else ""


def _kill_now(fd: int, data) -> None:
    """Half the bytes reach the file, then the process dies: nothing after this line runs."""
    data = bytes(data)
    _real_write(fd, data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)


def _is_the_kill(name: str) -> bool:
    pattern, nth = _KILL.rsplit(" ", 1)
    if not re.search(pattern, name):
        return False
    with _lock:
        _seen["writes"] += 1
        return _seen["writes"] == int(nth)


class _Watched:
    """A file object whose writes are counted, and the chosen one cut halfway."""

    def __init__(self, file, name: str):
        self._file = file
        self._name = name

    def write(self, data):
        if _is_the_kill(self._name):
            self._file.flush()
            _kill_now(self._file.fileno(), data.encode() if isinstance(data, str) else data)
        return self._file.write(data)

    def __enter__(self):
        self._file.__enter__()
        return self

    def __exit__(self, *exc):
        return self._file.__exit__(*exc)

    def __iter__(self):
        return iter(self._file)

    def __getattr__(self, attr):
        return getattr(self._file, attr)


def _hold(name: str) -> None:
    pattern, marker, release = _HOLD.split(" ")
    with _lock:
        if _seen["held"] or not re.search(pattern, name):
            return
        _seen["held"] = True
    with _real_open(marker, "w"):
        pass
    deadline = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)  # where a Ctrl-C or SIGTERM sent to the main thread lands


def _open(file, mode="r", *args, **kwargs):
    name = _name(file)
    if _HOLD:
        _hold(name)
    opened = _real_open(file, mode, *args, **kwargs)
    if _KILL and any(m in mode for m in "wax+"):
        return _Watched(opened, name)
    return opened


def _os_open(path, flags, *args, **kwargs):
    if _HOLD:
        _hold(_name(path))
    return _real_os_open(path, flags, *args, **kwargs)


def _write(fd, data):
    if _KILL and _is_the_kill(_name(fd)):
        _kill_now(fd, data)
    return _real_write(fd, data)


if _KILL or _HOLD:
    builtins.open = _open
    os.write = _write
if _HOLD:
    os.open = _os_open
    # kaokore asks whether os.open takes dir_fd before using it that way: the wrapper does, as os.open.
    os.supports_dir_fd.add(_os_open)
