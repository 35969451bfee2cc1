"""The run lock: one download at a time holds DIR.

Two runs in one DIR (say, CI jobs sharing a cache) would double the load on every
server and sweep each other's temporary files. The lock is an OS lock (flock) on
DIR/.kaokore.lock, which stays in DIR for good: a lock file deleted while held lets
a newcomer lock a fresh file of the same name while the old holder still runs.
The OS drops the lock when its holder exits or dies, so a killed run never leaves
DIR locked. A holder also checks that the file it locked is still the one DIR
names, so even a lock file deleted by hand cannot let two runs in.

`kaokore verify` and `kaokore info` only look (`refuse_while_held`): a tree being
downloaded is half written, and a report on it would be wrong a moment later.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DirectoryError
from .safefs import same_file
from .safewrite import open_fd

LOCK = ".kaokore.lock"
# Someone only looking (verify, info) holds the lock shared for microseconds; a download
# that meets only such lookers waits them out rather than refusing. Bounded, never a hang.
LOOKER_WAIT_TRIES = 200
LOOKER_WAIT_STEP = 0.005


class Busy(DirectoryError):
    """Another run holds DIR."""


@contextmanager
def exclusive(root: str | os.PathLike) -> Iterator[None]:
    """Hold DIR for the duration of the block.

    Raises
    ------
    Busy
        Another download holds DIR.
    DirectoryError
        The lock file cannot be opened (a symbolic link, say: it is never followed).
    """
    root = Path(root)
    for _ in range(LOOKER_WAIT_TRIES):
        fd = _open(root, os.O_RDWR | os.O_CREAT)
        try:
            held = _lock(fd, exclusive=True)
            if held and same_file(root, LOCK, fd):
                break
            if not held and not _only_lookers(fd):
                raise Busy(f"another kaokore download is using {str(root)!r}; "
                           "wait for it to finish or pass another --dir")
        except BaseException:
            os.close(fd)
            raise
        # Locked a file that was deleted or replaced meanwhile, or met a looker: again, on what DIR names now.
        os.close(fd)
        time.sleep(LOOKER_WAIT_STEP)
    else:
        raise Busy(f"cannot take the lock of {str(root)!r}: {LOCK} keeps changing or being looked at")
    try:
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays, see the module docstring


def is_held(root: str | os.PathLike) -> bool:
    """Whether a download holds DIR right now; never waits, never creates anything."""
    try:
        fd = _open(Path(root), os.O_RDONLY, create=False)
    except (FileNotFoundError, DirectoryError):
        return False
    try:
        if _lock(fd, exclusive=False):
            _unlock(fd)
            return False
        return True
    finally:
        os.close(fd)


def refuse_while_held(root: str | os.PathLike) -> None:
    """Raise `Busy` if a download holds DIR: for the commands that read a tree."""
    if is_held(root):
        raise Busy(f"a kaokore download is running in {str(root)!r}; run this again when it has finished")


def _open(root: Path, flags: int, create: bool = True) -> int:
    try:
        return open_fd(root, LOCK, flags, 0o644)
    except FileNotFoundError:
        if not create:
            raise
        raise DirectoryError(f"cannot use {str(root)!r} as the dataset directory: it does not exist") from None
    except OSError as exc:
        # ELOOP: a link planted as the lock file; it is never followed, and never deleted
        # either (deleting what may be another run's lock is the race this module avoids).
        reason = "it is a symbolic link" if os.path.islink(root / LOCK) else (exc.strerror or str(exc))
        raise DirectoryError(f"cannot use {str(root / LOCK)!r} as the lock of {str(root)!r}: {reason}; "
                             "remove it if no kaokore download is running") from None


def _lock(fd: int, exclusive: bool) -> bool:
    """Try the lock without waiting; whether it was taken."""
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK if exclusive else msvcrt.LK_NBRLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlock(fd: int) -> None:
    if os.name == "nt":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


def _only_lookers(fd: int) -> bool:
    """After the exclusive lock was refused: whether only lookers hold it (a shared lock is then
    still granted), as opposed to a download (which holds it exclusively)."""
    if not _lock(fd, exclusive=False):
        return False
    _unlock(fd)
    return True


__all__ = ["Busy", "LOCK", "exclusive", "is_held", "refuse_while_held"]
