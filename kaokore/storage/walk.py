"""Entering folders under DIR without following a symbolic link out of it: what `safefs` (reading)
and `safewrite` (writing) are built on; see `safefs` for the rule.

A path is resolved first, then its folders are opened one component at a time from DIR
without following links; where the system has no *at() calls (Windows) folders are used
by path after the check.
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LEADS_OUTSIDE = "a symbolic link leading outside DIR"
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
BINARY = getattr(os, "O_BINARY", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)
# Without *at() calls (Windows) paths are resolved and checked, then used by name: the
# check still refuses links leading outside, but a link swapped in between is not caught.
AT_CALLS = (hasattr(os, "O_DIRECTORY") and bool(NOFOLLOW) and os.scandir in os.supports_fd
            and {os.open, os.mkdir, os.rmdir, os.unlink, os.rename, os.stat} <= os.supports_dir_fd)
Pathish = str | os.PathLike


def regular_only(fd: int, rel: Pathish) -> None:
    """Close `fd` and raise unless it is a regular file (a FIFO, device or socket is nobody's data)."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", os.fspath(rel))
    if NONBLOCK:
        os.set_blocking(fd, True)


def under(real_root: str, real: str) -> bool:
    """Whether the real path `real` is `real_root` or lies below it."""
    real_root, real = os.path.normcase(real_root), os.path.normcase(real)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def rel_parts(rel: str | os.PathLike) -> list[str]:
    """The components of `rel`, a path relative to DIR; OSError EINVAL for one that climbs out."""
    parts = [p for p in Path(rel).parts if p != "."]
    if Path(rel).is_absolute() or ".." in parts:
        # Callers build these paths themselves; one that climbs out is refused, not followed.
        raise OSError(errno.EINVAL, "not a path inside DIR", os.fspath(rel))
    return parts


def real_parts(root: Pathish, rel: str, *, follow_last: bool) -> tuple[str, list[str]]:
    """DIR's real path, and the components below it of where `rel` really is: with its links
    resolved, all of them (`follow_last`) or all but the last (the entry acted on itself)."""
    parts = rel_parts(rel)
    if not parts and not follow_last:
        raise OSError(errno.EINVAL, "not a file inside DIR", os.fspath(rel))
    real_root = os.path.realpath(root)
    followed = parts if follow_last else parts[:-1]
    real = os.path.realpath(os.path.join(real_root, *followed)) if followed else real_root
    if not under(real_root, real):
        raise OSError(errno.ELOOP, LEADS_OUTSIDE, os.path.join(str(root), *parts))
    below = [p for p in os.path.relpath(real, real_root).split(os.sep) if p != "."]
    return real_root, below if follow_last else [*below, parts[-1]]


@contextmanager
def entry(root: Pathish, rel: str) -> Iterator[tuple[At, str]]:
    """The folder holding `rel`'s entry, entered from DIR without following a link, and the entry's
    name: the entry itself is not followed (it is created, replaced, removed or opened O_NOFOLLOW)."""
    parts = rel_parts(rel)
    if not parts:
        raise OSError(errno.EINVAL, "not a file inside DIR", os.fspath(rel))
    fd = _plain_walk(root, parts[:-1])
    if fd is not None:
        try:
            yield At(fd, os.path.join(root, *parts[:-1])), parts[-1]
        finally:
            os.close(fd)
        return
    real_root, below = real_parts(root, rel, follow_last=False)
    name = below.pop()
    with real_folder(real_root, below) as at:
        yield at, name


@contextmanager
def open_folder(root: Pathish, rel: str, create: bool = False) -> Iterator[At]:
    """Folder `rel` under DIR entered (created first with `create`), a link on the way followed only
    if it leads back inside DIR."""
    parts = rel_parts(rel)
    fd = _plain_walk(root, parts, create)
    if fd is not None:
        try:
            yield At(fd, os.path.join(root, *parts))
        finally:
            os.close(fd)
        return
    real_root, below = real_parts(root, rel, follow_last=True)
    with real_folder(real_root, below, create) as at:
        yield at


def _plain_walk(root: Pathish, parts: list[str], create: bool = False) -> int | None:
    """A descriptor of DIR/parts when no component is a link, entered one component at a time
    with O_NOFOLLOW; None when one is (or is no folder): then `real_parts` finds where it leads.
    Every DIR has this common case: it saves resolving DIR's and the folder's real paths
    (an lstat per component of each) for every file."""
    if not AT_CALLS:
        return None
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | CLOEXEC)  # DIR itself may be a link: the user's path
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
    return os.open(part, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW | CLOEXEC, dir_fd=fd)


@dataclass
class At:
    """A folder under DIR: an open descriptor where *at() calls exist, else its path."""

    fd: int | None
    path: str

    @property
    def kw(self) -> dict:
        return {} if self.fd is None else {"dir_fd": self.fd}

    def __call__(self, name: str) -> tuple[str]:
        return (name,) if self.fd is not None else (os.path.join(self.path, name),)

    def replace(self, name: str, dst: At, dst_name: str) -> None:
        if self.fd is None:
            os.replace(os.path.join(self.path, name), os.path.join(dst.path, dst_name))
        else:
            os.replace(name, dst_name, src_dir_fd=self.fd, dst_dir_fd=dst.fd)


@contextmanager
def real_folder(real_root: str, parts: list[str], create: bool = False) -> Iterator[At]:
    """The folder DIR/parts, entered one component at a time without following links."""
    path = os.path.join(real_root, *parts)
    if not AT_CALLS:
        if create:
            os.makedirs(path, exist_ok=True)
        yield At(None, path)
        return
    fd = os.open(real_root, os.O_RDONLY | os.O_DIRECTORY | CLOEXEC)
    try:
        for part in parts:
            # A link here was swapped in after `real_parts` looked: ENOTDIR/ELOOP, never followed.
            inner = _enter(fd, part, create)
            os.close(fd)
            fd = inner
        yield At(fd, path)
    finally:
        os.close(fd)
