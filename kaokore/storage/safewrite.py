"""Writing under DIR without ever reaching outside it through a symbolic link (the rule: `safefs`).

A file is created with O_EXCL|O_NOFOLLOW as a temporary in its folder and then replaces
its name there; renames and deletions act on the entry inside its folder, so on a link
itself, never on what it points to.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable

from .safefs import open_file
from .walk import (
    BINARY,
    CLOEXEC,
    NOFOLLOW,
    NONBLOCK,
    At,
    Pathish,
    entry,
    open_folder,
    real_folder,
    real_parts,
    regular_only,
    rel_parts,
)

TMP_SUFFIX = ".kaokore-tmp"


def make_folder(root: Pathish, rel: str) -> None:
    """Create folder `rel` under DIR and its parents, as `mkdir -p` would, without leaving DIR."""
    with open_folder(root, rel, create=True):
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
        exc.filename = os.path.join(str(root), *rel_parts(rel))
        raise


def _write_file(root: Pathish, rel: str, data: bytes, durable: bool) -> None:
    with entry(root, rel) as (at, name):
        tmp = f".{name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        fd = os.open(*at(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC | BINARY, 0o644,
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
        exc.filename = os.path.join(str(src_root), *rel_parts(src_rel))
        raise


def _link_file(src_root: Pathish, src_rel: str, root: Pathish, rel: str, accept: Callable[[bytes], bool]) -> bool:
    src_real, src_parts = real_parts(src_root, src_rel, follow_last=True)
    src_name = src_parts.pop()
    real_root, parts = real_parts(root, rel, follow_last=False)
    name = parts.pop()
    tmp = f".{name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    with real_folder(src_real, src_parts) as src, real_folder(real_root, parts) as at:
        # Never the target of a link swapped in at the source's name: the link itself would be linked,
        # and opening it below (O_NOFOLLOW) fails.
        nofollow = {"follow_symlinks": False} if os.link in os.supports_follow_symlinks else {}
        if src.fd is not None and at.fd is not None and os.link in os.supports_dir_fd:
            os.link(src_name, tmp, src_dir_fd=src.fd, dst_dir_fd=at.fd, **nofollow)
        else:
            os.link(os.path.join(src.path, src_name), os.path.join(at.path, tmp), **nofollow)
        try:
            fd = os.open(*at(tmp), os.O_RDONLY | NOFOLLOW | CLOEXEC | BINARY | NONBLOCK, **at.kw)
            regular_only(fd, tmp)
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


def _unlink_quietly(at: At, tmp: str) -> None:
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


def open_fd(root: Pathish, rel: str, flags: int, mode: int = 0o644) -> int:
    """A descriptor for `rel` under DIR opened with `flags`, never through a link at any component
    (at the last one: OSError ELOOP). For files kaokore keeps open itself, like the run lock."""
    with entry(root, rel) as (at, name):
        fd = os.open(*at(name), flags | NOFOLLOW | CLOEXEC | BINARY | NONBLOCK, mode, **at.kw)
    regular_only(fd, rel)
    return fd


def remove_file(root: Pathish, rel: str) -> bool:
    """Delete `rel`'s entry under DIR (a link itself, never its target). False if it was not there."""
    try:
        with entry(root, rel) as (at, name):
            os.unlink(*at(name), **at.kw)
    except FileNotFoundError:
        return False
    return True


def move_file(root: Pathish, src_rel: str, dst_rel: str) -> None:
    """Rename `src_rel` to `dst_rel` under DIR, replacing `dst_rel`'s entry; `dst_rel`'s folder is created."""
    real_root, src_parts = real_parts(root, src_rel, follow_last=False)
    _, dst_parts = real_parts(root, dst_rel, follow_last=False)
    src_name, dst_name = src_parts.pop(), dst_parts.pop()
    with real_folder(real_root, src_parts) as src, real_folder(real_root, dst_parts, create=True) as dst:
        src.replace(src_name, dst, dst_name)


def remove_folder(root: Pathish, rel: str) -> bool:
    """Remove `rel` under DIR if it is an empty folder (a link to a folder is left alone). False if not removed."""
    real_root, parts = real_parts(root, rel, follow_last=False)
    name = parts.pop()
    try:
        with real_folder(real_root, parts) as at:
            os.rmdir(*at(name), **at.kw)
    except OSError:
        return False
    return True
