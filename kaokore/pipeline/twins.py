"""The same request twice in one run: fetched once.

Within one run, images whose URLs make the same request spelled the same (scheme and the
host's letter case aside) are fetched once (`split_twins`): the first is fetched, the others are stored from its file
afterwards (`store_twins`) and never reach the scheduler, so they count against no host.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..dataset.iiif import key_of, parse
from ..dataset.metadata import Item
from ..storage.records import ManifestRow
from .records import Failure
from .report import Summary
from .reuse import COPIED, LINKED, REUSED, Source, make_folders, place


@dataclass(frozen=True)
class Twin:
    """An image whose URL makes the same request as an earlier one of the run (`primary`), spelled
    the same: stored from the primary's file once it has landed, never requested."""

    item: Item
    rel: str
    primary: Item


def split_twins(todo: Sequence[tuple[Item, str]]) -> tuple[list[tuple[Item, str]], list[Twin]]:
    """What to fetch, and the twins of it that wait for their primary."""
    # Keying every URL cost a fifth of the time to the first request. Twins are almost always one
    # URL under two schemes (1.2's http/https pairs), so only URLs that are alike once the scheme
    # and case are set aside are keyed; a twin spelled otherwise (a default port written out, a
    # zero-padded region) is then fetched twice, which costs a request and nothing else.
    roughs = [url.partition(":")[2].lower() for url in (item.url for item, _ in todo)]
    alike = Counter(roughs)
    if len(alike) == len(roughs):  # no two alike: every version but 1.2
        return list(todo), []
    first: dict[tuple[str, str], Item] = {}
    fetch, twins = [], []
    for (item, rel), rough in zip(todo, roughs):
        if alike[rough] == 1:
            fetch.append((item, rel))
            continue
        request = parse(item.url)
        # The key and the size as written: the same size spelling is the same rendering (see `reuse.proven`).
        spelled = (key_of(request, item.url), request.size if request is not None else "")
        primary = first.setdefault(spelled, item)
        if primary is item:
            fetch.append((item, rel))
        else:
            twins.append(Twin(item, rel, primary))
    return fetch, twins


def store_twins(root: Path, twins: Sequence[Twin], rows: dict[str, ManifestRow], summary: Summary,
                layout: str) -> int:
    """Store each twin from its primary's file, now that the fetching is over, into `rows` and
    `summary` (as reused); how many were stored. A twin whose primary failed fails with it; one
    whose primary was never tried (or all, when the run was interrupted) is not attempted either.

    Raises
    ------
    StoreError
        DIR's disk cannot take more; `rows` and `summary` are left as they were.
    """
    if not twins or summary.interrupted:
        return 0
    stored, failures = [], []
    failed = {f.image: f for f in summary.failures}
    own = Source(root, (), own=True)
    make_folders(root, {twin.rel.rpartition("/")[0] for twin in twins})
    for twin in twins:
        primary = rows.get(twin.primary.name)
        if primary is not None and primary.url == twin.primary.url:
            how = place(own, primary, root, twin.rel, set())
            if how in (LINKED, COPIED):
                stored.append(replace(primary, image=twin.item.name, path=twin.rel, url=twin.item.url,
                                      layout=layout, origin=REUSED, source=own.where(primary)))
            else:
                failures.append(Failure(twin.item.name, twin.item.url,
                                        f"cannot store it from {primary.path}, the same request ({how}); "
                                        "a rerun fetches it", 0))
        elif twin.primary.name in failed:
            error = failed[twin.primary.name].error
            failures.append(Failure(twin.item.name, twin.item.url,
                                    f"{error} (the same request as {twin.primary.name}, which failed: "
                                    "not asked twice)", 0))
    rows.update((row.image, row) for row in stored)
    summary.reused += len(stored)
    summary.failures.extend(failures)
    return len(stored)
