"""Everything written under DIR: images (atomically), the manifest, failures, metadata copies.

Images are written to a temporary name in their final folder and then renamed,
so an interrupted or killed run never leaves a partial file under a final name;
the temporaries it may leave carry TMP_SUFFIX and are swept by the next run.
"""
from __future__ import annotations

import csv
import json
import hashlib
import io
import os
import re
import secrets
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from .errors import DirectoryError
from .layout import LAYOUTS
from .metadata import IMAGE_NAME

TMP_SUFFIX = ".kaokore-tmp"
MANIFEST = "manifest.csv"
JOURNAL = "manifest.journal.csv"  # rows of the run in progress; folded into the manifest at its end
FAILURES = "failures.csv"
CONTENT_PROVIDERS = "CONTENT_PROVIDERS.txt"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
LOCK = ".kaokore.lock"
STATE = "kaokore.json"  # which version and layout DIR holds, and whether its metadata was pinned


class StoreError(DirectoryError):
    """An image could not be written under DIR (disk full, read-only, permissions): the run stops."""


@dataclass(frozen=True)
class ManifestRow:
    image: str
    path: str  # relative to DIR, '/' separators
    url: str
    sha256: str
    bytes: int
    source_width: int | None  # None: unknown (the file was adopted, not fetched by kaokore)
    source_height: int | None
    source_mode: str
    converted: bool | None
    layout: str


MANIFEST_COLUMNS = tuple(f.name for f in fields(ManifestRow))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _row_to_csv(row: ManifestRow) -> list[str]:
    return [_cell(v) for v in asdict(row).values()]


def _row_from_csv(record: Mapping[str, str]) -> ManifestRow:
    def opt_int(s: str) -> int | None:
        return int(s) if s else None

    converted = {"true": True, "false": False}.get(record["converted"])
    return ManifestRow(
        image=record["image"], path=record["path"], url=record["url"], sha256=record["sha256"],
        bytes=int(record["bytes"]), source_width=opt_int(record["source_width"]),
        source_height=opt_int(record["source_height"]), source_mode=record["source_mode"],
        converted=converted, layout=record["layout"],
    )


def read_rows(path: Path) -> dict[str, ManifestRow]:
    """Rows by image name; an unreadable file or row is skipped, since every row can be rebuilt from disk."""
    rows: dict[str, ManifestRow] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for record in csv.DictReader(f):
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
            and row.bytes >= 0 and row.layout in LAYOUTS)


def read_manifest(root: Path) -> dict[str, ManifestRow]:
    """The last complete manifest, updated by the journal of a run that did not finish."""
    rows = read_rows(root / MANIFEST)
    rows.update(read_rows(root / JOURNAL))
    return rows


def write_manifest(root: Path, rows: Iterable[ManifestRow]) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for row in sorted(rows, key=lambda r: r.image):
        writer.writerow(_row_to_csv(row))
    atomic_write(root / MANIFEST, out.getvalue().encode("utf-8"), durable=True)
    try:
        (root / JOURNAL).unlink()
    except FileNotFoundError:
        pass


class Journal:
    """Append-only rows of the current run, so a crash loses no source details."""

    def __init__(self, root: Path):
        path = root / JOURNAL
        try:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"  # a crash mid-line: start ours on a fresh one
            exists = True
        except FileNotFoundError:
            exists = torn = False
        except OSError:  # empty file
            exists, torn = True, False
        self._file = open(path, "a", newline="", encoding="utf-8")
        if torn:
            self._file.write("\n")
        self._writer = csv.writer(self._file, lineterminator="\n")
        if not exists:
            self._writer.writerow(MANIFEST_COLUMNS)

    def append(self, row: ManifestRow) -> None:
        self._writer.writerow(_row_to_csv(row))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_failures(root: Path) -> list[dict[str, str]]:
    try:
        with open(root / FAILURES, newline="", encoding="utf-8") as f:
            return [r for r in csv.DictReader(f) if {"image", "url", "error", "attempts"} <= r.keys()]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def write_failures(root: Path, failures: Iterable) -> None:
    """failures.csv lists what is still missing after this run; no failures, no file."""
    failures = sorted(failures, key=lambda f: f.image)
    path = root / FAILURES
    if not failures:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("image", "url", "error", "attempts"))
    for f in failures:
        writer.writerow((f.image, f.url, f.error, f.attempts))
    atomic_write(path, out.getvalue().encode("utf-8"), durable=True)


def atomic_write(path: Path, data: bytes, durable: bool = False) -> None:
    """Write `data` under `path` all at once or not at all."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                # Bookkeeping survives a power cut; images need not, the manifest re-checks them.
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def remove_temporaries(root: Path, folders: Iterable[str]) -> int:
    """Sweep what a killed run left behind; returns how many files were removed."""
    removed = 0
    for folder in {".", *folders}:
        try:
            entries = list(os.scandir(root / folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith(TMP_SUFFIX) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except OSError:
                    pass
    return removed


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_providers() -> bytes:
    return resources.files("kaokore").joinpath(CONTENT_PROVIDERS).read_bytes()


def write_root_files(root: Path, metadata_files: Mapping[str, bytes]) -> None:
    """Byte-exact metadata copies and the provider list, which the data's terms require alongside it."""
    for name, data in {**metadata_files, CONTENT_PROVIDERS: content_providers()}.items():
        path = root / name
        try:
            if path.read_bytes() == data:
                continue
        except OSError:
            pass
        atomic_write(path, data)


def prepare_root(root: Path) -> Path:
    """Create DIR and prove it is writable, before any request is made."""
    if root.exists() and not root.is_dir():
        raise DirectoryError(f"cannot use {str(root)!r} as the dataset directory: it is a file")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-probe{TMP_SUFFIX}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DirectoryError(f"cannot use {str(root)!r} as the dataset directory: {reason}") from None
    return root


@contextmanager
def exclusive(root: Path) -> Iterator[None]:
    """Hold DIR for one run: two runs (say, CI jobs sharing a cache) would double the load on each
    server and sweep each other's temporary files. The OS drops the lock if the process dies."""
    handle = open(root / LOCK, "a+b")
    try:
        try:
            if os.name == "nt":
                import msvcrt

                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DirectoryError(f"another kaokore download is using {str(root)!r}; "
                                 "wait for it to finish or pass another --dir") from None
        try:
            yield
        finally:
            # Removed while still held, so DIR keeps no trace of the run's bookkeeping.
            try:
                os.unlink(root / LOCK)
            except OSError:
                pass
    finally:
        handle.close()


def prepare_folders(root: Path, folders: Iterable[str]) -> None:
    """Create the folders images are about to land in; one that cannot exist is DIR's problem, not each image's."""
    for folder in sorted(set(folders)):
        try:
            (root / folder).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise DirectoryError(f"cannot create {str(root / folder)!r}: {reason}") from None


def write_state(root: Path, **state) -> None:
    atomic_write(root / STATE, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode("utf-8"), durable=True)


def read_state(root: Path) -> dict:
    try:
        state = json.loads((root / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict):
        return {}
    # A hand-edited or foreign file must not crash verify/info: keep only values of the expected type.
    expected = {"dataset_version": str, "layout": str, "metadata_pinned": bool, "kaokore": str}
    return {k: v for k, v in state.items() if isinstance(v, expected.get(k, object))}
