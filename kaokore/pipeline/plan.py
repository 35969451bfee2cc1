"""Planning: which images are already good on disk, which move, which must be fetched.

Runs before any image request, on what `directory.inspect` found. A present file
is kept only after it matches its manifest row (size, then SHA-256) or, with no
row, when DIR's version is positively known (`adopt`) and the file decodes as an
image: then it is normalized in place, as if it had just been fetched. Anything
else is deleted so that it is fetched afresh and never sits damaged under a final
name. So are images with the same bytes as images of other requests (placeholders a
server sent for missing images, kept by an earlier kaokore or another tool): see
`placeholders`.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import repeat
from pathlib import Path

from ..dataset.layout import SPLIT_CHOICES, any_layout_folders, image_path, layout_folders, split_of
from ..dataset.metadata import Item, Metadata, sha256
from ..errors import UsageError
from ..storage.directory import DatasetDir
from ..storage.records import ManifestRow
from ..storage.safefs import TreeReader, read_file
from ..storage.safewrite import move_file, remove_file, remove_folder
from ..storage.store import PathError, disk_wide, store_error, write_image
from .normalize import ImageTooLarge, NotAnImage, normalize_found
from .placeholders import duplicates

CHECK_BATCH = 256  # files per task of the checking threads: few tasks, but every core busy
Record = Callable[[ManifestRow], None]  # receives each row as soon as it is final (the run's journal)
# Given the images left to fetch (with their paths) and the rows kept: the rows of those it stored.
Reuse = Callable[[list[tuple[Item, str]], dict[str, ManifestRow]], list[ManifestRow]]


@dataclass
class Plan:
    fetch: list[tuple[Item, str]] = field(default_factory=list)  # (item, path relative to DIR)
    rows: dict[str, ManifestRow] = field(default_factory=dict)  # every good image on disk, selected or not
    already_present: int = 0  # of the selection
    relocated: int = 0
    adopted: int = 0  # files with no manifest row kept as this version's images (of them, `converted` re-encoded)
    adopted_converted: int = 0
    damaged: list[str] = field(default_factory=list)  # present but not the right bytes: deleted, fetched again
    placeholders: int = 0  # of `damaged`, images with the bytes of other requests' images
    reused: list[str] = field(default_factory=list)  # stored from another image's file (`reuse`), not fetched
    unavailable: int = 0
    total: int = 0


def check_selection(splits: Iterable[str] | None, limit: int | None) -> None:
    """Usage errors in a selection, found before anything is fetched."""
    unknown = set(splits or ()) - set(SPLIT_CHOICES)
    if unknown:
        raise UsageError(f"unknown split {sorted(unknown)[0]!r} (choose from {', '.join(SPLIT_CHOICES)})")
    if limit is not None and limit < 0:
        raise UsageError("--limit must be 0 or more")


def select(items: Sequence[Item], splits: Iterable[str] | None = None, limit: int | None = None) -> list[Item]:
    """The images a run is about: all of them, or some splits, or the first `limit`."""
    check_selection(splits, limit)
    chosen = list(items)
    if splits:
        wanted = set(splits)
        chosen = [i for i in chosen if split_of(i) in wanted]
    if limit is not None:
        # The first `limit` images that can be fetched, and the unavailable ones among them.
        kept, fetchable = [], 0
        for item in chosen:
            if fetchable == limit:
                break
            kept.append(item)
            fetchable += bool(item.url)
        chosen = kept
    return chosen


def make_plan(dataset_dir: DatasetDir, metadata: Metadata, layout: str, selection: Sequence[Item],
              force: bool = False, adopt: bool = False, note: Callable[[str], None] | None = None,
              record: Record | None = None, reuse: Reuse | None = None) -> Plan:
    """Bring what DIR holds into `layout` and list what is left to fetch.

    `adopt` says whether a file with no manifest row may be kept as the image of its
    number: only when DIR's version is positively known, since image N of one version
    is not image N of another. `record` receives each adopted file's row as soon as it
    is final (the run's journal), since a file normalized in place no longer shows that
    it was re-encoded: a run killed before its manifest must not lose that.

    `reuse` (`reuse.planner`) is given the images left to fetch, with their paths, and the
    rows kept; it stores what it can from files of the same requests and returns their rows,
    which `record` receives too. Those images are not fetched.
    """
    plan = Plan()
    plan.unavailable = sum(1 for item in selection if not item.url)
    plan.total = len(selection) - plan.unavailable
    unknown, recorded = _bring_into_layout(dataset_dir, metadata, layout, plan)
    _keep_checked(dataset_dir.root, recorded, layout, {item.index for item in selection}, plan)
    _keep_adopted(dataset_dir.root, unknown, layout, adopt, record, note, plan)
    _drop_placeholders(dataset_dir.root, plan, note)
    _list_fetch(metadata, layout, selection, force, reuse, record, plan)
    if plan.relocated:
        _remove_empty_folders(dataset_dir.root, layout, metadata.classes)
    return plan


def _bring_into_layout(dataset_dir: DatasetDir, metadata: Metadata, layout: str, plan: Plan
                       ) -> tuple[list[tuple[Item, str]], list[tuple[Item, str, ManifestRow]]]:
    """Move each image DIR holds to its place in `layout`, and sort them for checking: those with no
    manifest row, to adopt or replace, and those with one, to check against it. An image whose row
    names another URL (the metadata changed) is deleted: never kept under this name."""
    unknown: list[tuple[Item, str]] = []
    recorded: list[tuple[Item, str, ManifestRow]] = []
    for item in metadata.downloadable:
        located = dataset_dir.locate(item, metadata.classes, layout)
        if located is None:
            continue
        target = image_path(item, layout, metadata.classes)
        row = located.row
        if row is not None and row.url != item.url:
            _discard(dataset_dir.root, located.rel)
            plan.damaged.append(item.name)
            continue
        if located.rel != target:
            if not _move(dataset_dir.root, located.rel, target):
                # This path alone cannot take the image (a folder squats it): the file stays where it
                # was, and the image is fetched to its place in this layout, where it fails by itself.
                continue
            plan.relocated += 1
        if row is None:
            unknown.append((item, target))
        else:
            recorded.append((item, target, row))
    return unknown, recorded


def _keep_checked(root: Path, recorded: list[tuple[Item, str, ManifestRow]], layout: str, selected: set[int],
                  plan: Plan) -> None:
    """Keep the files that match their manifest rows; delete the others that are selected."""
    for (item, target, _), good in zip(recorded, _check_all(root, recorded, layout)):
        if good is not None:
            plan.rows[item.name] = good
        elif item.index in selected:
            # Deleted before the refetch, so a failed refetch leaves it absent, never damaged.
            _discard(root, target)
            plan.damaged.append(item.name)
        # A damaged image with a row outside the selection is left for `verify` to report.


def _keep_adopted(root: Path, unknown: list[tuple[Item, str]], layout: str, adopt: bool,
                  record: Record | None, note: Callable[[str], None] | None, plan: Plan) -> None:
    """Keep the files with no manifest row that `adopt` allows and that are images; delete the others."""
    if adopt and len(unknown) > 100 and note is not None:
        note(f"reading {len(unknown)} images in {root} that have no manifest row (once)")
    adopted = _adopt_all(root, unknown, layout, record) if adopt else repeat(None)
    for (item, target), good in zip(unknown, adopted):
        if good is not None:
            plan.rows[item.name] = good
            plan.adopted += 1
            plan.adopted_converted += bool(good.converted)
        else:
            # Not known to be this version's image N, or not an image: it must not stay under this name.
            _discard(root, target)
            plan.damaged.append(item.name)


def _list_fetch(metadata: Metadata, layout: str, selection: Sequence[Item], force: bool, reuse: Reuse | None,
                record: Record | None, plan: Plan) -> None:
    """What is left to fetch of the selection, once `reuse` has stored what it could."""
    wanted = []
    for item in selection:
        if not item.url:
            continue
        if item.name in plan.rows and not force:
            plan.already_present += 1
        else:
            wanted.append((item, image_path(item, layout, metadata.classes)))
    if reuse is not None:
        for row in reuse(wanted, plan.rows):
            plan.rows[row.image] = row
            plan.reused.append(row.image)
            if record is not None:
                record(row)
    reused = set(plan.reused)
    plan.fetch.extend(pair for pair in wanted if pair[0].name not in reused)


def _drop_placeholders(root: Path, plan: Plan, note: Callable[[str], None] | None) -> None:
    """Images whose bytes other requests' images share are a server's placeholder, whoever
    stored them: deleted like any damaged image, whatever the selection (`verify` would
    name them), and fetched again when selected, where a placeholder fails by itself."""
    groups = duplicates(plan.rows.values())
    for group in groups:
        for row in group:
            _discard(root, row.path)
            del plan.rows[row.image]
            plan.damaged.append(row.image)
            plan.placeholders += 1
    if groups and note is not None:
        note(f"{plan.placeholders} images in {root} had the same bytes as images of other faces "
             "(placeholders a server sent for missing images?): deleted, to be fetched again")


def _adopt_all(root: Path, unknown: list[tuple[Item, str]], layout: str,
               record: Record | None) -> list[ManifestRow | None]:
    """Adopt files in parallel: a whole upstream tree is ~10,000 decodes and ~2,000 re-encodes,
    and Pillow releases the GIL while it decodes and encodes."""
    lock = threading.Lock()

    def one(job: tuple[Item, str]) -> ManifestRow | None:
        row = _adopt(root, job[0], job[1], layout)
        if row is not None and record is not None:
            with lock:
                record(row)
        return row

    if len(unknown) < 2:
        return [one(job) for job in unknown]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, unknown))


def _discard(root: Path, rel: str) -> None:
    """Delete a file that must not stay under an image's name. One that cannot be deleted (say,
    immutable) is left for the fetch to replace, or to fail that image alone; a disk-wide error
    stops the run."""
    try:
        remove_file(root, rel)
    except OSError as exc:
        if disk_wide(exc):
            raise store_error(f"cannot remove {str(root / rel)!r}", exc) from None


def _check_all(root: Path, recorded: list[tuple[Item, str, ManifestRow]], layout: str) -> list[ManifestRow | None]:
    """`_check` of every file, on every core: hashing releases the GIL, and a whole tree is
    ~10,000 files. In the order given."""
    batches = [recorded[i:i + CHECK_BATCH] for i in range(0, len(recorded), CHECK_BATCH)]
    with TreeReader(root) as reader:
        def check(batch: list[tuple[Item, str, ManifestRow]]) -> list[ManifestRow | None]:
            return [_check(reader, row, target, layout) for _, target, row in batch]

        if len(batches) < 2:
            return [good for batch in batches for good in check(batch)]
        with ThreadPoolExecutor(max_workers=min(len(batches), os.cpu_count() or 1)) as pool:
            return [good for checked in pool.map(check, batches) for good in checked]


def _check(reader: TreeReader, row: ManifestRow, rel: str, layout: str) -> ManifestRow | None:
    """The manifest row for a file on disk, if the file is the one the row describes: the same
    size and SHA-256. It was decoded when that row was written; `verify --deep` decodes it again."""
    try:
        data = reader.read(rel)
    except OSError:
        return None
    if len(data) != row.bytes or sha256(data) != row.sha256:
        return None
    return row if (row.path, row.layout) == (rel, layout) else replace(row, path=rel, layout=layout)


def _adopt(root: Path, item: Item, rel: str, layout: str) -> ManifestRow | None:
    """A file kaokore has no record of (upstream's download.py, or a run that crashed before
    its manifest), kept as this image and normalized in place: upstream stored RGB bodies
    as the server sent them, 200x200 ones included, so they need no second request."""
    try:
        data = read_file(root, rel)
        image = normalize_found(data)
    except (OSError, NotAnImage, ImageTooLarge):
        return None
    if image.converted and image.data != data:
        try:
            # The image write's own rule: a disk-wide error stops the run (StoreError), one of
            # this path alone leaves the image to be fetched, where it fails by itself.
            write_image(root / rel, rel, image.data)
        except PathError:
            return None
    return ManifestRow.of(item, rel, layout, image, sha256(image.data), len(image.data), origin="adopted")


def _move(root: Path, source: str, target: str) -> bool:
    """Move an image to its place in the new layout; False if that one path cannot take it."""
    try:
        move_file(root, source, target)
    except OSError as exc:
        if disk_wide(exc):
            raise store_error(f"cannot move {source} to {target} under {str(root)!r}", exc) from None
        return False
    return True


def _remove_empty_folders(root: Path, layout: str, classes) -> None:
    """After a layout switch, the old layout's folders are left empty; remove those, and only those."""
    keep = set(layout_folders(layout, classes))
    old = any_layout_folders(classes) - keep
    parents = {f.split("/")[0] for f in old if "/" in f} - keep
    for folder in sorted(old | parents, key=lambda f: f.count("/"), reverse=True):
        remove_folder(root, folder)
