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
from ..dataset import versions
from ..dataset.layout import (
    DEFAULT_LAYOUT,
    FLAT_FOLDER,
    LAYOUTS,
    TOP_FOLDERS,
    candidate_paths,
    guess_layout,
    image_path,
)
from ..dataset.versions import DEFAULT_VERSION, METADATA_FILES, Version, get_version
from ..errors import DirectoryError, UsageError
from .safefs import read_file, scan_names
from .store import ManifestRow, read_manifest, read_state

# The files whose bytes tell one version from another, strongest first: urls.txt decides
# which image N is; labels.csv and original_tags.txt are what upstream's download.py copies.
IDENTIFYING_FILES = ("urls.txt", "labels.csv", "original_tags.txt")


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

    rel: str  # relative to DIR, '/' separators
    row: ManifestRow | None  # None: an image kaokore has no record of (another tool's, or a run that crashed)


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
    state: Mapping  # kaokore.json (only the keys of the expected types)
    manifest: Mapping[str, ManifestRow]
    files: Mapping[str, bytes]  # the metadata copies present at the root
    version: Version | None  # the version DIR positively holds; None when it cannot tell
    evidence: str  # how the version was told, or why it could not be
    layout: str
    image_files: frozenset[str]  # every NNNNNNNN.jpg in a folder some layout uses, relative to DIR

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
    version, evidence = _identify(files, state)
    layout = _detect_layout(state, manifest, image_files)
    return DatasetDir(root, state, manifest, files, version, evidence, layout, image_files)


def _scan_images(root: Path) -> set[str]:
    """One directory listing per folder, not one stat per image: a full tree is ~10,000 files.
    A folder that is a symbolic link leading outside DIR is not read: what is there is not DIR's."""
    found: set[str] = set()
    image = md.IMAGE_NAME.fullmatch
    for top in TOP_FOLDERS:
        files, folders = scan_names(root, top)
        found.update(f"{top}/{name}" for name in files if image(name))
        if top != FLAT_FOLDER:
            for name in folders:
                sub = f"{top}/{name}"
                found.update(f"{sub}/{n}" for n in scan_names(root, sub)[0] if image(n))
    return found


def _identify(files: Mapping[str, bytes], state: Mapping) -> tuple[Version | None, str]:
    """The version DIR holds, judged by its files' pins first and its state file second.

    urls.txt decides which image N is: when DIR has one that matches no pin (the user's own,
    from --metadata-dir), the pins of its other files say nothing about its images.
    """
    pinned_as: dict[str, set[str]] = {}  # file -> the versions whose pin it matches
    for name in IDENTIFYING_FILES:
        if name in files:
            digest = md.sha256(files[name])
            pinned_as[name] = {v.name for v in versions.VERSIONS.values() if v.sha256[name] == digest}
    said = state.get("dataset_version") if state.get("dataset_version") in versions.VERSIONS else None
    own_urls = "urls.txt" in pinned_as and not pinned_as["urls.txt"]
    matched = {n: vs for n, vs in pinned_as.items() if vs}
    if matched and not own_urls:
        common = set.intersection(*matched.values())
        if not common:
            parts = ", ".join(f"{n} is {' or '.join(sorted(vs))}'s" for n, vs in matched.items())
            return None, f"its metadata files belong to different versions ({parts})"
        source = next(n for n in IDENTIFYING_FILES if n in matched)
        name = said if said in common else sorted(common)[0]
        if said and said not in common:
            return None, f"kaokore.json says {said} but {source} is {name}'s"
        return versions.VERSIONS[name], f"{source} is the pinned copy of {name}"
    if said:
        recorded = state.get("metadata_sha256") or {}
        # kaokore.json written before the digests were recorded trusts the urls.txt it sits with.
        if own_urls and "urls.txt" in recorded and recorded["urls.txt"] != md.sha256(files["urls.txt"]):
            return None, f"kaokore.json says {said}, but urls.txt has changed since it was written"
        # Custom metadata (--metadata-dir), or pinned copies since deleted or edited: the state is our record.
        return versions.VERSIONS[said], f"kaokore.json says {said}"
    if own_urls:
        return None, "its urls.txt matches no pinned version and it has no kaokore.json"
    if not files:
        return None, "it has no metadata files (labels.csv, urls.txt, ...) and no kaokore.json"
    return None, "none of its metadata files matches a pinned version and it has no kaokore.json"


def _detect_layout(state: Mapping, manifest: Mapping[str, ManifestRow], image_files: frozenset[str]) -> str:
    """The state file says; failing that the manifest, and failing that where the images are."""
    if state.get("layout") in LAYOUTS:
        return state["layout"]
    if manifest:
        return Counter(r.layout for r in manifest.values()).most_common(1)[0][0]
    return guess_layout(rel.rsplit("/", 1)[0] for rel in image_files)


@dataclass(frozen=True)
class Resolved:
    """What a download will make of DIR; what `resolve` returns.

    Attributes
    ----------
    version : Version
        The version the download completes DIR in.
    layout : str
        The layout it leaves DIR in.
    adopt : bool
        Whether files with no manifest row may be kept as this version's images.
    """

    version: Version
    layout: str
    adopt: bool  # whether files with no manifest row may be kept as this version's images


def resolve(d: DatasetDir, dataset_version: str | Version | None, layout: str | None,
            custom_files: Mapping[str, bytes] | None = None) -> Resolved:
    """The version and layout a download completes DIR in, or a one-line refusal.

    A recognised tree is completed in its own version; an explicit version that
    contradicts it is refused. A tree holding images of a version nobody can tell
    is refused unless the user names the version.

    Parameters
    ----------
    d : DatasetDir
        What `inspect` found.
    dataset_version : str or Version, optional
        The version asked for; None: DIR's own, else that of the custom files, else "1.0".
    layout : str, optional
        The layout asked for; None: DIR's own when it holds images (or kaokore.json
        names one), else "split".
    custom_files : Mapping of str to bytes, optional
        The metadata files of ``--metadata-dir``, by name.

    Returns
    -------
    Resolved

    Raises
    ------
    UsageError
        An unknown version; a version that contradicts DIR's or the custom files';
        or images of a version that cannot be told, and none named.
    """
    def named(name: str) -> Version:
        # A caller's own registry entry (tests, benchmarks, mirrors) is taken as it is.
        return dataset_version if isinstance(dataset_version, Version) else get_version(name)

    requested = dataset_version.name if isinstance(dataset_version, Version) else dataset_version
    if requested is not None:
        named(requested)  # an unknown name is a usage error before anything else
    custom = _custom_version(custom_files)
    if custom is not None and requested is not None and custom.name != requested:
        raise UsageError(f"the --metadata-dir files are KaoKore {custom.name}'s, not {requested}'s; "
                         f"pass --dataset_version {custom.name}")
    requested = requested or (custom.name if custom else None)
    where = str(d.root)
    if d.version is not None:
        if requested is not None and requested != d.version.name:
            raise UsageError(f"{where} holds KaoKore {d.version.name} ({d.evidence}), not {requested}; "
                             f"use another --dir for {requested}: {_reuse_hint(d, requested)}")
        version = named(d.version.name)
        adopt = _may_adopt(d, version, custom_files)
    elif d.holds_images:
        if requested is None:
            raise UsageError(f"cannot tell which KaoKore version {where} holds ({d.evidence}); "
                             f"pass --dataset_version")
        version = named(requested)
        adopt = _may_adopt(d, version, custom_files)  # the user has said which version the images are
    else:
        version = named(requested or DEFAULT_VERSION)
        adopt = False  # nothing to adopt
    chosen = layout or (d.layout if d.holds_images or d.state.get("layout") in LAYOUTS else DEFAULT_LAYOUT)
    return Resolved(version, chosen, adopt)


def _reuse_hint(d: DatasetDir, requested: str) -> str:
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

    command = hints.reuse_command(hints.beside(d.root, requested, usable), requested, d.root)
    if d.manifest:
        return f"{command} fetches only the images {d.root} lacks"
    # A tree from upstream's download.py has no manifest, and is no source until kaokore has completed it.
    return f"{hints.command('download', d.root)} first completes {d.root}, then {command} fetches only what it lacks"


def _custom_version(files: Mapping[str, bytes] | None) -> Version | None:
    """The pinned version the user's --metadata-dir files are, if they are one."""
    if files is None or "urls.txt" not in files:
        return None
    digest = md.sha256(files["urls.txt"])
    return next((v for v in versions.VERSIONS.values() if v.sha256["urls.txt"] == digest), None)


def _may_adopt(d: DatasetDir, version: Version, custom_files: Mapping[str, bytes] | None) -> bool:
    """Whether a file with no manifest row may be kept as image N: only if the urls.txt this run
    numbers images by (the user's own, or `version`'s pinned one) is the one DIR's images came from."""
    digest = md.sha256(custom_files["urls.txt"]) if custom_files is not None else version.sha256["urls.txt"]
    if "urls.txt" in d.files:
        return md.sha256(d.files["urls.txt"]) == digest
    if d.version is not None:  # recognised without a urls.txt (upstream's tree): by its pins
        return digest == d.version.sha256["urls.txt"]
    return True  # nothing in DIR says otherwise, and the user has named the version


# ---- reading a complete tree (verify, info, preview) ---------------------------------------------

@dataclass(frozen=True)
class Tree:
    """A dataset directory with its metadata parsed and the images that are where its layout puts them.

    What `open_tree` returns; `root`, `layout`, `state`, `manifest` and `version` are
    those of `dir`.

    Attributes
    ----------
    dir : DatasetDir
        What `inspect` found.
    meta : Metadata
        The parsed metadata files.
    present : frozenset of str
        Names of the images found at the path the layout gives them.
    """

    dir: DatasetDir
    meta: md.Metadata
    present: frozenset[str]  # names of images found at the path the layout gives them

    @property
    def root(self) -> Path:
        return self.dir.root

    @property
    def layout(self) -> str:
        return self.dir.layout

    @property
    def state(self) -> Mapping:
        return self.dir.state

    @property
    def manifest(self) -> Mapping[str, ManifestRow]:
        return self.dir.manifest

    @property
    def version(self) -> Version | None:
        return self.dir.version

    def path(self, item: md.Item) -> Path:
        """Where the layout puts `item`, present or not."""
        return self.dir.path(item, self.meta.classes)


def open_tree(dir: str | os.PathLike) -> Tree:
    """Read DIR for `verify`, `info` and `preview`: all five metadata copies must be there.

    Parameters
    ----------
    dir : str or os.PathLike
        The dataset directory.

    Returns
    -------
    Tree

    Raises
    ------
    DirectoryError
        DIR does not exist, is not a directory, or lacks a metadata file.
    MetadataError
        A metadata file is malformed.
    """
    d = inspect(dir)
    root = d.root
    if not root.exists():
        raise DirectoryError(f"{str(root)!r} does not exist; {hints.download_first(root)}")
    if not root.is_dir():
        raise DirectoryError(f"{str(root)!r} is not a directory")
    if not d.files:
        raise DirectoryError(f"{str(root)!r} holds no KaoKore metadata (urls.txt, labels.csv, ...); "
                             f"{hints.download_first(root)}")
    missing = [name for name in METADATA_FILES if name not in d.files]
    if missing:
        what = "a tree from upstream's download.py" if d.image_files and "urls.txt" in missing else "incomplete"
        raise DirectoryError(f"{str(root)!r} lacks {', '.join(missing)} ({what}); "
                             f"{hints.command('download', root)} completes it")
    meta = md.parse(d.files, pinned=d.pinned)
    present = frozenset(item.name for item in meta.downloadable
                        if image_path(item, d.layout, meta.classes) in d.image_files)
    return Tree(d, meta, present)
