"""The dataset directory: which version DIR holds, in which layout, and where image N is.

Every command reads DIR through here (download's planning, verify, info, preview and
both loaders), so they cannot disagree about a tree. The answer is drawn from all the
evidence DIR holds: kaokore.json, the manifest, the SHA-256 of urls.txt, labels.csv and
original_tags.txt against the pins of every version, and the folders that hold images.
A tree made by upstream's download.py (images_256/ and four metadata copies, no
urls.txt, no kaokore.json) is recognised by its labels.csv.

Image N of one version is not image N of another, so "cannot tell" is an answer
here: a caller must then refuse to keep files it has no record of.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .. import hints
from ..dataset import metadata as md
from ..dataset.labels import IMAGE_NAME
from ..dataset.layout import (
    FLAT_FOLDER,
    LAYOUTS,
    TOP_FOLDERS,
    candidate_paths,
    guess_layout,
    image_path,
)
from ..dataset.versions import METADATA_FILES, Version
from ..errors import DirectoryError, UsageError
from .identify import IDENTIFYING_FILES, judge_version
from .manifest import read_manifest, read_state
from .records import ManifestRow
from .safefs import read_file, scan_names


@dataclass(frozen=True)
class Found:
    """A file at a place where some layout puts an image; what `DatasetDir.locate` returns.

    Attributes
    ----------
    rel : str
        Its path relative to DIR, with '/' separators.
    row : ManifestRow or None
        The manifest's record of the image, if it has one; None for an image kaokore
        has no record of (another tool's, or a run that crashed). Whether the file is
        that record's bytes is not checked.
    """

    rel: str
    row: ManifestRow | None


@dataclass(frozen=True)
class DatasetDir:
    """What a dataset directory holds, as far as its files tell; what `inspect` returns.

    Attributes
    ----------
    root : Path
        The directory.
    state : Mapping
        kaokore.json (only its keys of the expected types); empty when absent.
    manifest : Mapping of str to ManifestRow
        manifest.csv's rows by image name; empty when absent.
    files : Mapping of str to bytes
        The metadata files present at the root, by name.
    version : Version or None
        The version DIR positively holds; None when it cannot tell.
    evidence : str
        How the version was told, or why it could not be.
    layout : str
        DIR's layout, from kaokore.json, else the manifest, else where its images are
        (a tree with none is "split").
    image_files : frozenset of str
        Every ``NNNNNNNN.jpg`` in a folder some layout uses, relative to DIR.
    """

    root: Path
    state: Mapping
    manifest: Mapping[str, ManifestRow]
    files: Mapping[str, bytes]
    version: Version | None
    evidence: str
    layout: str
    image_files: frozenset[str]

    @cached_property
    def image_names(self) -> frozenset[str]:
        """The names (NNNNNNNN.jpg) of `image_files`."""
        return frozenset(rel.rpartition("/")[2] for rel in self.image_files)

    @property
    def holds_images(self) -> bool:
        """Whether DIR has images (or a record of them) that belong to some version."""
        return bool(self.image_files or self.manifest)

    @property
    def pinned(self) -> bool:
        """Whether every metadata copy is byte for byte the pinned file of DIR's version."""
        return self.version is not None and all(
            name in self.files and md.sha256(self.files[name]) == digest
            for name, digest in self.version.sha256.items())

    def version_for(self, requested: str | None = None, *, default: str | None = None, firm: bool = True) -> str:
        """The name of the version a command works on in DIR, or a one-line refusal: the one rule
        every command that takes a version (download, verify) follows.

        DIR's own `version` when it is known, else `requested`, else `default` when DIR holds
        no images. A `requested` version that contradicts DIR's is refused when `firm` (a
        download would mix two versions' images; the refusal says where the other version can
        go), else only when DIR's metadata files are its version's pinned bytes: otherwise
        they are checked against `requested`, which then wins.

        Parameters
        ----------
        requested : str, optional
            The name of the version asked for (a known one).
        default : str, optional
            The version of a DIR that holds no images and says nothing; None: such a DIR is refused.
        firm : bool
            Refuse any `requested` that contradicts DIR's version, not only one its pinned files contradict.

        Raises
        ------
        UsageError
            `requested` contradicts DIR's version; or nothing tells the version, and none was asked for.
        """
        known = self.version
        if known is not None and requested is not None and requested != known.name:
            if not firm and not self.pinned:
                return requested
            where = f"; use another --dir for {requested}: {_reuse_hint(self, requested)}" if firm else ""
            raise UsageError(f"{self.root} holds KaoKore {known.name} ({self.evidence}), not {requested}{where}")
        if known is not None:
            return known.name
        if requested is not None:
            return requested
        if default is not None and not self.holds_images:
            return default
        raise UsageError(f"cannot tell which KaoKore version {self.root} holds ({self.evidence}); "
                         f"pass --dataset_version")

    @property
    def metadata_origin(self) -> str:
        """Whose DIR's metadata files are: "pinned" (byte for byte its version's), "custom" (the user's
        own, from --metadata-dir), "altered" (neither) or "unknown" (no version can be told)."""
        if self.pinned:
            return "pinned"
        if self.version is None:
            return "unknown"
        # From --metadata-dir: there is no pin to hold the files to.
        return "custom" if self.state.get("metadata_pinned") is False else "altered"

    def own_metadata(self) -> dict[str, bytes] | None:
        """DIR's metadata copies when DIR was downloaded from the user's own files (``--metadata-dir``)
        and they are still the files kaokore.json recorded; else None.

        A bare rerun of such a tree reads them as the run that made it did: the pinned files of
        its version would number other images, and every image would look damaged.
        """
        recorded = self.state.get("metadata_sha256") or {}
        if self.state.get("metadata_pinned") is not False or not recorded:
            return None
        if any(name not in self.files for name in METADATA_FILES):
            return None
        if any(md.sha256(self.files[name]) != recorded.get(name) for name in IDENTIFYING_FILES):
            return None
        return dict(self.files)

    def locate(self, item: md.Item, classes: Mapping[str, Sequence[str]], layout: str | None = None) -> Found | None:
        """Where image `item` is, if anywhere a layout puts it.

        `layout`'s place is looked at first (by default DIR's own), since after an
        interrupted layout switch an image may be in two places.

        Parameters
        ----------
        item : Item
            The image.
        classes : Mapping of str to sequence of str
            The class names by category, which name the class folders.
        layout : str, optional
            The layout whose place comes first (default: DIR's).

        Returns
        -------
        Found or None
            The file and the manifest's record of the image, if it has one (whether the
            file is that record's bytes is for the caller to check); None when absent.
        """
        if item.name not in self.image_names:
            return None
        row = self.manifest.get(item.name)
        first = image_path(item, layout or self.layout, classes)
        if first in self.image_files:  # where nearly every image is: no other place to look at
            return Found(first, row)
        candidates = candidate_paths(item, classes)
        order = [first]
        # The manifest is a file in the user's folder: its path is trusted only where a
        # layout could put the image, or a crafted row would have us read or move anything.
        if row is not None and row.path in candidates:
            order.append(row.path)
        order += candidates
        for rel in dict.fromkeys(order):
            if rel in self.image_files:
                return Found(rel, row)
        return None

    def path(self, item: md.Item, classes: Mapping[str, Sequence[str]]) -> Path:
        """Where this layout puts `item`, present or not."""
        return self.root / image_path(item, self.layout, classes)


class _LaterManifest(Mapping):
    """manifest.csv (and the journal), read the first time a row is asked for."""

    def __init__(self, root: Path):
        self._root, self._rows = root, None

    def _read(self) -> Mapping[str, ManifestRow]:
        if self._rows is None:
            self._rows = read_manifest(self._root)
        return self._rows

    def __getitem__(self, name: str) -> ManifestRow:
        return self._read()[name]

    def __iter__(self):
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


def inspect(dir: str | os.PathLike, *, manifest_later: bool = False) -> DatasetDir:
    """Read what DIR holds: its version, layout, metadata files, manifest and images.

    A missing DIR is an empty one; nothing is written. Unreadable or foreign
    bookkeeping files read as absent.

    Parameters
    ----------
    dir : str or os.PathLike
        The dataset directory.
    manifest_later : bool
        Read the manifest only if something asks for a row of it (a first look that
        usually needs none of its ~10,000 rows); only for a look after which nothing
        writes to DIR before the rows are asked for.

    Returns
    -------
    DatasetDir

    Raises
    ------
    DirectoryError
        `dir` is a file.
    """
    root = Path(dir)
    if root.exists() and not root.is_dir():
        raise DirectoryError(f"cannot use {str(root)!r} as the dataset directory: it is a file")
    files = {}
    for name in METADATA_FILES:
        try:
            files[name] = read_file(root, name)  # a link leading outside DIR reads as absent
        except OSError:
            continue
    state = read_state(root)
    manifest = _LaterManifest(root) if manifest_later else read_manifest(root)
    image_files = frozenset(_scan_images(root))
    version, evidence = judge_version(files, state)
    layout = _detect_layout(state, manifest, image_files)
    return DatasetDir(root, state, manifest, files, version, evidence, layout, image_files)


def _scan_images(root: Path) -> set[str]:
    """One directory listing per folder, not one stat per image: a full tree is ~10,000 files.
    A folder that is a symbolic link leading outside DIR is not read: what is there is not DIR's."""
    images: set[str] = set()
    image = IMAGE_NAME.fullmatch
    for top in TOP_FOLDERS:
        files, folders = scan_names(root, top)
        images.update(f"{top}/{name}" for name in files if image(name))
        if top != FLAT_FOLDER:
            for name in folders:
                sub = f"{top}/{name}"
                images.update(f"{sub}/{n}" for n in scan_names(root, sub)[0] if image(n))
    return images


def _detect_layout(state: Mapping, manifest: Mapping[str, ManifestRow], image_files: frozenset[str]) -> str:
    """The state file says; failing that the manifest, and failing that where the images are."""
    if state.get("layout") in LAYOUTS:
        return state["layout"]
    if manifest:
        return Counter(r.layout for r in manifest.values()).most_common(1)[0][0]
    return guess_layout(rel.rsplit("/", 1)[0] for rel in image_files)


def _reuse_hint(dataset_dir: DatasetDir, requested: str) -> str:
    """The download of `requested` beside DIR that takes DIR's images of the same requests (the
    versions share most of them), into a directory that would not refuse it."""
    def usable(path: Path) -> bool:
        if not path.exists():
            return True
        try:
            other = inspect(path)
        except DirectoryError:
            return False
        return other.version.name == requested if other.version is not None else not other.holds_images

    root = dataset_dir.root
    command = hints.reuse_command(hints.beside(root, requested, usable), requested, root)
    if dataset_dir.manifest:
        return f"{command} fetches only the images {root} lacks"
    # A tree from upstream's download.py has no manifest, and is no source until kaokore has completed it.
    return f"{hints.command('download', root)} first completes {root}, then {command} fetches only what it lacks"
