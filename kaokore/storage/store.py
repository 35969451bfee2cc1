"""Everything written under DIR: images (atomically), the manifest, failures, metadata copies.

Images are written to a temporary name in their final folder and then renamed,
so an interrupted or killed run never leaves a partial file under a final name;
the temporaries it may leave carry TMP_SUFFIX and are swept by the next run.
Every file is reached through `safefs`, so no symbolic link takes a write, a
rename or a deletion outside DIR.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path

from ..dataset.layout import LAYOUTS, TOP_FOLDERS
from ..dataset.metadata import IMAGE_NAME, sha256
from ..dataset.versions import METADATA_FILES
from ..errors import DirectoryError
from .lock import LOCK, exclusive  # noqa: F401 - where callers have always found them
from .safefs import (
    TMP_SUFFIX,
    check_dir,
    make_folder,
    open_fd,
    open_file,
    read_file,
    remove_file,
    scan,
    update_file,
    write_file,
)

MANIFEST = "manifest.csv"
JOURNAL = "manifest.journal.csv"  # rows of the run in progress; folded into the manifest at its end
FAILURES = "failures.csv"
CONTENT_PROVIDERS = "CONTENT_PROVIDERS.txt"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
STATE = "kaokore.json"  # which version and layout DIR holds, and whether its metadata was pinned
RESERVE = f".space-reserve{TMP_SUFFIX}"  # room kept for the manifest and failures.csv, see reserve_space()
# Every file kaokore keeps at DIR's root, and the folders any layout puts images in (class
# folders lie below these): none of them may be a link leading outside DIR.
ROOT_FILES = (*METADATA_FILES, CONTENT_PROVIDERS, MANIFEST, JOURNAL, FAILURES, STATE, LOCK)
# Errors of the disk as a whole: every other image would fail alike after being fetched.
DISK_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS") if hasattr(errno, name))


class StoreError(DirectoryError):
    """DIR as a whole cannot take more (disk full, over quota, read-only), or a file of its
    bookkeeping cannot be written: the run stops."""


class PathError(Exception):
    """One image's path cannot be written (a folder squats it, its name cannot be created,
    a link leads outside DIR): that image fails alone, and the run goes on."""


@dataclass(frozen=True)
class ManifestRow:
    image: str
    path: str  # relative to DIR, '/' separators
    url: str
    sha256: str
    bytes: int
    source_width: int | None  # None: unknown (adopted by an older kaokore, which did not record it)
    source_height: int | None
    source_mode: str
    converted: bool | None  # False: the bytes are the server's own
    layout: str
    origin: str = "fetched"  # fetched: by kaokore from the URL | adopted: found on disk, DIR's version known
    # | reused: the same IIIF request's file, taken from another tree (or another image of DIR's): see `reuse`
    source: str = ""  # reused: the file it was taken from (an absolute path, or the name of DIR's own image)


MANIFEST_COLUMNS = tuple(f.name for f in fields(ManifestRow))
ORIGINS = ("fetched", "adopted", "reused")


_VALUES = attrgetter(*MANIFEST_COLUMNS)
_CONVERTED = MANIFEST_COLUMNS.index("converted")  # the one bool: csv would write True, not true
_BOOL = {True: "true", False: "false", None: ""}


def _row_to_csv(row: ManifestRow) -> list:
    """The row's fields in column order, as manifest.csv spells them: booleans true/false, None empty
    (csv.writer itself writes None as "" and an int as str does)."""
    values = list(_VALUES(row))
    values[_CONVERTED] = _BOOL[values[_CONVERTED]]
    return values


_FROM_CSV = {"true": True, "false": False}


def _row_from_csv(record: Mapping[str, str]) -> ManifestRow:
    width, height = record["source_width"], record["source_height"]
    return ManifestRow(
        record["image"], record["path"], record["url"], record["sha256"], int(record["bytes"]),
        int(width) if width else None, int(height) if height else None, record["source_mode"],
        _FROM_CSV.get(record["converted"]), record["layout"],
        record.get("origin") or "fetched",  # manifests written before the column existed
        record.get("source") or "",
    )


def read_rows(path: Path) -> dict[str, ManifestRow]:
    """Rows by image name; an unreadable file or row is skipped, since every row can be rebuilt from disk.
    A file that is a link leading out of its folder is not read."""
    rows: dict[str, ManifestRow] = {}
    path = Path(path)
    try:
        with io.TextIOWrapper(open_file(path.parent, path.name), newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None) or []
            # What csv.DictReader gives, without a reader of its own per row: a short row lacks the
            # columns it does not reach (and is skipped below unless only `origin` is missing).
            for record in (dict(zip(header, row)) for row in reader):
                try:
                    row = _row_from_csv(record)
                except (KeyError, ValueError, TypeError, AttributeError):
                    continue
                if _plausible(row):
                    rows[row.image] = row
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return rows


def _plausible(row: ManifestRow) -> bool:
    """A row kaokore could have written; anything else (a torn line, a hand edit) is rebuilt from disk."""
    return (IMAGE_NAME.fullmatch(row.image) is not None and SHA256_HEX.fullmatch(row.sha256) is not None
            and row.bytes >= 0 and row.layout in LAYOUTS and row.origin in ORIGINS)


def read_manifest(root: Path) -> dict[str, ManifestRow]:
    """The last complete manifest, updated by the journal of a run that did not finish."""
    rows = read_rows(root / MANIFEST)
    rows.update(read_rows(root / JOURNAL))
    return rows


def write_manifest(root: Path, rows: Iterable[ManifestRow]) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows([_row_to_csv(row) for row in sorted(rows, key=attrgetter("image"))])
    _write_bookkeeping(root, MANIFEST, out.getvalue().encode("utf-8"))
    try:
        remove_file(root, JOURNAL)
    except OSError:
        pass  # a journal left behind is harmless: its rows are re-checked against the disk


class Journal:
    """Append-only rows of the current run, so a crash loses no source details.

    It never raises: the manifest written at the end of the run is the record, this is
    only its safety net. The first error (a full disk, say) is kept in `error` and ends
    the journaling; the image writes meet the same disk and stop the run themselves.
    """

    def __init__(self, root: Path):
        self.error: OSError | None = None
        self._file = None
        try:
            self._file = self._open(Path(root))
        except OSError as exc:
            self.error = exc

    @staticmethod
    def _open(root: Path):
        try:
            fd = open_fd(root, JOURNAL, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EINVAL):
                raise
            fd = -1  # a symbolic link (never followed) or no regular file (a FIFO): replaced below
        try:
            st = os.fstat(fd) if fd >= 0 else None
            if st is None or not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                # A link, another name for someone else's file (a hard link), or no file at all:
                # never append to it. Its rows, if any, were read already; start afresh.
                if fd >= 0:
                    os.close(fd)
                    fd = -1
                remove_file(root, JOURNAL)
                fd = open_fd(root, JOURNAL, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL)
                st = os.fstat(fd)
            torn = False
            if st.st_size:
                os.lseek(fd, -1, os.SEEK_END)
                torn = os.read(fd, 1) != b"\n"  # a crash mid-line: start ours on a fresh one
            f = open(fd, "a", newline="", encoding="utf-8")
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        try:
            if torn:
                f.write("\n")
            if not st.st_size:
                csv.writer(f, lineterminator="\n").writerow(MANIFEST_COLUMNS)
        except BaseException:
            try:
                f.close()
            except OSError:
                pass
            raise
        return f

    def append(self, row: ManifestRow) -> None:
        self._guard(lambda f: csv.writer(f, lineterminator="\n").writerow(_row_to_csv(row)))

    def flush(self) -> None:
        self._guard(lambda f: f.flush())

    def close(self) -> None:
        self._guard(lambda f: f.close())
        if self._file is not None:
            try:
                self._file.close()  # a failed flush inside close() leaves it open
            except OSError:
                pass
            self._file = None

    def _guard(self, action) -> None:
        if self._file is None or self.error is not None:
            return
        try:
            action(self._file)
        except OSError as exc:
            self.error = exc


def read_failures(root: Path) -> list[dict[str, str]]:
    try:
        with io.TextIOWrapper(open_file(root, FAILURES), newline="", encoding="utf-8") as f:
            return [r for r in csv.DictReader(f) if {"image", "url", "error", "attempts"} <= r.keys()]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def write_failures(root: Path, failures: Iterable) -> None:
    """failures.csv lists what is still missing after this run; no failures, no file."""
    failures = sorted(failures, key=lambda f: f.image)
    if not failures:
        try:
            remove_file(root, FAILURES)
        except OSError as exc:
            raise StoreError(f"cannot remove {str(root / FAILURES)!r}: {exc.strerror or exc}") from None
        return
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("image", "url", "error", "attempts"))
    for f in failures:
        writer.writerow((f.image, f.url, f.error, f.attempts))
    _write_bookkeeping(root, FAILURES, out.getvalue().encode("utf-8"))


def _write_bookkeeping(root: Path, name: str, data: bytes) -> None:
    try:
        update_file(root, name, data, durable=True)
    except OSError as exc:
        raise StoreError(f"cannot write {str(Path(root) / name)!r}: {exc.strerror or exc}") from None


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
        reason = exc.strerror or str(exc)
        if exc.errno in DISK_ERRNOS:
            raise StoreError(f"cannot write {str(path)!r}: {reason}") from None
        raise PathError(f"cannot write {rel}: {reason}") from None


def reserve_space(root: Path, nbytes: int) -> None:
    """Set aside `nbytes` on DIR's disk, so that a run the disk fills up can still write its manifest
    and failures.csv once `release_space` gives the room back. The bytes are random: a disk that
    compresses or skips zeros would otherwise set aside nothing."""
    try:
        write_file(root, RESERVE, os.urandom(nbytes))
    except OSError as exc:
        raise StoreError(f"cannot write to {str(root)!r}: {exc.strerror or exc} "
                         f"(a run keeps {nbytes // 1024 + 1} KiB free for its manifest)") from None


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


def file_sha256(path: Path, root: Path | None = None) -> str:
    """SHA-256 of the file at `path`, which with `root` is under DIR (absolute, or relative to `root`):
    read without following a link out of DIR (OSError ELOOP)."""
    path = Path(path)
    if root is None:
        root, path = path.parent, Path(path.name)
    elif path.is_absolute():
        path = path.relative_to(root)
    with open_file(root, path.as_posix()) as f:
        return sha256(f)


def content_providers() -> bytes:
    from importlib import resources  # here: it imports tempfile, shutil, zipfile... (every command imports store)

    return resources.files("kaokore").joinpath(CONTENT_PROVIDERS).read_bytes()


def write_root_files(root: Path, metadata_files: Mapping[str, bytes]) -> None:
    """Byte-exact metadata copies and the provider list, which the data's terms require alongside it."""
    for name, data in {**metadata_files, CONTENT_PROVIDERS: content_providers()}.items():
        try:
            update_file(root, name, data)
        except OSError as exc:
            raise StoreError(f"cannot write {str(Path(root) / name)!r}: {exc.strerror or exc}") from None


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
        reason = exc.strerror or str(exc)
        raise DirectoryError(f"cannot use {str(root)!r} as the dataset directory: {reason}") from None
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
            reason = exc.strerror or str(exc)
            # A full disk stops the run with its summary; a folder that cannot exist is DIR's problem.
            kind = StoreError if exc.errno in DISK_ERRNOS else DirectoryError
            raise kind(f"cannot create {str(root / folder)!r}: {reason}") from None


def write_state(root: Path, **state) -> None:
    _write_bookkeeping(root, STATE, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_state(root: Path) -> dict:
    try:
        state = json.loads(read_file(root, STATE).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict):
        return {}
    # A hand-edited or foreign file must not crash verify/info: keep only values of the expected type.
    expected = {"dataset_version": str, "layout": str, "metadata_pinned": bool, "kaokore": str,
                "metadata_sha256": dict}
    return {k: v for k, v in state.items() if isinstance(v, expected.get(k, object))}
