"""Reading DIR, and checking it, without ever reaching outside it through a symbolic link.

The rule: a symbolic link under DIR is followed only when it leads back inside DIR
(it can then reach nothing that is not DIR's own); one that leads outside DIR, or
nowhere, is never followed. `check_dir` refuses such a link among DIR's folders and
root files before a run writes anything. The operations below also hold to the rule
by themselves, whatever `check_dir` saw: a path is resolved first, then its folders
are opened one component at a time from DIR without following links, and the file
itself is created with O_EXCL|O_NOFOLLOW and replaced, moved or deleted by name
inside that folder (which acts on a link itself, never on what it points to). A link
planted or swapped in while a run goes can make one operation fail, never redirect it.

DIR itself may be a symbolic link: it is the path the user chose.
Paths relative to DIR are given with '/' separators. Writes are `safewrite`'s.
"""
from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import DirectoryError
from .walk import (
    AT_CALLS,
    BINARY,
    CLOEXEC,
    LEADS_OUTSIDE,
    NOFOLLOW,
    NONBLOCK,
    Pathish,
    entry,
    open_folder,
    real_folder,
    real_parts,
    regular_only,
    rel_parts,
    under,
)


class OutsideDir(DirectoryError):
    """A folder or root file of DIR is a symbolic link leading outside it: nothing is done there."""


@dataclass(frozen=True)
class Entry:
    """A name in a folder under DIR and what it is itself (links are not followed)."""

    name: str
    is_file: bool
    is_dir: bool
    is_link: bool


def inside(root: Pathish, path: Pathish) -> bool:
    """Whether `path` (relative to `root`, or absolute), with every symbolic link resolved,
    is `root` itself or lies under it. A missing path is judged by its existing part.

    Parameters
    ----------
    root : str or os.PathLike
        DIR; it may itself be a symbolic link.
    path : str or os.PathLike
        A path under DIR, relative to it or absolute.

    Returns
    -------
    bool
        False for a path that leads outside DIR through a link (or by '..').
    """
    return under(os.path.realpath(root), os.path.realpath(os.path.join(root, path)))


def check_dir(root: Pathish, folders: Iterable[str] = (), files: Iterable[str] = ()) -> None:
    """Refuse DIR if one of `folders` or `files` (relative to it) leads outside it.

    Called before a run writes anything, so a refusal leaves every file where it was.

    Raises
    ------
    OutsideDir
        Naming the first such path (by name) and the link that leads out.
    """
    for rel in sorted({*folders, *files}):
        if not inside(root, rel):
            link = _first_link_out(root, rel)
            raise OutsideDir(f"{os.path.join(str(root), *link.split('/'))!r} is {LEADS_OUTSIDE} "
                             f"{str(root)!r}; kaokore never writes outside DIR: remove the link or pass another --dir")


def read_file(root: Pathish, rel: str) -> bytes:
    """The bytes of `rel` under DIR; OSError (ELOOP) if it leads outside DIR."""
    with open_file(root, rel) as f:
        return f.read()


def open_file(root: Pathish, rel: str) -> BinaryIO:
    """`rel` under DIR opened for reading (a link leading inside DIR is followed, one leading outside is not)."""
    # O_NONBLOCK: a FIFO planted under a file's name must not hang the run in open().
    flags = os.O_RDONLY | NOFOLLOW | CLOEXEC | BINARY | NONBLOCK
    fd = None
    if AT_CALLS and rel_parts(rel):
        try:
            with entry(root, rel) as (at, name):
                fd = os.open(*at(name), flags, **at.kw)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            # A link on the way, or the file itself one: resolved, and followed only if it leads back inside DIR.
    if fd is None:
        real_root, parts = real_parts(root, rel, follow_last=True)
        name = parts.pop() if parts else "."
        with real_folder(real_root, parts) as at:
            fd = os.open(*at(name), flags, **at.kw)
    regular_only(fd, rel)
    return open(fd, "rb", closefd=True)


def same_file(root: Pathish, rel: str, fd: int) -> bool:
    """Whether `rel`'s entry under DIR is still the file open as `fd` (not deleted or replaced since)."""
    real_root, parts = real_parts(root, rel, follow_last=False)
    name = parts.pop()
    try:
        with real_folder(real_root, parts) as at:
            st = os.stat(*at(name), follow_symlinks=False, **at.kw)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


class TreeReader:
    """Reads many files under DIR, as `read_file` does, for a fraction of its system calls.

    `read_file` resolves DIR and the file's folder and enters the folder from DIR each time.
    Here each folder is entered once, the first time one of its files is read, and its files are
    then opened by name inside it without following a link: 4 system calls per file instead of
    about 15. A file that is itself a symbolic link is read by `read_file`, which follows it only
    if it leads back inside DIR; a folder that cannot be entered (a link leading outside DIR) is
    left to `read_file` too, which raises what it always raised. A folder swapped for a link
    while its files are being read is not followed: the folder entered first is the one read.
    Safe to use from several threads. Use as a context manager, or call `close`.
    """

    def __init__(self, root: Pathish):
        self.root = root
        self._folders: dict[str, int | None] = {}  # folder -> descriptor, None: left to read_file
        self._lock = threading.Lock()

    def __enter__(self) -> TreeReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, rel: str) -> bytes:
        """The bytes of `rel`, a file under DIR ('/' separators): `read_file`'s answer."""
        folder, _, name = rel.rpartition("/")
        fd = self._folder_fd(folder) if AT_CALLS and name not in ("", ".", "..") else None
        if fd is None:
            return read_file(self.root, rel)
        try:
            file = os.open(name, os.O_RDONLY | NOFOLLOW | CLOEXEC | BINARY | NONBLOCK, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link: followed only if it leads back inside DIR
                return read_file(self.root, rel)
            raise
        try:
            st = os.fstat(file)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", rel)
            # One read for the whole file: a regular file gives less than asked only at its end.
            data = os.read(file, st.st_size + 1)
            if len(data) > st.st_size:  # it grew since: read on to its end
                chunks = [data]
                while chunk := os.read(file, 1 << 20):
                    chunks.append(chunk)
                data = b"".join(chunks)
            return data
        finally:
            os.close(file)

    def _folder_fd(self, folder: str) -> int | None:
        with self._lock:
            if folder in self._folders:
                return self._folders[folder]
            fd = None
            try:
                with open_folder(self.root, folder or ".") as at:
                    fd = os.dup(at.fd)
            except OSError:
                fd = None  # read_file raises its own error for each file of it
            self._folders[folder] = fd
            return fd

    def close(self) -> None:
        with self._lock:
            for fd in self._folders.values():
                if fd is not None:
                    os.close(fd)
            self._folders.clear()


def scan(root: Pathish, rel: str = ".") -> list[Entry]:
    """What folder `rel` under DIR holds, by name; [] if it cannot be listed or leads outside DIR."""
    try:
        with open_folder(root, rel) as at:
            with os.scandir(at.fd if at.fd is not None else at.path) as it:
                return [Entry(e.name, e.is_file(follow_symlinks=False), e.is_dir(follow_symlinks=False),
                              e.is_symlink()) for e in it]
    except OSError:
        return []


def scan_names(root: Pathish, rel: str = ".") -> tuple[list[str], list[str]]:
    """`scan` as two lists of names, for folders of thousands of images: the regular files, and
    the folders and symbolic links; ([], []) if it cannot be listed or leads outside DIR."""
    files: list[str] = []
    others: list[str] = []
    try:
        with open_folder(root, rel) as at:
            with os.scandir(at.fd if at.fd is not None else at.path) as it:
                for e in it:
                    if e.is_file(follow_symlinks=False):
                        files.append(e.name)
                    elif e.is_dir(follow_symlinks=False) or e.is_symlink():
                        others.append(e.name)
    except OSError:
        return [], []
    return files, others


def _first_link_out(root: Pathish, rel: str) -> str:
    """The first component of `rel` that is a link leading outside DIR (`rel` itself if none is)."""
    parts = Path(rel).parts
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if os.path.islink(os.path.join(root, prefix)) and not inside(root, prefix):
            return prefix
    return "/".join(parts)
