"""File operations under DIR that never reach outside it through a symbolic link.

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
Paths relative to DIR are given with '/' separators.
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import DirectoryError

TMP_SUFFIX = ".kaokore-tmp"
LEADS_OUTSIDE = "a symbolic link leading outside DIR"
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
# Without *at() calls (Windows) paths are resolved and checked, then used by name: the
# check still refuses links leading outside, but a link swapped in between is not caught.
_AT = (hasattr(os, "O_DIRECTORY") and bool(_NOFOLLOW) and os.scandir in os.supports_fd
       and {os.open, os.mkdir, os.rmdir, os.unlink, os.rename, os.stat} <= os.supports_dir_fd)

Pathish = str | os.PathLike


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
    return _under(os.path.realpath(root), os.path.realpath(os.path.join(root, path)))


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


def make_folder(root: Pathish, rel: str) -> None:
    """Create folder `rel` under DIR and its parents, as `mkdir -p` would, without leaving DIR."""
    with _inside(root, rel, create=True):
        pass


def write_file(root: Pathish, rel: str, data: bytes, durable: bool = False) -> None:
    """Write `data` as `rel` under DIR all at once or not at all.

    The bytes go to a new temporary in the same folder (created with O_EXCL, so never
    through a link), which then replaces `rel`'s entry: a link or a hard link at `rel`
    is replaced, never written through. `durable` also syncs the bytes to the disk.
    """
    try:
        _write_file(root, rel, data, durable)
    except OSError as exc:
        # A temporary's bare name (opened by dir_fd) tells the user nothing: name the file written.
        exc.filename = os.path.join(str(root), *_parts(rel))
        raise


def _write_file(root: Pathish, rel: str, data: bytes, durable: bool) -> None:
    with _entry(root, rel) as (at, name):
        tmp = f".{name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        fd = os.open(*at(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY, 0o644,
                     **at.kw)
        try:  # from here the temporary is ours to remove
            with open(fd, "wb", closefd=True) as f:
                f.write(data)
                if durable:
                    # Bookkeeping survives a power cut; images need not, the manifest re-checks them.
                    f.flush()
                    os.fsync(f.fileno())
            at.replace(tmp, at, name)
        except BaseException:
            _unlink_quietly(at, tmp)
            raise


def link_file(src_root: Pathish, src_rel: str, root: Pathish, rel: str, accept: Callable[[bytes], bool]) -> bool:
    """Make `rel` under DIR a hard link to `src_rel` under another tree, `src_root`, if `accept`
    takes its bytes; whether it did.

    The source is reached as `open_file` reaches a file under its own root: a link leading
    outside `src_root` is never followed, and nothing there is written. The new name is first a
    temporary in `rel`'s folder (a link made there never replaces anything), whose bytes are
    the ones `accept` judges; only then does it replace `rel`'s entry, so what lands is exactly
    what was judged, and a link at `rel` is replaced, never written through.

    Raises
    ------
    OSError
        No link could be made: EXDEV when the two are on different filesystems, EPERM where
        the system forbids linking another user's file; the caller copies instead. ELOOP for
        a source that leads outside `src_root`, ENOENT for one that is not there.
    """
    try:
        return _link_file(src_root, src_rel, root, rel, accept)
    except OSError as exc:
        exc.filename = os.path.join(str(src_root), *_parts(src_rel))
        raise


def _link_file(src_root: Pathish, src_rel: str, root: Pathish, rel: str, accept: Callable[[bytes], bool]) -> bool:
    src_real, src_parts = _resolve(src_root, src_rel, follow_last=True)
    src_name = src_parts.pop()
    real_root, parts = _resolve(root, rel, follow_last=False)
    name = parts.pop()
    tmp = f".{name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    with _folder(src_real, src_parts) as src, _folder(real_root, parts) as at:
        # Never the target of a link swapped in at the source's name: the link itself would be linked,
        # and opening it below (O_NOFOLLOW) fails.
        nofollow = {"follow_symlinks": False} if os.link in os.supports_follow_symlinks else {}
        if src.fd is not None and at.fd is not None and os.link in os.supports_dir_fd:
            os.link(src_name, tmp, src_dir_fd=src.fd, dst_dir_fd=at.fd, **nofollow)
        else:
            os.link(os.path.join(src.path, src_name), os.path.join(at.path, tmp), **nofollow)
        try:
            fd = os.open(*at(tmp), os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _BINARY | _NONBLOCK, **at.kw)
            _regular_only(fd, tmp)
            with open(fd, "rb", closefd=True) as f:
                data = f.read()
            if not accept(data):
                os.unlink(*at(tmp), **at.kw)
                return False
            at.replace(tmp, at, name)
        except BaseException:
            _unlink_quietly(at, tmp)
            raise
    return True


def _unlink_quietly(at: _At, tmp: str) -> None:
    """Remove a temporary of ours after a failure, which is the error worth reporting, not this."""
    try:
        os.unlink(*at(tmp), **at.kw)
    except OSError:
        pass


def update_file(root: Pathish, rel: str, data: bytes, durable: bool = False) -> bool:
    """`write_file`, unless `rel` already holds exactly `data`; whether it wrote.

    A rerun of a complete tree rewrites nothing, so it also completes on a full disk."""
    try:
        if _holds(root, rel, data):
            return False
    except OSError:
        pass  # absent, a link leading outside, not a regular file: written (replaced) below
    write_file(root, rel, data, durable)
    return True


def _holds(root: Pathish, rel: str, data: bytes) -> bool:
    """Whether `rel` holds exactly `data`: its size first, then 1 MiB at a time (no second copy in memory)."""
    view = memoryview(data)
    with open_file(root, rel) as f:
        if os.fstat(f.fileno()).st_size != len(data):
            return False
        at = 0
        while block := f.read(1 << 20):
            if view[at:at + len(block)] != block:
                return False
            at += len(block)
        return at == len(data)


def read_file(root: Pathish, rel: str) -> bytes:
    """The bytes of `rel` under DIR; OSError (ELOOP) if it leads outside DIR."""
    with open_file(root, rel) as f:
        return f.read()


def open_file(root: Pathish, rel: str) -> BinaryIO:
    """`rel` under DIR opened for reading (a link leading inside DIR is followed, one leading outside is not)."""
    # O_NONBLOCK: a FIFO planted under a file's name must not hang the run in open().
    flags = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _BINARY | _NONBLOCK
    fd = None
    if _AT and _parts(rel):
        try:
            with _entry(root, rel) as (at, name):
                fd = os.open(*at(name), flags, **at.kw)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            # A link on the way, or the file itself one: resolved, and followed only if it leads back inside DIR.
    if fd is None:
        real_root, parts = _resolve(root, rel, follow_last=True)
        name = parts.pop() if parts else "."
        with _folder(real_root, parts) as at:
            fd = os.open(*at(name), flags, **at.kw)
    _regular_only(fd, rel)
    return open(fd, "rb", closefd=True)


def _regular_only(fd: int, rel: Pathish) -> None:
    """Close `fd` and raise unless it is a regular file (a FIFO, device or socket is nobody's data)."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", os.fspath(rel))
    if _NONBLOCK:
        os.set_blocking(fd, True)


def open_fd(root: Pathish, rel: str, flags: int, mode: int = 0o644) -> int:
    """A descriptor for `rel` under DIR opened with `flags`, never through a link at any component
    (at the last one: OSError ELOOP). For files kaokore keeps open itself, like the run lock."""
    with _entry(root, rel) as (at, name):
        fd = os.open(*at(name), flags | _NOFOLLOW | _CLOEXEC | _BINARY | _NONBLOCK, mode, **at.kw)
    _regular_only(fd, rel)
    return fd


def same_file(root: Pathish, rel: str, fd: int) -> bool:
    """Whether `rel`'s entry under DIR is still the file open as `fd` (not deleted or replaced since)."""
    real_root, parts = _resolve(root, rel, follow_last=False)
    name = parts.pop()
    try:
        with _folder(real_root, parts) as at:
            st = os.stat(*at(name), follow_symlinks=False, **at.kw)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def remove_file(root: Pathish, rel: str) -> bool:
    """Delete `rel`'s entry under DIR (a link itself, never its target). False if it was not there."""
    try:
        with _entry(root, rel) as (at, name):
            os.unlink(*at(name), **at.kw)
    except FileNotFoundError:
        return False
    return True


def move_file(root: Pathish, src_rel: str, dst_rel: str) -> None:
    """Rename `src_rel` to `dst_rel` under DIR, replacing `dst_rel`'s entry; `dst_rel`'s folder is created."""
    real_root, src_parts = _resolve(root, src_rel, follow_last=False)
    _, dst_parts = _resolve(root, dst_rel, follow_last=False)
    src_name, dst_name = src_parts.pop(), dst_parts.pop()
    with _folder(real_root, src_parts) as src, _folder(real_root, dst_parts, create=True) as dst:
        src.replace(src_name, dst, dst_name)


def remove_folder(root: Pathish, rel: str) -> bool:
    """Remove `rel` under DIR if it is an empty folder (a link to a folder is left alone). False if not removed."""
    real_root, parts = _resolve(root, rel, follow_last=False)
    name = parts.pop()
    try:
        with _folder(real_root, parts) as at:
            os.rmdir(*at(name), **at.kw)
    except OSError:
        return False
    return True


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
        fd = self._folder_fd(folder) if _AT and name not in ("", ".", "..") else None
        if fd is None:
            return read_file(self.root, rel)
        try:
            file = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _BINARY | _NONBLOCK, dir_fd=fd)
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
                with _inside(self.root, folder or ".") as at:
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
        with _inside(root, rel) as at:
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
        with _inside(root, rel) as at:
            with os.scandir(at.fd if at.fd is not None else at.path) as it:
                for e in it:
                    if e.is_file(follow_symlinks=False):
                        files.append(e.name)
                    elif e.is_dir(follow_symlinks=False) or e.is_symlink():
                        others.append(e.name)
    except OSError:
        return [], []
    return files, others


# --- internals -------------------------------------------------------------------------------

def _under(real_root: str, real: str) -> bool:
    real_root, real = os.path.normcase(real_root), os.path.normcase(real)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _parts(rel: str | os.PathLike) -> list[str]:
    parts = [p for p in Path(rel).parts if p != "."]
    if Path(rel).is_absolute() or ".." in parts:
        # Callers build these paths themselves; one that climbs out is refused, not followed.
        raise OSError(errno.EINVAL, "not a path inside DIR", os.fspath(rel))
    return parts


def _resolve(root: Pathish, rel: str, *, follow_last: bool) -> tuple[str, list[str]]:
    """DIR's real path, and the components below it of where `rel` really is: with its links
    resolved, all of them (`follow_last`) or all but the last (the entry acted on itself)."""
    parts = _parts(rel)
    if not parts and not follow_last:
        raise OSError(errno.EINVAL, "not a file inside DIR", os.fspath(rel))
    real_root = os.path.realpath(root)
    followed = parts if follow_last else parts[:-1]
    real = os.path.realpath(os.path.join(real_root, *followed)) if followed else real_root
    if not _under(real_root, real):
        raise OSError(errno.ELOOP, LEADS_OUTSIDE, os.path.join(str(root), *parts))
    below = [p for p in os.path.relpath(real, real_root).split(os.sep) if p != "."]
    return real_root, below if follow_last else [*below, parts[-1]]


@contextmanager
def _entry(root: Pathish, rel: str) -> Iterator[tuple[_At, str]]:
    """The folder holding `rel`'s entry, entered from DIR without following a link, and the entry's
    name: the entry itself is not followed (it is created, replaced, removed or opened O_NOFOLLOW)."""
    parts = _parts(rel)
    if not parts:
        raise OSError(errno.EINVAL, "not a file inside DIR", os.fspath(rel))
    fd = _plain_walk(root, parts[:-1])
    if fd is not None:
        try:
            yield _At(fd, os.path.join(root, *parts[:-1])), parts[-1]
        finally:
            os.close(fd)
        return
    real_root, below = _resolve(root, rel, follow_last=False)
    name = below.pop()
    with _folder(real_root, below) as at:
        yield at, name


@contextmanager
def _inside(root: Pathish, rel: str, create: bool = False) -> Iterator[_At]:
    """Folder `rel` under DIR entered (created first with `create`), a link on the way followed only
    if it leads back inside DIR."""
    parts = _parts(rel)
    fd = _plain_walk(root, parts, create)
    if fd is not None:
        try:
            yield _At(fd, os.path.join(root, *parts))
        finally:
            os.close(fd)
        return
    real_root, below = _resolve(root, rel, follow_last=True)
    with _folder(real_root, below, create) as at:
        yield at


def _plain_walk(root: Pathish, parts: list[str], create: bool = False) -> int | None:
    """A descriptor of DIR/parts when no component is a link, entered one component at a time
    with O_NOFOLLOW; None when one is (or is no folder): then `_resolve` finds where it leads.
    Every DIR has this common case: it saves resolving DIR's and the folder's real paths
    (an lstat per component of each) for every file."""
    if not _AT:
        return None
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)  # DIR itself may be a link: the user's path
    try:
        for part in parts:
            try:
                inner = _enter(fd, part, create)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    os.close(fd)
                    return None
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        raise
    return fd


def _enter(fd: int, part: str, create: bool) -> int:
    """A descriptor of folder `part` of the folder open as `fd` (created first with `create`),
    never through a link: OSError ELOOP or ENOTDIR when `part` is one."""
    if create:
        try:
            os.mkdir(part, dir_fd=fd)
        except FileExistsError:
            pass
    return os.open(part, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)


@dataclass
class _At:
    """A folder under DIR: an open descriptor where *at() calls exist, else its path."""

    fd: int | None
    path: str

    @property
    def kw(self) -> dict:
        return {} if self.fd is None else {"dir_fd": self.fd}

    def __call__(self, name: str) -> tuple[str]:
        return (name,) if self.fd is not None else (os.path.join(self.path, name),)

    def replace(self, name: str, dst: _At, dst_name: str) -> None:
        if self.fd is None:
            os.replace(os.path.join(self.path, name), os.path.join(dst.path, dst_name))
        else:
            os.replace(name, dst_name, src_dir_fd=self.fd, dst_dir_fd=dst.fd)


@contextmanager
def _folder(real_root: str, parts: list[str], create: bool = False) -> Iterator[_At]:
    """The folder DIR/parts, entered one component at a time without following links."""
    path = os.path.join(real_root, *parts)
    if not _AT:
        if create:
            os.makedirs(path, exist_ok=True)
        yield _At(None, path)
        return
    fd = os.open(real_root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        for part in parts:
            # A link here was swapped in after `_resolve` looked: ENOTDIR/ELOOP, never followed.
            inner = _enter(fd, part, create)
            os.close(fd)
            fd = inner
        yield _At(fd, path)
    finally:
        os.close(fd)


def _first_link_out(root: Pathish, rel: str) -> str:
    """The first component of `rel` that is a link leading outside DIR (`rel` itself if none is)."""
    parts = Path(rel).parts
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        if os.path.islink(os.path.join(root, prefix)) and not inside(root, prefix):
            return prefix
    return "/".join(parts)


__all__ = ["Entry", "LEADS_OUTSIDE", "OutsideDir", "TMP_SUFFIX", "TreeReader", "check_dir", "inside", "link_file",
           "make_folder", "move_file", "update_file",
           "open_fd", "open_file", "read_file", "remove_file", "remove_folder", "same_file", "scan", "scan_names",
           "write_file"]
