"""What `kaokore info` reports (`DatasetInfo`), and how it prints it.

Counts come from two places and are kept apart: labels.csv says what the
dataset is (the class balance), the tree says what is on disk. They differ
after a partial download (`--split`, `--limit`, failures), and a person
choosing a loss weighting needs to know which of the two they are looking at.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .. import hints
from ..dataset.labels import CATEGORIES
from ..dataset.layout import SPLITS, UNLABELED, unlabeled_folder

Table = dict  # split -> class name -> count; a plain dict so it is its own JSON


@dataclass(frozen=True)
class ManifestCounts:
    """How the images on disk were made, as manifest.csv records it.

    Only images present where the layout puts them are counted.

    Attributes
    ----------
    rows : int
        Images present that have a manifest row.
    converted : int
        Of those, images re-encoded to a 256x256 RGB JPEG on download.
    pass_through : int
        Of those, images stored as the server's bytes, unchanged.
    unknown : int
        Of those, images adopted from disk by an earlier run: how they were made is not recorded.
    unrecorded : int
        Images present with no manifest row at all (`kaokore verify` flags them).
    converted_from : dict of str to int
        How many re-encoded images came from each source shape, ``"WxH MODE"``
        (e.g. ``"200x200 RGB"``), most frequent first.
    reused : int
        Of the rows, images reused from another tree's (or another image number's) file of the
        same IIIF request rather than fetched (``origin`` ``reused``).
    """

    rows: int
    converted: int
    pass_through: int
    unknown: int
    unrecorded: int
    converted_from: dict[str, int] = field(default_factory=dict)
    reused: int = 0


@dataclass
class DatasetInfo:
    """What `kaokore info` prints; `to_json()` is its `--json` document.

    Attributes
    ----------
    dir : str
        The dataset directory.
    dataset_version : str
        The version DIR holds, as its metadata files or its kaokore.json say;
        "unknown" when neither does.
    layout : str
        "split", "flat", "gender" or "status".
    metadata : str
        "pinned" (byte for byte the pinned files), "custom" (downloaded from
        ``--metadata-dir``), "altered" (neither: run `kaokore verify`) or "unknown" (the files
        contradict each other or kaokore.json).
    classes : dict of str to list of str
        The class names of "gender" and "status", in label order.
    expected : int
        Images with a URL, labelled or not.
    present : int
        Of those, images found where the layout puts them.
    split_expected, split_present : dict of str to int
        `expected` and `present` by "train", "dev", "test" and "unlabeled".
    no_url : int
        Labelled images whose URL line is blank upstream: never downloadable.
    labels : dict
        ``labels[category][split][class]``: rows of labels.csv, for "gender" and
        "status" by "train", "dev" and "test" (the dataset's class balance).
    on_disk : dict
        The same, counting only the images present.
    manifest : ManifestCounts or None
        How the images present were made; None when DIR has no manifest.
    fingerprint : str
        The dataset fingerprint of the manifest (``"sha256:<hex>"``, see
        `kaokore.description.fingerprint`), to compare two copies.
    """

    dir: str
    dataset_version: str
    layout: str
    metadata: str
    classes: dict[str, list[str]]
    expected: int
    present: int
    split_expected: dict[str, int]
    split_present: dict[str, int]
    no_url: int
    labels: dict[str, Table]
    on_disk: dict[str, Table]
    manifest: ManifestCounts | None
    fingerprint: str = ""

    @property
    def metadata_pinned(self) -> bool:
        """Whether the metadata files are byte for byte the pinned ones."""
        return self.metadata == "pinned"

    @property
    def complete(self) -> bool:
        """Whether every image with a URL is present."""
        return self.present == self.expected

    @property
    def unlabeled_expected(self) -> int:
        """Images with a URL but no labels.csv row."""
        return self.split_expected[UNLABELED]

    @property
    def unlabeled_present(self) -> int:
        """Of those, images present."""
        return self.split_present[UNLABELED]

    def to_json(self) -> dict:
        """The ``--json`` document: every attribute, plus ``metadata_pinned``, ``complete``,
        ``missing`` and ``unlabeled`` (expected and present)."""
        doc = asdict(self)
        doc["metadata_pinned"] = self.metadata_pinned
        doc["complete"] = self.complete
        doc["missing"] = self.expected - self.present
        doc["unlabeled"] = {"expected": self.unlabeled_expected, "present": self.unlabeled_present}
        return doc

    def text(self) -> str:
        """The report as ``kaokore info`` prints it."""
        return format_info(self)


def plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def format_info(info: DatasetInfo) -> str:
    pin = {
        "pinned": f"metadata: the pinned {info.dataset_version} files",
        "custom": "metadata: your own (--metadata-dir), not pinned",
        "unknown": f"metadata: of no version kaokore can tell, run {hints.command('verify', info.dir)}",
    }.get(info.metadata, f"metadata: NOT the pinned files, run {hints.command('verify', info.dir)}")
    lines = [f"KaoKore {info.dataset_version} in {info.dir} ({info.layout} layout; {pin})", ""]

    state = "complete" if info.complete else f"{info.expected - info.present:,} missing"
    lines.append(f"images present  {info.present:,} of {info.expected:,} ({state})")
    per_split = "  ".join(f"{g} {info.split_present[g]:,}/{info.split_expected[g]:,}"
                          for g in (*SPLITS, UNLABELED))
    lines.append(f"  by split      {per_split}")
    where = f"{unlabeled_folder(info.layout)}/"
    lines.append(f"unlabeled       {info.unlabeled_present:,} of {info.unlabeled_expected:,} present "
                 f"(no gender/status; in {where})")
    if info.no_url:
        lines.append(f"no URL          {plural(info.no_url, 'labelled image')} with a blank URL upstream "
                     "(in the tables below, never downloadable)")
    lines.append(_manifest_line(info.manifest))
    lines.append(f"fingerprint     {info.fingerprint}")

    if info.complete:
        lines += ["", "Class balance (labels.csv; every image with a URL is on disk)"]
        for category in CATEGORIES:
            lines += [""] + format_table(category, info.labels[category])
    else:
        lines += ["", "Class balance in labels.csv (the whole dataset)"]
        for category in CATEGORIES:
            lines += [""] + format_table(category, info.labels[category])
        if info.present:
            lines += ["", "On disk (only the images present)"]
            for category in CATEGORIES:
                lines += [""] + format_table(category, info.on_disk[category])
        lines += ["", f"Run {hints.command('download', info.dir)} to fetch what is missing."]
    return "\n".join(lines)


def _manifest_line(counts: ManifestCounts | None) -> str:
    if counts is None:
        return "manifest        none (no manifest.csv: nothing downloaded yet?)"
    parts = [f"{counts.pass_through:,} stored as served", f"{counts.converted:,} re-encoded to 256x256 RGB JPEG"]
    if counts.unknown:
        parts.append(f"{counts.unknown:,} adopted from disk (origin not recorded)")
    if counts.unrecorded:
        parts.append(f"{counts.unrecorded:,} not in the manifest")
    text = f"manifest        of the images present: {', '.join(parts)}"
    if counts.reused:
        text += (f"\n  reused        {counts.reused:,} taken from files of the same IIIF requests, not fetched "
                 "(manifest.csv: source)")
    if counts.converted_from:
        top = list(counts.converted_from.items())
        shown = ", ".join(f"{source} x{n:,}" for source, n in top[:3])
        more = f", +{len(top) - 3} more" if len(top) > 3 else ""
        text += f"\n  re-encoded    from {shown}{more}"
    return text


def format_table(category: str, table: Table) -> list[str]:
    """Classes down, splits across, with totals and each class's share of the total."""
    names = list(next(iter(table.values())))
    header = [category, *SPLITS, "total", "share"]
    grand = sum(sum(row.values()) for row in table.values())
    body = []
    for name in names:
        counts = [table[split][name] for split in SPLITS]
        share = f"{100 * sum(counts) / grand:.1f}%" if grand else "-"
        body.append([name, *(f"{n:,}" for n in counts), f"{sum(counts):,}", share])
    split_totals = [sum(table[split].values()) for split in SPLITS]
    body.append(["total", *(f"{n:,}" for n in split_totals), f"{grand:,}", ""])
    rows = [header, *body]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = "  ".join(cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))
        return f"  {first}  {rest}".rstrip()

    rule = "  " + "-" * (sum(widths) + 2 * (len(widths) - 1))
    return [fmt(header), rule, *(fmt(r) for r in body[:-1]), rule, fmt(body[-1])]


__all__ = ["DatasetInfo", "ManifestCounts", "format_info", "format_table", "plural"]
