"""A run's bookkeeping: the summary's counts, and manifest.csv and failures.csv, saved however it ended."""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from ..dataset.metadata import Item
from ..storage.manifest import read_failures, write_failures, write_manifest
from ..storage.records import ManifestRow
from ..storage.store import StoreError, release_space, reserve_space
from .plan import Plan
from .records import Failure
from .report import Summary


def count_plan(summary: Summary, plan: Plan) -> None:
    """The summary's counts of what the plan found, before anything is fetched."""
    summary.total = plan.total
    summary.already_present = plan.already_present
    summary.unavailable = plan.unavailable
    summary.relocated = plan.relocated
    summary.damaged = len(plan.damaged)
    summary.adopted = plan.adopted
    summary.reused = len(plan.reused)


def settle(summary: Summary, meant: Collection[str], twins_stored: int = 0) -> None:
    """`failed` and `not_attempted`, once the fetching is over, however it ended.

    Each image the run meant to fetch (`meant`, by name) was stored (`downloaded`, or from the
    file of its twin's request), failed, or never attempted: the run was interrupted, or the
    disk stopped it. A failure of an image kept from before (a placeholder taken back out) is
    failed too, but was never meant."""
    summary.failed = len(summary.failures)
    failed_here = sum(1 for failure in summary.failures if failure.image in meant)
    summary.not_attempted = max(len(meant) - summary.downloaded - twins_stored - failed_here, 0)


def reserve(root: Path, rows: Mapping[str, ManifestRow], todo: Sequence[tuple[Item, str]]) -> None:
    """Room, generously, for the manifest and failures.csv this run ends with, set aside while it fetches:
    a row per image kept, and per image fetched a row in one file or the other (errors ~300 characters)."""
    kept = sum(len(r.url) + 2 * len(r.path) + 200 for r in rows.values())
    fetched = sum(len(item.url) + max(2 * len(rel) + 200, 330) for item, rel in todo)
    reserve_space(root, (kept + fetched) * 5 // 4 + 64 * 1024)


def save(root: Path, rows: Mapping[str, ManifestRow], summary: Summary, selection: Sequence[Item]) -> StoreError | None:
    """Give back the room `reserve` set aside, then write the manifest and failures.csv, each whatever
    became of the other. Never raises: an error here must not hide the one that stopped the run.
    Returns the first error, if any."""
    release_space(root)
    first = None
    for write in (lambda: write_manifest(root, rows.values()),
                  lambda: write_failures(root, [*summary.failures, *_earlier_failures(root, selection, rows)])):
        try:
            write()
        except StoreError as exc:
            first = first or exc
    return first


def _earlier_failures(root: Path, selection: Sequence[Item], rows: Mapping[str, ManifestRow]) -> list[Failure]:
    """Failures of earlier runs outside this run's selection that are still missing:
    a `--split dev` run must not erase the record of train images that never arrived."""
    selected = {item.name for item in selection}
    kept = []
    for old in read_failures(root):
        if old["image"] not in selected and old["image"] not in rows:
            attempts = int(old["attempts"]) if old["attempts"].isascii() and old["attempts"].isdigit() else 0
            kept.append(Failure(old["image"], old["url"], old["error"], attempts))
    return kept
