"""DIR's bookkeeping: manifest.csv (and the journal of the run in progress), failures.csv, kaokore.json.

Each is read leniently, since a row or a state can be rebuilt from the disk: an unreadable
file or row reads as absent. Each is written whole (`store.write_bookkeeping`), except the
journal, which a run appends to as images land.
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
from operator import attrgetter
from pathlib import Path

from ..dataset.labels import IMAGE_NAME
from ..dataset.layout import LAYOUTS
from .records import FAILURE_COLUMNS, FAILURES, JOURNAL, MANIFEST, MANIFEST_COLUMNS, ORIGINS, STATE, ManifestRow, State
from .safefs import open_file, read_file
from .safewrite import open_fd, remove_file
from .store import store_error, write_bookkeeping

SHA256_HEX = re.compile(r"[0-9a-f]{64}")

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
    write_bookkeeping(root, MANIFEST, out.getvalue().encode("utf-8"))
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
            return [r for r in csv.DictReader(f) if set(FAILURE_COLUMNS) <= r.keys()]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def write_failures(root: Path, failures: Iterable) -> None:
    """failures.csv lists what is still missing after this run; no failures, no file."""
    failures = sorted(failures, key=lambda f: f.image)
    if not failures:
        try:
            remove_file(root, FAILURES)
        except OSError as exc:
            raise store_error(f"cannot remove {str(root / FAILURES)!r}", exc) from None
        return
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FAILURE_COLUMNS)
    writer.writerows([[getattr(f, column) for column in FAILURE_COLUMNS] for f in failures])
    write_bookkeeping(root, FAILURES, out.getvalue().encode("utf-8"))


def write_state(root: Path, state: State) -> None:
    write_bookkeeping(root, STATE, (json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_state(root: Path) -> dict:
    """kaokore.json as written (`State.to_json`), less any value not of its field's type; {} when absent."""
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
