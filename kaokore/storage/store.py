"""Everything written under DIR: images (atomically), the metadata copies, and the errors of doing so.

Images are written to a temporary name in their final folder and then renamed,
so an interrupted or killed run never leaves a partial file under a final name;
the temporaries it may leave carry TMP_SUFFIX and are swept by the next run.
Every file is reached through `safefs` and `safewrite`, so no symbolic link takes a
write, a rename or a deletion outside DIR. The bookkeeping files are `manifest`'s.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..dataset.layout import TOP_FOLDERS
from ..errors import DirectoryError
from .records import CONTENT_PROVIDERS, ROOT_FILES
from .safefs import check_dir, scan
from .safewrite import TMP_SUFFIX, make_folder, open_fd, remove_file, update_file, write_file

RESERVE = f".space-reserve{TMP_SUFFIX}"  # room kept for the manifest and failures.csv, see reserve_space()
# Errors of the disk as a whole: every other image would fail alike after being fetched.
_DISK_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS") if hasattr(errno, name))


class StoreError(DirectoryError):
    """DIR as a whole cannot take more (disk full, over quota, read-only), or a file of its
    bookkeeping cannot be written: the run stops."""


class PathError(Exception):
    """One image's path cannot be written (a folder squats it, its name cannot be created,
    a link leads outside DIR): that image fails alone, and the run goes on."""


def disk_wide(exc: OSError) -> bool:
    """Whether `exc` is an error of DIR's disk as a whole (full, over quota, read-only), which
    stops a run, rather than one of a single path."""
    return exc.errno in _DISK_ERRNOS


def store_error(action: str, exc: OSError, kind: type[Exception] = StoreError, note: str = "") -> Exception:
    """The one-line error (a `kind`) that `action` ("cannot write '...'") failed with `exc`."""
    return kind(f"{action}: {exc.strerror or exc}{note}")


def write_bookkeeping(root: Path, name: str, data: bytes) -> None:
    """Write a file of DIR's bookkeeping, durably; one that cannot be written stops the run."""
    try:
        update_file(root, name, data, durable=True)
    except OSError as exc:
        raise store_error(f"cannot write {str(Path(root) / name)!r}", exc) from None


def atomic_write(path: Path, data: bytes, durable: bool = False) -> None:
    """Write `data` under `path` all at once or not at all; a link at `path` is replaced, not written through."""
    path = Path(path)
    write_file(path.parent, path.name, data, durable)


def write_image(path: Path, rel: str, data: bytes) -> None:
    """Write an image's bytes at `rel` under DIR, where `path` is DIR/`rel`.

    Raises
    ------
    StoreError
        The disk as a whole cannot take it (full, over quota, read-only): the run must stop.
    PathError
        This path alone cannot be written: the image fails, the others go on.
    """
    root = Path(path).parents[rel.count("/")]
    try:
        write_file(root, rel, data)
    except OSError as exc:
        if disk_wide(exc):
            raise store_error(f"cannot write {str(path)!r}", exc) from None
        raise store_error(f"cannot write {rel}", exc, PathError) from None


def reserve_space(root: Path, nbytes: int) -> None:
    """Set aside `nbytes` on DIR's disk, so that a run the disk fills up can still write its manifest
    and failures.csv once `release_space` gives the room back. The bytes are random: a disk that
    compresses or skips zeros would otherwise set aside nothing."""
    try:
        write_file(root, RESERVE, os.urandom(nbytes))
    except OSError as exc:
        raise store_error(f"cannot write to {str(root)!r}", exc,
                          note=f" (a run keeps {nbytes // 1024 + 1} KiB free for its manifest)") from None


def release_space(root: Path) -> None:
    try:
        remove_file(root, RESERVE)
    except OSError:
        pass


def remove_temporaries(root: Path, folders: Iterable[str]) -> int:
    """Sweep what a killed run left behind; returns how many files were removed.

    Raises `OutsideDir` first if one of `folders` is a link leading outside DIR: this runs
    before planning moves or deletes anything."""
    folders = {*folders}
    check_dir(root, folders)
    removed = 0
    for folder in sorted({".", *folders}):
        for entry in scan(root, folder):
            # A link is removed too: the entry goes, never what it points to.
            if entry.name.endswith(TMP_SUFFIX) and (entry.is_file or entry.is_link):
                try:
                    removed += remove_file(root, f"{folder}/{entry.name}")
                except OSError:
                    pass
    return removed


def content_providers() -> bytes:
    from importlib import resources  # here: it imports tempfile, shutil, zipfile... (every command imports store)

    return resources.files("kaokore").joinpath(CONTENT_PROVIDERS).read_bytes()


def write_root_files(root: Path, metadata_files: Mapping[str, bytes]) -> None:
    """Byte-exact metadata copies and the provider list, which the data's terms require alongside it."""
    for name, data in {**metadata_files, CONTENT_PROVIDERS: content_providers()}.items():
        try:
            update_file(root, name, data)
        except OSError as exc:
            raise store_error(f"cannot write {str(Path(root) / name)!r}", exc) from None


def prepare_root(root: Path) -> Path:
    """Create DIR and prove it is writable, before any request is made.

    Raises `OutsideDir` if a root file or top image folder of DIR is a link leading outside it,
    before anything is written."""
    if root.exists() and not root.is_dir():
        raise DirectoryError(f"cannot use {str(root)!r} as the dataset directory: it is a file")
    try:
        root.mkdir(parents=True, exist_ok=True)
        check_dir(root, TOP_FOLDERS, ROOT_FILES)
        # A fresh name, created exclusively: whatever a planted file or link is called, it is not this.
        probe = f".write-probe.{os.urandom(4).hex()}{TMP_SUFFIX}"
        os.close(open_fd(root, probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        remove_file(root, probe)
    except OSError as exc:
        raise store_error(f"cannot use {str(root)!r} as the dataset directory", exc, DirectoryError) from None
    return root


def prepare_folders(root: Path, folders: Iterable[str]) -> None:
    """Create the folders images are about to land in; one that cannot exist is DIR's problem, not each image's.
    One that is a link leading outside DIR is refused (`OutsideDir`) before any is created."""
    folders = sorted(set(folders))
    check_dir(root, folders)
    for folder in folders:
        try:
            make_folder(root, folder)
        except OSError as exc:
            # A full disk stops the run with its summary; a folder that cannot exist is DIR's problem.
            kind = StoreError if disk_wide(exc) else DirectoryError
            raise store_error(f"cannot create {str(root / folder)!r}", exc, kind) from None
