"""Planning: which images are already good on disk, which move, which must be fetched.

Runs before any image request. Present files are trusted only after they match
their manifest row (size, then SHA-256) or, with no row, decode as a finished
256x256 RGB JPEG; anything else is deleted so that it is fetched afresh and
never sits damaged under a final name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .errors import DirectoryError, UsageError
from .layout import SPLITS, UNLABELED, all_folders, candidate_paths, every_folder, image_path
from .metadata import Item, Metadata, sha256
from .normalize import is_normalized
from .store import ManifestRow, file_sha256

SPLIT_CHOICES = (*SPLITS, UNLABELED)


@dataclass
class Plan:
    fetch: list[tuple[Item, str]] = field(default_factory=list)  # (item, path relative to DIR)
    rows: dict[str, ManifestRow] = field(default_factory=dict)  # every good image on disk, selected or not
    already_present: int = 0  # of the selection
    relocated: int = 0
    damaged: list[str] = field(default_factory=list)  # present but not the right bytes: deleted, fetched again
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
        chosen = [i for i in chosen if (i.split or UNLABELED) in wanted]
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


def make_plan(root: Path, metadata: Metadata, layout: str, selection: Sequence[Item],
              old_rows: Mapping[str, ManifestRow], force: bool = False) -> Plan:
    plan = Plan()
    selected = {item.index for item in selection}
    plan.unavailable = sum(1 for item in selection if not item.url)
    plan.total = len(selection) - plan.unavailable
    classes = metadata.classes
    for item in metadata.downloadable:
        target = image_path(item, layout, classes)
        row = old_rows.get(item.name)
        is_selected = item.index in selected
        found = _locate(root, item, row, target, classes)
        if found is not None and row is not None and row.url != item.url:
            # The file is the image of another URL (the metadata changed): never keep it under this name.
            _unlink(root / found)
            plan.damaged.append(item.name)
            found = None
        elif found is not None:
            if found != target:
                _move(root, found, target)
                plan.relocated += 1
            good = _check(root / target, item, row, target, layout)
            if good is not None:
                plan.rows[item.name] = good
            elif is_selected:
                # Deleted before the refetch, so a failed refetch leaves it absent, never damaged.
                _unlink(root / target)
                plan.damaged.append(item.name)
            # A damaged image outside the selection is left for `verify` to report.
        if not is_selected:
            continue
        if item.name in plan.rows and not force:
            plan.already_present += 1
        else:
            plan.fetch.append((item, target))
    if plan.relocated:
        _remove_empty_folders(root, layout, classes)
    return plan


def _locate(root: Path, item: Item, row: ManifestRow | None, target: str, classes) -> str | None:
    candidates = candidate_paths(item, classes)
    # The manifest is a file in the user's folder: its path is trusted only where a layout could
    # put the image, or a crafted row would have us move and delete files outside DIR.
    if row is not None and row.path in candidates and (root / row.path).is_file():
        return row.path
    # The target first: after an interrupted layout switch, both places may hold the image.
    for candidate in [target, *(p for p in candidates if p != target)]:
        if (root / candidate).is_file():
            return candidate
    return None


def _check(path: Path, item: Item, row: ManifestRow | None, rel: str, layout: str) -> ManifestRow | None:
    """The manifest row for a file on disk, if the file is good; None if it is damaged."""
    if row is not None:
        try:
            if path.stat().st_size != row.bytes or file_sha256(path) != row.sha256:
                return None
        except OSError:
            return None
        return replace(row, path=rel, layout=layout)
    # No row: a run that crashed before saving its manifest, or files from another tool.
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not is_normalized(data):
        return None
    return ManifestRow(item.name, rel, item.url, sha256(data), len(data),
                       None, None, "", None, layout)


def _move(root: Path, found: str, target: str) -> None:
    try:
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        os.replace(root / found, root / target)
    except OSError as exc:
        raise DirectoryError(f"cannot move {found} to {target} under {str(root)!r}: {exc.strerror or exc}") from None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _remove_empty_folders(root: Path, layout: str, classes) -> None:
    """After a layout switch, the old layout's folders are left empty; remove those, and only those."""
    keep = set(all_folders(layout, classes))
    old = every_folder(classes) - keep
    parents = {f.split("/")[0] for f in old if "/" in f} - keep
    for folder in sorted(old | parents, key=lambda f: f.count("/"), reverse=True):
        try:
            (root / folder).rmdir()
        except OSError:
            pass
