"""`kaokore verify`: prove, without the network, that a downloaded tree is complete and intact."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import defaults
from . import metadata as md
from .describe import HF_METADATA
from .directory import open_tree
from .errors import EXIT_INCOMPLETE, EXIT_OK, UsageError
from .fingerprint import dataset_fingerprint
from .layout import SPLITS, image_path, layout_folders
from .lock import refuse_while_held
from .normalize import is_normalized
from .plan import select
from .safefs import read_file
from .store import MANIFEST, ManifestRow
from .versions import METADATA_FILES, Version, get_version

PROBLEMS_SHOWN = 20  # per kind, in the text report


@dataclass(frozen=True)
class Problem:
    where: str  # an image name, or a path relative to DIR
    kind: str  # missing | checksum | not-normalized | unlisted | stray | metadata
    detail: str

    def line(self) -> str:
        return f"{self.where}: {self.kind}: {self.detail}"


@dataclass
class VerifyReport:
    dir: str
    dataset_version: str
    layout: str
    metadata_pinned: bool = True  # False: DIR came from --metadata-dir, its metadata was not checked
    expected: int = 0
    intact: int = 0
    problems: list[Problem] = field(default_factory=list)
    fingerprint: str = ""  # of the manifest's names and hashes (kaokore.fingerprint), to compare copies

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_status(self) -> int:
        return EXIT_OK if self.ok else EXIT_INCOMPLETE

    def line(self) -> str:
        verdict = "intact" if self.ok else f"NOT intact, {len(self.problems)} problem(s)"
        return (f"kaokore verify {self.dataset_version} ({self.layout} layout): {verdict}; "
                f"{self.intact}/{self.expected} images good")

    def text(self, per_kind: int = PROBLEMS_SHOWN) -> str:
        """One line per problem, but at most `per_kind` of each kind: a 100-image smoke tree
        checked against the whole version would otherwise print thousands of 'missing' lines."""
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
        doc = asdict(self)
        doc["ok"] = self.ok
        doc["missing"] = sum(p.kind == "missing" for p in self.problems)
        return doc


def verify(dir: str | os.PathLike = defaults.DIR, dataset_version: str | Version | None = None,
           splits: Iterable[str] | None = None, limit: int | None = None) -> VerifyReport:
    """Check every image the version lists: present where the layout puts it,
    matching its manifest SHA-256, decoding as a 256x256 RGB JPEG; and nothing else in the image folders."""
    refuse_while_held(dir)  # a tree being downloaded is half written: any verdict would be wrong
    tree = open_tree(dir)
    root, meta, state, rows, layout = tree.root, tree.meta, tree.state, tree.manifest, tree.layout
    files = meta.files
    version = _version(tree, dataset_version)
    if version is None:
        # Downloaded from --metadata-dir: DIR's own metadata is the reference, there is no pin to hold it to.
        report = VerifyReport(str(root), str(state.get("dataset_version", "custom")), layout, metadata_pinned=False)
    else:
        report = VerifyReport(str(root), version.name, layout)
        for name in METADATA_FILES:
            if md.sha256(files[name]) != version.sha256[name]:
                report.problems.append(
                    Problem(name, "metadata", f"does not match the pinned SHA-256 of {version.name}"))

    selection = [i for i in select(meta.items, splits, limit) if i.url]
    report.expected = len(selection)
    for item in selection:
        problem = _check_image(root, item, image_path(item, layout, meta.classes), rows.get(item.name))
        if problem:
            report.problems.append(problem)
        else:
            report.intact += 1
    report.problems.extend(_strays(root, layout, meta))
    report.fingerprint = dataset_fingerprint(rows.values())
    return report


def _version(tree, requested: str | Version | None) -> Version | None:
    """The version DIR's metadata is held to: the one asked for, else the one DIR is known to hold.
    None: DIR was downloaded from the user's own metadata, which has no pin."""
    if isinstance(requested, Version):
        return requested
    known = tree.version
    if requested is not None:
        asked = get_version(requested)
        if known is not None and known.name != asked.name and tree.dir.pinned:
            raise UsageError(f"{tree.root} holds KaoKore {known.name} ({tree.dir.evidence}), not {asked.name}")
        return asked
    if tree.state.get("metadata_pinned") is False:
        return None
    if known is None:
        raise UsageError(f"cannot tell which KaoKore version {tree.root} holds ({tree.dir.evidence}); "
                         "pass --dataset_version")
    return known


def _check_image(root: Path, item: md.Item, rel: str, row: ManifestRow | None) -> Problem | None:
    try:
        data = read_file(root, rel)  # never through a link leading outside DIR
    except FileNotFoundError:
        return Problem(item.name, "missing", f"expected at {rel}")
    except OSError as exc:
        return Problem(item.name, "missing", f"cannot read {rel}: {exc.strerror}")
    if row is None:
        return Problem(item.name, "unlisted", f"{rel} has no row in {MANIFEST}")
    if md.sha256(data) != row.sha256:
        return Problem(item.name, "checksum", f"{rel} does not match its manifest SHA-256 ({len(data)} bytes)")
    if not is_normalized(data):
        return Problem(item.name, "not-normalized", f"{rel} is not a decodable 256x256 RGB JPEG")
    return None


def _os_litter(name: str) -> bool:
    """Files a file browser drops into any folder it shows; no loader reads them as images."""
    return name in (".DS_Store", "Thumbs.db", "desktop.ini") or name.startswith("._")


def _strays(root: Path, layout: str, meta: md.Metadata) -> list[Problem]:
    """Files in the image folders that the version does not list there."""
    expected = {image_path(i, layout, meta.classes) for i in meta.downloadable}
    folders = set(layout_folders(layout, meta.classes))
    if layout in ("gender", "status"):
        folders |= set(SPLITS)  # hold only class folders
    problems = []
    for folder in sorted(folders):
        try:
            entries = sorted(os.scandir(root / folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            rel = f"{folder}/{entry.name}"
            if rel in expected or rel in folders or _os_litter(entry.name):
                continue
            if entry.name == HF_METADATA and "/" not in folder:
                continue  # kaokore's own: what `datasets` reads in place of folder-name labels
            problems.append(Problem(rel, "stray", "not part of the dataset in this layout"))
    return problems


