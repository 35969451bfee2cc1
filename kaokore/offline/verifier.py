"""`kaokore verify`: prove, without the network, that a downloaded tree is complete and intact.

Every image kaokore writes was decoded in full first, and its manifest row records its
SHA-256. So an image whose bytes still hash to its row is that decoded image: plain
`verify` hashes it and reads its header (format, size, mode). One with no row, and
every image under `deep=True` (`kaokore verify --deep`), is decoded in full. The
work is spread over every core: hashing and decoding release the GIL.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import defaults
from ..dataset import metadata as md
from ..dataset.layout import SPLITS, TOP_FOLDERS, image_path, layout_folders
from ..dataset.versions import METADATA_FILES, Version, get_version
from ..description.fingerprint import dataset_fingerprint
from ..description.listing import HF_METADATA
from ..errors import EXIT_INCOMPLETE, EXIT_OK
from ..pipeline.normalize import has_normalized_header, is_normalized
from ..pipeline.placeholders import duplicates
from ..pipeline.plan import select
from ..storage.lock import refuse_while_held
from ..storage.records import MANIFEST, ManifestRow
from ..storage.safefs import TreeReader, scan
from ..storage.tree import Tree, open_tree

PROBLEMS_SHOWN = 20  # per kind, in the text report
BATCH = 128  # images per task of the checking threads


@dataclass(frozen=True)
class Problem:
    """One thing `verify` found wrong with a tree.

    Attributes
    ----------
    where : str
        An image name (``NNNNNNNN.jpg``), or a path relative to DIR.
    kind : str
        ``"missing"`` (absent or unreadable), ``"checksum"`` (not the bytes its manifest
        row records), ``"not-normalized"`` (not a decodable 256x256 RGB JPEG),
        ``"unlisted"`` (no manifest row), ``"duplicate"`` (the same SHA-256 as the
        manifest rows of other faces, whose requests differ: a placeholder a server sent
        for a missing image; every image of the group is named), ``"stray"`` (a file in
        an image folder that the version does not put there) or ``"metadata"`` (a
        metadata file that is not the pinned one).
    detail : str
        One line saying what exactly is wrong.
    """

    where: str
    kind: str
    detail: str

    def line(self) -> str:
        """The problem as ``"where: kind: detail"``."""
        return f"{self.where}: {self.kind}: {self.detail}"


@dataclass
class VerifyReport:
    """What `verify` found; ``to_json()`` is the ``kaokore verify --json`` document.

    Attributes
    ----------
    dir : str
        The dataset directory checked.
    dataset_version : str
        The version the tree was checked against ("1.0" ... "1.3"), or, for a tree
        downloaded from ``--metadata-dir``, the version its kaokore.json names
        ("custom" when it names none).
    layout : str
        The layout of the tree: "split", "flat", "gender" or "status".
    metadata_pinned : bool
        False when the tree was downloaded from ``--metadata-dir``: its metadata files
        are the reference and were not checked against any pin.
    expected : int
        Images checked: those of the selection that have a URL.
    intact : int
        Of those, images present where the layout puts them, matching their manifest
        SHA-256, decoding as 256x256 RGB JPEGs and sharing their bytes with no other face.
    problems : list of Problem
        Everything wrong, images and metadata files alike; empty when the tree is intact.
    fingerprint : str
        The dataset fingerprint of the manifest (``"sha256:<hex>"``, see
        `kaokore.description.fingerprint`), to compare two copies.
    """

    dir: str
    dataset_version: str
    layout: str
    metadata_pinned: bool = True
    expected: int = 0
    intact: int = 0
    problems: list[Problem] = field(default_factory=list)
    fingerprint: str = ""

    @property
    def ok(self) -> bool:
        """Whether the tree is intact: no problem of any kind."""
        return not self.problems

    @property
    def exit_status(self) -> int:
        """What ``kaokore verify`` exits with: 0 when `ok`, else 1."""
        return EXIT_OK if self.ok else EXIT_INCOMPLETE

    def line(self) -> str:
        """The one-line verdict, e.g. ``"kaokore verify 1.0 (split layout): intact; 5552/5552 images good"``."""
        verdict = "intact" if self.ok else f"NOT intact, {len(self.problems)} problem(s)"
        return (f"kaokore verify {self.dataset_version} ({self.layout} layout): {verdict}; "
                f"{self.intact}/{self.expected} images good")

    def text(self, per_kind: int = PROBLEMS_SHOWN) -> str:
        """The report as ``kaokore verify`` prints it: the problems, the verdict and the fingerprint.

        One line per problem, but at most `per_kind` of each kind (then a count of the
        rest): a 100-image smoke tree checked against the whole version would otherwise
        print thousands of "missing" lines.

        Parameters
        ----------
        per_kind : int
            The most problems of one kind listed.

        Returns
        -------
        str
            Lines ending in a newline.
        """
        lines, shown = [], Counter()
        for problem in self.problems:
            shown[problem.kind] += 1
            if shown[problem.kind] <= per_kind:
                lines.append(problem.line())
        for kind, count in sorted(shown.items()):
            if count > per_kind:
                lines.append(f"... and {count - per_kind} more {kind} (--json lists them all)")
        if shown.get("missing", 0) > per_kind:
            lines.append("(checking a --split/--limit download? pass the same --split/--limit to verify)")
        lines.append(self.line())
        lines.append(f"kaokore verify fingerprint: {self.fingerprint}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        """The ``--json`` document: every attribute, plus ``ok`` and ``missing`` (the count of missing images)."""
        doc = asdict(self)
        doc["ok"] = self.ok
        doc["missing"] = sum(p.kind == "missing" for p in self.problems)
        return doc


def verify(dir: str | os.PathLike = defaults.DIR, dataset_version: str | Version | None = None,
           splits: Iterable[str] | None = None, limit: int | None = None, *, deep: bool = False) -> VerifyReport:
    """Check, without the network, that a downloaded tree is complete and intact.

    Every image the version lists with a URL must be where DIR's layout puts it,
    match its manifest SHA-256 and be a 256x256 RGB JPEG; no two manifest rows of
    different requests may have the same SHA-256 (a server's placeholder); the
    metadata files must be the pinned ones; and the image folders must hold nothing else.

    An image that matches its manifest SHA-256 is the one kaokore decoded in full
    when it wrote that row, so only its header is read (format, size and mode);
    an image with no row, or every image with `deep`, is decoded in full.

    Parameters
    ----------
    dir : str or os.PathLike
        The dataset directory, as written by `kaokore.download`.
    dataset_version : str or Version, optional
        The version to check against. Default: the version DIR holds; a tree downloaded
        from ``--metadata-dir`` is checked against its own metadata files.
    splits : iterable of str, optional
        Only the images of these of "train", "dev", "test", "unlabeled": pass what the
        download was given, or the images it skipped count as missing.
    limit : int, optional
        Only the first `limit` images with a URL, as ``download(limit=...)`` fetched.
        Stray files are looked for in every image folder whatever the selection.
    deep : bool
        Decode every image in full, also those whose SHA-256 matches their row: finds
        scan data damaged in a way the manifest does not show (a row rewritten to match
        damaged bytes). About five times the CPU of a plain check.

    Returns
    -------
    VerifyReport
        The verdict and every problem found; ``report.ok`` is True when there is none.

    Raises
    ------
    UsageError
        An unknown version or split, a version that contradicts the one DIR holds, or a
        tree whose version cannot be told and none was given.
    DirectoryError
        DIR does not exist, lacks metadata files, or a download is running in it.
    MetadataError
        A metadata file in DIR is malformed.

    Examples
    --------
    >>> report = kaokore.verify("data")
    >>> if not report.ok:
    ...     print(report.text())
    """
    refuse_while_held(dir)  # a tree being downloaded is half written: any verdict would be wrong
    tree = open_tree(dir)
    report = _metadata_report(tree, _version(tree, dataset_version))
    _check_selection(report, tree, [i for i in select(tree.meta.items, splits, limit) if i.url], deep)
    report.problems.extend(_strays(tree.root, tree.layout, tree.meta, tree.dataset_dir.image_files))
    report.fingerprint = dataset_fingerprint(tree.manifest.values())
    return report


def _metadata_report(tree: Tree, version: Version | None) -> VerifyReport:
    """A report that starts with the metadata files that do not match `version`'s pins."""
    root, state, layout, files = tree.root, tree.state, tree.layout, tree.meta.files
    if version is None:
        # Downloaded from --metadata-dir: DIR's own metadata is the reference, there is no pin to hold it to.
        return VerifyReport(str(root), str(state.get("dataset_version", "custom")), layout, metadata_pinned=False)
    report = VerifyReport(str(root), version.name, layout)
    for name in METADATA_FILES:
        if md.sha256(files[name]) != version.sha256[name]:
            report.problems.append(
                Problem(name, "metadata", f"does not match the pinned SHA-256 of {version.name}"))
    return report


def _check_selection(report: VerifyReport, tree: Tree, selection: list[md.Item], deep: bool) -> None:
    """Count the selected images that are intact into `report`, and add a problem for each other one."""
    root, meta, rows, layout = tree.root, tree.meta, tree.manifest, tree.layout
    report.expected = len(selection)
    shared = _duplicates(rows.values())
    jobs = [(item, image_path(item, layout, meta.classes), rows.get(item.name)) for item in selection]
    for (item, _, _), problem in zip(jobs, _check_images(root, jobs, deep)):
        if problem:
            report.problems.append(problem)
        elif item.name not in shared:
            report.intact += 1
    report.problems.extend(shared.values())


def _version(tree: Tree, requested: str | Version | None) -> Version | None:
    """The version DIR's metadata is held to: `DatasetDir.version_for`'s, where a request wins
    unless DIR's pinned files contradict it. None: DIR was downloaded from the user's own
    metadata, which has no pin."""
    if isinstance(requested, Version):
        return requested  # a caller's own registry entry (tests, mirrors) is taken as it is
    if requested is None and tree.state.get("metadata_pinned") is False:
        return None
    asked = get_version(requested).name if requested is not None else None  # an unknown name: refused first
    return get_version(tree.dataset_dir.version_for(asked, firm=False))


def _check_images(root: Path, jobs: list[tuple[md.Item, str, ManifestRow | None]],
                  deep: bool) -> list[Problem | None]:
    """`_check_image` of every job, in order, on every core."""
    batches = [jobs[i:i + BATCH] for i in range(0, len(jobs), BATCH)]
    with TreeReader(root) as reader:  # never through a link leading outside DIR
        def check(batch):
            return [_check_image(reader, item, rel, row, deep) for item, rel, row in batch]

        if len(batches) < 2:
            return [problem for batch in batches for problem in check(batch)]
        with ThreadPoolExecutor(max_workers=min(len(batches), os.cpu_count() or 1)) as pool:
            return [problem for checked in pool.map(check, batches) for problem in checked]


def _check_image(reader: TreeReader, item: md.Item, rel: str, row: ManifestRow | None, deep: bool) -> Problem | None:
    try:
        data = reader.read(rel)
    except FileNotFoundError:
        return Problem(item.name, "missing", f"expected at {rel}")
    except OSError as exc:
        return Problem(item.name, "missing", f"cannot read {rel}: {exc.strerror}")
    if row is None:
        # Nothing says kaokore ever decoded these bytes: they are, to say what they are.
        damaged = "" if is_normalized(data) else ", and is not a decodable 256x256 RGB JPEG"
        return Problem(item.name, "unlisted", f"{rel} has no row in {MANIFEST}{damaged}")
    if md.sha256(data) != row.sha256:
        return Problem(item.name, "checksum", f"{rel} does not match its manifest SHA-256 ({len(data)} bytes)")
    if not (is_normalized(data) if deep else has_normalized_header(data)):
        return Problem(item.name, "not-normalized", f"{rel} is not a decodable 256x256 RGB JPEG")
    return None


def _duplicates(rows: Iterable[ManifestRow], named: int = 5) -> dict[str, Problem]:
    """A "duplicate" problem per manifest row whose SHA-256 rows of other requests share, by image name;
    whatever the selection, as strays are: a placeholder outside it is still one."""
    problems = {}
    for group in duplicates(rows):
        for row in group:
            others = [r.image for r in group if r is not row]
            listed = ", ".join(others[:named]) + (f" and {len(others) - named} more" if len(others) > named else "")
            problems[row.image] = Problem(row.image, "duplicate",
                                          f"the same bytes as {listed} (other faces; SHA-256 {row.sha256[:12]}...): "
                                          "a placeholder a server sent for a missing image?")
    return problems


def _os_litter(name: str) -> bool:
    """Files a file browser drops into any folder it shows; no loader reads them as images."""
    return name in (".DS_Store", "Thumbs.db", "desktop.ini") or name.startswith("._")


def _strays(root: Path, layout: str, meta: md.Metadata, image_files: frozenset[str]) -> list[Problem]:
    """Files in the image folders that the version does not list there; `image_files` is every
    image `inspect` found, in any layout's folders."""
    expected = {image_path(i, layout, meta.classes) for i in meta.downloadable}
    folders = set(layout_folders(layout, meta.classes))
    if layout in ("gender", "status"):
        folders |= set(SPLITS)  # hold only class folders
    problems = []
    for folder in sorted(folders):
        # By name, never through a link leading outside DIR (scan gives [] for one).
        for entry in sorted(scan(root, folder), key=lambda e: e.name):
            rel = f"{folder}/{entry.name}"
            if rel in expected or rel in folders or _os_litter(entry.name):
                continue
            if entry.name == HF_METADATA and "/" not in folder:
                continue  # kaokore's own: what `datasets` reads in place of folder-name labels
            problems.append(Problem(rel, "stray", "not part of the dataset in this layout"))
    # A top folder this layout does not use (images_256/ beside a split tree, say) may hold a second
    # copy of every image: nothing reads it, and it is worth knowing before it is shared.
    unused = set(TOP_FOLDERS) - {f.split("/")[0] for f in folders}
    elsewhere = Counter(rel.split("/")[0] for rel in image_files if rel.count("/") == 1)
    for top in sorted(unused):
        images = elsewhere[top]
        if images:
            problems.append(Problem(top, "stray", f"holds {images} images outside the {layout} layout "
                                                  "(another layout's or another tool's copies; never read)"))
    return problems


