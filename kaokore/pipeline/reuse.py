"""Reuse: never ask a server twice for the same pixels.

Two URLs with the same `iiif.request_key` ask a server for the same rendering, whichever
version lists them and however they spell it (http or https; ``256,`` or ``256,256`` on a
square region). Before a download fetches, each image it wants is looked up by that key
among DIR's own images (another image number: 1.2 lists three faces once over http and
once over https) and the trees given with ``--reuse`` (say a complete 1.0 tree, for 1.3).
A file is taken only when:

- its bytes have the SHA-256 and size its tree's manifest row records, and are a 256x256
  RGB JPEG (what any image of a tree must be);
- it is reached under DIR's own link rules, with its tree as the root (`safefs`): nothing
  through a link leading outside that tree, and only where a layout puts an image;
- its row proves it is the rendering asked for: the same URL (scheme aside), or the same
  size spelled the same. Where the sizes are spelled differently (``256,`` for ``256,256``)
  the key assumes a square region, but a region that runs off the page is cut to a
  non-square one, and the two then render different pixels: only a source whose size takes
  the shape of the region served (``w,``, ``,h``, ``!w,h``) and whose recorded source size
  is the size asked for proves the region was square;
- its bytes are no placeholder: the same SHA-256 under different requests, within its tree
  or across the trees and DIR, keeps it out (`placeholders`), whatever else it matches.

It is hard-linked into DIR where both are on one filesystem, else copied (to a temporary,
then renamed, like every write); its manifest row says ``reused`` and where it came from.
The other trees are only read: no lock is taken on them and nothing in them changes.
"""
from __future__ import annotations

import errno
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .. import hints
from ..dataset.iiif import parse, request_key
from ..dataset.metadata import Item, sha256
from ..errors import DirectoryError, UsageError
from ..storage.directory import inspect
from ..storage.records import ManifestRow
from ..storage.safefs import read_file
from ..storage.safewrite import link_file, make_folder, write_file
from ..storage.store import disk_wide, store_error
from .normalize import is_normalized
from .placeholders import duplicates

REUSED = "reused"
# Sizes whose rendering takes the shape of the region the server really cut: "w,", ",h", "!w,h".
_SHAPED = re.compile(r"[0-9]+,|,[0-9]+|![0-9]+,[0-9]+")
_WH = re.compile(r"([0-9]+),([0-9]+)")
# No link can be made, but a copy may: another filesystem, a system that forbids linking another
# user's file (Linux's protected_hardlinks), too many links to one file, a filesystem without links.
_COPY_INSTEAD = frozenset(getattr(errno, n) for n in ("EXDEV", "EPERM", "EMLINK", "ENOTSUP", "EOPNOTSUPP", "ENOSYS")
                          if hasattr(errno, n))
# Outcomes of one attempt to take one file.
LINKED, COPIED = "linked", "copied"
DAMAGED, UNREACHABLE, UNPROVEN = "damaged", "unreachable", "unproven"


@dataclass(frozen=True)
class Source:
    """A tree whose images may be reused: its root as the user named it, and the rows that may serve.

    `own` is DIR itself: its images serve other image numbers with the same request."""

    root: Path
    rows: tuple[ManifestRow, ...]
    own: bool = False

    def where(self, row: ManifestRow) -> str:
        """What a reused row records as its source: the other tree's file, or DIR's own image's name
        (which holds in any layout)."""
        if self.own:
            return row.image
        path = os.path.join(os.path.abspath(self.root), *row.path.split("/"))
        # A path the file system gave in bytes that are not UTF-8 must not make the manifest unwritable.
        return path.encode("utf-8", "backslashreplace").decode("utf-8")


def open_sources(dirs: Iterable[str | os.PathLike] | str | os.PathLike | None,
                 root: str | os.PathLike) -> list[Source]:
    """The ``--reuse`` trees, read once (never written, no lock taken), in the order given.

    Raises
    ------
    DirectoryError
        One does not exist, is not a directory, or is no tree kaokore made (no manifest: a tree
        from upstream's download.py says nothing about which request each file is).
    UsageError
        One is DIR itself.
    """
    if dirs is None or isinstance(dirs, (str, os.PathLike)):
        dirs = [] if dirs is None else [dirs]  # reuse="data" means that one tree, not its letters
    sources, seen = [], set()
    for other in dirs:
        path = Path(other)
        source = _open(path, Path(root))
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            sources.append(source)
    return sources


def _open(path: Path, root: Path) -> Source:
    name = repr(str(path))
    if _same(path, root):
        raise UsageError(f"--reuse {name} is --dir itself; pass the directory of another download")
    if not path.exists():
        raise DirectoryError(f"--reuse {name} does not exist")
    if not path.is_dir():
        raise DirectoryError(f"--reuse {name} is not a directory")
    other = inspect(path)
    if not other.manifest:
        if other.state:  # kaokore's, before any image landed (say a --limit 0 run)
            what = "holds no image kaokore has recorded"
        elif other.image_files or other.files:
            what = ("has no manifest.csv (a tree from upstream's download.py?), so nothing says which request "
                    "each image is")
        else:
            raise DirectoryError(f"--reuse {name} is not a KaoKore tree (no manifest.csv, no metadata files)")
        raise DirectoryError(f"--reuse {name} {what}; complete it first with {hints.command('download', path)}")
    # A row is trusted only at a place where a layout puts its image: a crafted row must not
    # make us read (and link into DIR) any other file of that tree.
    rows = tuple(row for row in other.manifest.values()
                 if row.path in other.image_files and row.path.rpartition("/")[2] == row.image)
    return Source(path, rows)


def _same(path: Path, root: Path) -> bool:
    try:
        return os.path.samefile(path, root)
    except OSError:  # DIR does not exist yet
        return os.path.realpath(path) == os.path.realpath(root)


@dataclass
class Taken:
    """What `take` did: the rows of the images it stored, and what it saw, for the run's notes."""

    rows: list[ManifestRow] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)  # LINKED, COPIED, and per image not taken, why
    by_source: Counter = field(default_factory=Counter)  # source label -> images taken from it
    placeholders: int = 0  # files left out: their bytes stand for different requests

    def notes(self) -> list[str]:
        lines = []
        if self.rows:
            where = ", ".join(f"{n} from {label}" for label, n in self.by_source.most_common())
            lines.append(f"reused {len(self.rows)} images of the same requests instead of fetching them ({where}; "
                         f"{self.outcomes[LINKED]} hard links, {self.outcomes[COPIED]} copies)")
        if self.outcomes[DAMAGED]:
            lines.append(f"{self.outcomes[DAMAGED]} files found for reuse do not match their manifest rows "
                         "(damaged?): fetched instead")
        if self.outcomes[UNPROVEN]:
            lines.append(f"{self.outcomes[UNPROVEN]} images found for reuse were asked for at another size "
                         "spelling, and their recorded size does not show the same rendering: fetched instead")
        if self.placeholders:
            lines.append(f"{self.placeholders} files found for reuse have the same bytes as images of other "
                         "requests (placeholders a server sent?): not reused")
        return lines


def take(root: Path, wanted: Sequence[tuple[Item, str]], kept: Mapping[str, ManifestRow],
         sources: Sequence[Source], layout: str) -> Taken:
    """Store, from files of the same requests, whichever of `wanted` can be; the rest is left to fetch.

    Parameters
    ----------
    root : Path
        DIR.
    wanted : sequence of (Item, str)
        The images the run would fetch, with their paths relative to DIR.
    kept : Mapping of str to ManifestRow
        DIR's images that stay (checked against their rows already): they serve other image
        numbers with the same request, except those in `wanted` (``--force``).
    sources : sequence of Source
        The ``--reuse`` trees, in the order given: the first that holds a good file wins.
    layout : str
        DIR's layout, recorded in the new rows.

    Raises
    ------
    StoreError
        DIR's disk cannot take more (full, over quota, read-only).
    """
    taken = Taken()
    if not wanted:
        return taken
    names = {item.name for item, _ in wanted}
    trees = [Source(root, tuple(r for r in kept.values() if r.image not in names), own=True), *sources]
    if not any(tree.rows for tree in trees):
        return taken  # nothing to take from (a fresh download): no key of the wanted images is needed
    keys = [request_key(item.url) for item, _ in wanted]
    candidates = _candidates(trees, set(keys), taken)
    jobs = [(item, rel, candidates[key]) for (item, rel), key in zip(wanted, keys) if key in candidates]
    if not jobs:
        return taken
    make_folders(root, {rel.rpartition("/")[0] for _, rel, _ in jobs})
    no_links: set[Path] = set()  # trees a link failed for: copied from, from then on
    # Hashing and decoding each file is most of the time; hashlib and Pillow release the GIL.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1, len(jobs))) as pool:
        results = list(pool.map(partial(_take_one, root, layout, no_links), jobs))
    for row, how, tree in results:
        taken.outcomes[how] += 1
        if row is not None:
            taken.rows.append(row)
            taken.by_source["DIR's own images" if tree.own else str(tree.root)] += 1
    return taken


def _candidates(trees: Sequence[Source], keys: set[str], taken: Taken) -> dict[str, list[tuple[Source, ManifestRow]]]:
    """The rows of `trees` that may serve each of `keys`, in the trees' order; placeholders counted
    in `taken` and left out. One placeholder anywhere poisons its bytes everywhere: its tree may
    hold it once, another tree again."""
    shared = {row.sha256 for group in duplicates([row for tree in trees for row in tree.rows]) for row in group}
    candidates: dict[str, list[tuple[Source, ManifestRow]]] = {}
    for tree in trees:
        for row in sorted(tree.rows, key=lambda r: r.image):
            key = request_key(row.url)
            if key not in keys:
                continue
            if row.sha256 in shared:
                taken.placeholders += 1
                continue
            candidates.setdefault(key, []).append((tree, row))
    return candidates


def _take_one(root: Path, layout: str, no_links: set[Path],
              job: tuple[Item, str, list[tuple[Source, ManifestRow]]]) -> tuple[ManifestRow | None, str, Source | None]:
    """The first of an image's candidates that proves itself and can be placed: its new row, how it
    was placed, and its tree; else no row, and why (the worst reason met)."""
    item, rel, holders = job
    seen = set()
    for tree, row in holders:
        how = place(tree, row, root, rel, no_links) if proven(item.url, row) else UNPROVEN
        if how in (LINKED, COPIED):
            new = ManifestRow.of(item, rel, layout, row, row.sha256, row.bytes, origin=REUSED,
                                 source=tree.where(row))
            return new, how, tree
        seen.add(how)
    return None, next(why for why in (DAMAGED, UNREACHABLE, UNPROVEN) if why in seen), None


def proven(url: str, row: ManifestRow) -> bool:
    """Whether `row`'s file is the rendering `url` asks for, as far as the row can prove (the
    request keys being equal already)."""
    if url.partition(":")[2] == row.url.partition(":")[2]:
        return True  # the same request: the scheme does not change the pixels
    want, have = parse(url), parse(row.url)
    if want is None or have is None:
        return False
    if want.size == have.size:
        return True  # only the server's or the region's spelling differs (case, port, zeros): the API's same
    match = _WH.fullmatch(request_key(url).rsplit("/", 3)[1])
    if match is None or not _SHAPED.fullmatch(have.size):
        # "256,256" is rendered 256x256 whatever region the server cut: its size proves nothing.
        return False
    return (row.source_width, row.source_height) == (int(match.group(1)), int(match.group(2)))


def place(tree: Source, row: ManifestRow, root: Path, rel: str, no_links: set[Path]) -> str:
    """Put `tree`'s file of `row` at `rel` under DIR, if its bytes are the row's: how it went."""
    def accept(data: bytes) -> bool:
        return len(data) == row.bytes and sha256(data) == row.sha256 and is_normalized(data)

    if tree.root not in no_links:
        try:
            return LINKED if link_file(tree.root, row.path, root, rel, accept) else DAMAGED
        except OSError as exc:
            _stop_if_disk(exc, root, rel)
            if exc.errno not in _COPY_INSTEAD:
                return UNREACHABLE  # gone, or a link leading outside its tree: never followed
            no_links.add(tree.root)
    try:
        data = read_file(tree.root, row.path)  # never through a link leading outside the tree
    except OSError:
        return UNREACHABLE
    if not accept(data):
        return DAMAGED
    try:
        write_file(root, rel, data)
    except OSError as exc:
        _stop_if_disk(exc, root, rel)
        return UNREACHABLE  # this path alone cannot be written: the fetch meets it, and fails by itself
    return COPIED


def _stop_if_disk(exc: OSError, root: Path, rel: str) -> None:
    if disk_wide(exc):
        raise store_error(f"cannot write {str(root / rel)!r}", exc) from None


def make_folders(root: Path, folders: Iterable[str]) -> None:
    for folder in sorted(folders):
        try:
            make_folder(root, folder)
        except OSError as exc:
            _stop_if_disk(exc, root, folder)  # any other error: that folder's images are fetched, and fail there


def planner(root: Path, sources: Sequence[Source], layout: str,
            note: Callable[[str], None]) -> Callable[[Sequence[tuple[Item, str]], Mapping[str, ManifestRow]],
                                                     list[ManifestRow]]:
    """`take`, as `plan.make_plan` calls it: wanted images and the rows kept in, the rows of those taken out."""
    def reuse(wanted, kept):
        taken = take(root, wanted, kept, sources, layout)
        for line in taken.notes():
            note(line)
        if sources and not taken.rows and wanted:
            note(f"nothing to reuse for these images in {', '.join(str(s.root) for s in sources)}")
        return taken.rows
    return reuse
