"""DIR/README.md: the dataset card, with the YAML front matter dataset hubs read.

It says what the folder holds and what it lacks, under which terms, how to cite it,
what kaokore changed, the command that made it and the dataset fingerprint. A
README.md kaokore did not write (no MARKER line) is the user's and is never
replaced: the card then goes to README.kaokore.md.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from .._version import __version__
from ..dataset import citation
from ..dataset import metadata as md
from ..dataset.attributes import CLASSES as ATTRIBUTE_CLASSES
from ..dataset.layout import (
    FLAT_FOLDER,
    SPLITS,
    UNLABELED,
    hf_folder,
    hf_folders,
    hf_split,
    is_flat,
    split_of,
    unlabeled_folder,
)
from ..storage.records import ManifestRow
from ..storage.safefs import read_file
from .fingerprint import dataset_fingerprint
from .listing import ATTRIBUTES_CSV, HF_METADATA, Present

CARD = "README.md"
FALLBACK = "README.kaokore.md"
MARKER = "<!-- kaokore dataset card: rewritten by every `kaokore download` run into this folder -->"


def card_path(root: Path) -> str:
    """Where the card goes: README.md, unless one is there that kaokore did not write.

    Parameters
    ----------
    root : Path
        The dataset directory.

    Returns
    -------
    str
        "README.md" when absent or kaokore's own (it holds `MARKER`), else
        "README.kaokore.md" (also when README.md cannot be read).
    """
    try:
        existing = read_file(root, CARD)
    except FileNotFoundError:
        return CARD
    except OSError:
        return FALLBACK
    return CARD if MARKER.encode() in existing else FALLBACK


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < bound:
            return label
    return "100K<n<1M"


def _front_matter(version: str | None, images: int) -> list[str]:
    return [
        "---",
        f"license: {citation.LICENSE_ID}",
        f"pretty_name: \"{citation.PRETTY_NAME}{f' {version}' if version else ''}\"",
        "task_categories:",
        "- image-classification",
        "size_categories:",
        f"- {_size_category(images)}",
        "language:",
        "- ja",
        "- en",
        "tags:",
        "- art",
        "- art-history",
        "- japanese-art",
        "- faces",
        "- iiif",
        "- croissant",
        "annotations_creators:",
        "- expert-generated",
        "source_datasets:",
        "- original",
        "---",
    ]


def dataset_card(meta: md.Metadata, layout: str, present: Sequence[Present], rows: Sequence[ManifestRow],
                 command: str | None, version: str | None = None) -> str:
    """The card's text (see the module docstring).

    Parameters
    ----------
    meta : Metadata
        The parsed metadata of the version DIR holds.
    layout : str
        DIR's layout.
    present : sequence of Present
        The images on disk (`kaokore.description.listing.present_images`).
    rows : sequence of ManifestRow
        The manifest's rows, for the fingerprint and the count of re-encoded and
        adopted images.
    command : str or None
        The command line that reproduces the tree; None shows ``kaokore download``.
    version : str, optional
        The dataset version's name.

    Returns
    -------
    str
        Markdown with YAML front matter.
    """
    out = _front_matter(version, len(present))
    out += [
        "",
        MARKER,
        "",
        f"# {f'KaoKore {version}' if version else 'KaoKore'}",
        "",
        citation.DESCRIPTION,
        "",
        f"This folder is a copy made by [kaokore](https://pypi.org/project/kaokore/) {__version__}: "
        f"dataset version {version or 'unknown'}, `{layout}` layout, "
        f"{len(present):,} of {len(meta.downloadable):,} images present.",
        "",
    ]
    out += _contents(meta, layout, present)
    out += _labels(meta.classes)
    out += _loading(layout, present)
    out += _terms()
    out += _changes(meta, present, rows)
    out += _provenance(command, rows)
    return "\n".join(out)


def _contents(meta: md.Metadata, layout: str, present: Sequence[Present]) -> list[str]:
    """The images present and listed, by split, and what is missing and why."""
    expected = Counter(split_of(item) for item in meta.downloadable)
    on_disk = Counter(split_of(p.item) for p in present)
    no_url = sum(1 for item in meta.items if item.split is not None and not item.url)
    out = [
        "## Contents",
        "",
        "| split | images present | images listed | of which labelled |",
        "|---|---:|---:|---:|",
    ]
    for group in (*SPLITS, UNLABELED):
        labelled = expected[group] if group != UNLABELED else 0
        out.append(f"| {group} | {on_disk[group]:,} | {expected[group]:,} | {labelled:,} |")
    out.append(f"| total | {sum(on_disk.values()):,} | {sum(expected.values()):,} | "
               f"{sum(expected[g] for g in SPLITS):,} |")
    out += ["", "What is missing, and why:", ""]
    missing = sum(expected.values()) - sum(on_disk.values())
    if missing:
        out.append(f"- {missing:,} images listed in urls.txt are not on disk (a `--split`/`--limit` "
                   "download, or failures listed in failures.csv); rerunning the command below fetches them.")
    else:
        out.append("- Nothing that can be downloaded: every image with a URL is on disk.")
    if no_url:
        out.append(f"- {no_url:,} labelled images have a blank line in urls.txt upstream: "
                   "they cannot be downloaded and are in no split here.")
    out.append(f"- {expected[UNLABELED]:,} images have a URL but no row in labels.csv (no gender or status); "
               + (f"they are in {FLAT_FOLDER}/ but in no `{HF_METADATA}`, so Hugging Face's imagefolder leaves "
                  "them out; Croissant's `faces` lists them with every field but the image and its name empty."
                  if is_flat(layout) else f"they are in {UNLABELED}/, which the Hugging Face and Croissant "
                                          "descriptions leave out."))
    return out


def _labels(classes: Mapping[str, Sequence[str]]) -> list[str]:
    return [
        "",
        "Labels (from labels.csv, in labels.metadata.en.txt's order):",
        "",
        f"- gender: {_indexed(classes['gender'])}",
        f"- status: {_indexed(classes['status'])}",
        "",
        f"Attributes (from original_tags.txt, in English; also in `{ATTRIBUTES_CSV}`): work, holder, collection, "
        "orientation, period, year_from, year_to (0: not recorded), tags (joined by `;`), fine_status, "
        "source_id, source_id_type, iiif_service, iiif_region.",
        f"Orientation is one of {', '.join(ATTRIBUTE_CLASSES['orientation'])}; fine_status (upstream's "
        f"eight statuses) one of {', '.join(ATTRIBUTE_CLASSES['fine_status'])}.",
        "",
    ]


def _loading(layout: str, present: Sequence[Present]) -> list[str]:
    return [
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "ds = load_dataset(\"imagefolder\", data_dir=\".\")  # run in this folder",
        "```",
        "",
        *_imagefolder_section(layout, present),
        "",
        "```python",
        "import mlcroissant as mlc",
        "faces = mlc.Dataset(\"croissant.json\").records(\"faces\")",
        "```",
        "",
    ]


def _terms() -> list[str]:
    """The licence, the content providers the terms ask to be named, and the citation."""
    return [
        "## Licence and attribution",
        "",
        f"{citation.ATTRIBUTION}, licensed under {citation.LICENSE_NAME} ({citation.LICENSE_URL}). "
        f"DOI: [{citation.DOI}]({citation.DOI_URL}).",
        "",
        "The images are provided by these content providers, which the terms ask to be named with "
        "anything derived from the dataset (also in CONTENT_PROVIDERS.txt):",
        "",
        *(f"- {collection} ({organisation}), {url}" for collection, organisation, url in citation.CONTENT_PROVIDERS),
        "",
        "## Citation",
        "",
        f"Cite the paper ([arXiv:{citation.ARXIV}]({citation.PAPER_URL})) and the dataset (doi:{citation.DOI}):",
        "",
        "```bibtex",
        citation.BIBTEX,
        "```",
        "",
    ]


def _changes(meta: md.Metadata, present: Sequence[Present], rows: Sequence[ManifestRow]) -> list[str]:
    """What kaokore changed: the images it re-encoded, adopted and reused, by the manifest's rows."""
    present_names = {p.item.name for p in present}
    rows_present = [r for r in rows if r.image in present_names]
    converted = [r for r in rows_present if r.converted]
    sources = Counter(f"{r.source_width}x{r.source_height} {r.source_mode}" for r in converted)
    origins = Counter(r.origin for r in rows_present)
    adopted, reused = origins["adopted"], origins["reused"]
    out = [
        "## What kaokore changed",
        "",
        "The images are the crops the IIIF servers return for the URLs in urls.txt. Every image is stored "
        "as a 256x256 RGB JPEG: the server's bytes when they already are one, else re-encoded.",
        "",
    ]
    if converted:
        shown = ", ".join(f"{n:,} from {source}" for source, n in sources.most_common(5))
        more = f", and {len(sources) - 5} other source shapes" if len(sources) > 5 else ""
        out.append(f"- {len(converted):,} of the {len(present):,} images were re-encoded ({shown}{more}): "
                   "the servers returned them at another size (e.g. 200x200 for 1.3's `!200,200` URLs), "
                   "mode or format. manifest.csv lists them (`converted` = true) with the source's size and mode.")
    else:
        out.append("- No image was re-encoded: every one is the server's bytes.")
    if adopted:
        out.append(f"- {adopted:,} images were adopted from files already on disk rather than fetched.")
    if reused:
        out.append(f"- {reused:,} images were reused rather than fetched: taken, checked by SHA-256, from another "
                   "kaokore tree's (or this one's) image of the same IIIF request, e.g. of another version. "
                   "manifest.csv gives each one's `source`.")
    if reused and rows_present:
        out.append(f"- Of the {len(rows_present):,} images with a manifest row, {origins['fetched']:,} were fetched "
                   f"from the IIIF servers, {reused:,} reused and {adopted:,} adopted.")
    out += ["- Nothing else: labels and metadata files are upstream's, byte for byte "
            f"({'pinned by SHA-256' if meta.pinned else 'from --metadata-dir, not pinned'}).", ""]
    return out


def _provenance(command: str | None, rows: Sequence[ManifestRow]) -> list[str]:
    return [
        "## Provenance",
        "",
        "Made by:",
        "",
        "```sh",
        command or "kaokore download",
        "```",
        "",
        f"Dataset fingerprint: `{dataset_fingerprint(rows)}`",
        "",
        "The fingerprint is the SHA-256 of the lines `<image sha256>  <image name>` of manifest.csv, sorted "
        "by image name: two copies with the same fingerprint hold the same image bytes under the same names, "
        "in whatever layout. `kaokore verify` and `kaokore info` print it too.",
        "",
    ]


def _imagefolder_section(layout: str, present: Sequence[Present]) -> list[str]:
    """What `load_dataset("imagefolder", data_dir=DIR)` gives, from the metadata.jsonl files written.

    imagefolder makes one row per metadata.jsonl row, so the table is exact: a split per
    metadata file (`hf_split`), with as many rows as labelled images of it are on disk.
    """
    rows = Counter(hf_folder(layout, p.item) for p in present)
    unlabeled_present = rows.pop(None, 0)  # in no metadata.jsonl
    if not rows:
        return [f"No labelled image is on disk yet, so there is no `{HF_METADATA}` for imagefolder to read."]
    out = [
        f"It reads the `{HF_METADATA}` files kaokore writes, one row per labelled image on disk, and gives:",
        "",
        "| split | rows | metadata file |",
        "|---|---:|---|",
    ]
    for folder in hf_folders(layout):
        if folder in rows:
            out.append(f"| {hf_split(folder)} | {rows[folder]:,} | `{folder}/{HF_METADATA}` |")
    out += ["", "gender and status are ints in the order above; no `label` column is made from folder names."]
    if is_flat(layout):
        by_split = Counter(p.item.split for p in present)
        out += [
            "",
            f"The flat layout keeps every image in one folder, which imagefolder reads as a single split "
            f"named `train`: it holds upstream's three splits, told apart by the `split` column "
            f"({', '.join(f'{s} {by_split[s]:,}' for s in SPLITS)}).",
            "",
            "```python",
            "test = ds[\"train\"].filter(lambda r: r[\"split\"] == \"test\")",
            "```",
            "",
            "For train / validation / test splits, use the default layout: "
            "`kaokore download --dir <this folder> --layout split` moves the files, without the network.",
        ]
    out += ["", f"Unlabeled images ({unlabeled_present:,} on disk, in {unlabeled_folder(layout)}/) are in no "
                f"`{HF_METADATA}`, so imagefolder leaves them out: no row has a null gender or status."]
    if is_flat(layout):
        out[-1] += (f" (They share {FLAT_FOLDER}/ with the labelled images, which imagefolder handles from "
                    "`datasets` 3.4 on; older versions stop with \"doesn't have metadata\".)")
    return out


def _indexed(names: Sequence[str]) -> str:
    return ", ".join(f"{i} = {n}" for i, n in enumerate(names))
