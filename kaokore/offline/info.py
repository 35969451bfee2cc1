"""`kaokore info`: what a downloaded tree holds, class by class, without the network.

Reads DIR into a `DatasetInfo` (kaokore.offline.info_report, which also prints it), and
with `--by`, counts images by an attribute of original_tags.txt.
"""
from __future__ import annotations

import argparse
import json
import os
import unicodedata
from collections import Counter

from .. import defaults
from ..dataset import metadata as md
from ..dataset.labels import CATEGORIES
from ..dataset.layout import SPLITS, UNLABELED, split_of
from ..description.fingerprint import dataset_fingerprint
from ..errors import EXIT_OK
from ..storage.lock import refuse_while_held
from ..storage.tree import Tree, open_tree
from .info_report import DatasetInfo, ManifestCounts, Table

BY_CHOICES = ("work", "holder", "orientation")  # --by: the `Attributes` fields worth counting


def dataset_info(dir: str | os.PathLike = defaults.DIR) -> DatasetInfo:
    """Summarize DIR without the network: version, layout, images present, class balance by split.

    Parameters
    ----------
    dir : str or os.PathLike
        The dataset directory, as written by `kaokore.download`.

    Returns
    -------
    DatasetInfo
        What ``kaokore info`` prints (``info.text()``) or its ``--json`` (``info.to_json()``).

    Raises
    ------
    DirectoryError
        DIR does not exist, lacks metadata files, or a download is running in it.
    MetadataError
        A metadata file in DIR is malformed.

    Examples
    --------
    >>> from kaokore.offline.info import dataset_info
    >>> info = dataset_info("data")
    >>> info.labels["status"]["train"]
    """
    refuse_while_held(dir)  # a tree being downloaded is half written: its counts would be wrong
    return info_from_tree(open_tree(dir))


def info_from_tree(tree: Tree) -> DatasetInfo:
    meta = tree.meta
    groups = (*SPLITS, UNLABELED)
    split_expected = Counter({g: 0 for g in groups})
    split_present = Counter({g: 0 for g in groups})
    for item in meta.downloadable:
        split_expected[split_of(item)] += 1
        split_present[split_of(item)] += item.name in tree.present
    labelled = [item for item in meta.items if item.split is not None]
    return DatasetInfo(
        dir=str(tree.root), dataset_version=tree.version.name if tree.version else "unknown", layout=tree.layout,
        metadata=tree.dataset_dir.metadata_origin,
        classes={c: list(meta.classes[c]) for c in CATEGORIES},
        expected=len(meta.downloadable), present=len(tree.present),
        split_expected=dict(split_expected), split_present=dict(split_present),
        no_url=sum(1 for item in labelled if not item.url),
        labels={c: _table(labelled, c, meta.classes) for c in CATEGORIES},
        on_disk={c: _table([i for i in labelled if i.name in tree.present], c, meta.classes) for c in CATEGORIES},
        manifest=_manifest_counts(tree),
        fingerprint=dataset_fingerprint(tree.manifest.values()),
    )


def _table(items: list[md.Item], category: str, classes) -> Table:
    names = classes[category]
    table = {split: {name: 0 for name in names} for split in SPLITS}
    for item in items:
        table[item.split][names[item.label(category)]] += 1
    return table


def _manifest_counts(tree: Tree) -> ManifestCounts | None:
    if not tree.manifest:
        return None
    # Only the images on disk: a row whose file was since deleted describes nothing there.
    rows = [tree.manifest[name] for name in sorted(tree.present) if name in tree.manifest]
    sources = Counter(f"{r.source_width}x{r.source_height} {r.source_mode}" for r in rows if r.converted)
    return ManifestCounts(
        rows=len(rows),
        converted=sum(r.converted is True for r in rows),
        pass_through=sum(r.converted is False for r in rows),
        unknown=sum(r.converted is None for r in rows),
        unrecorded=len(tree.present) - len(rows),
        converted_from=dict(sources.most_common()),
        reused=sum(r.origin == "reused" for r in rows),
    )


# ---- command line --------------------------------------------------------------------------------

DESCRIPTION = ("Summarize a dataset directory without the network: version, layout, images present, counts per "
               "split x gender and split x status, unlabeled images, and how many images were re-encoded on "
               "download.")


def add_options(p: argparse.ArgumentParser) -> None:
    """`kaokore info`'s flags, `--dir` aside (kaokore.cli declares it for every command)."""
    p.add_argument("--json", action="store_true", help="print the same data as JSON on stdout")
    p.add_argument("--by", choices=BY_CHOICES, help="also count images by source work, holder or face orientation "
                                                    "(from original_tags.txt)")


def run(args: argparse.Namespace) -> int:
    refuse_while_held(args.dir)
    tree = open_tree(args.dir)
    info = info_from_tree(tree)
    by = args.by
    counts = counts_by(tree, by) if by else None
    if args.json:
        doc = info.to_json()
        if counts is not None:
            doc["by"] = {"attribute": by, "counts": counts}
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print(info.text() + ("\n\n" + "\n".join(format_counts(by, counts)) if counts is not None else ""))
    return EXIT_OK


def counts_by(tree: Tree, by: str) -> dict[str, dict[str, int]]:
    """{value: {"listed": images with a URL, "present": of those on disk}}, most listed first."""
    listed, present = Counter(), Counter()
    for item in tree.meta.downloadable:
        attrs = tree.meta.attributes.get(item.index)
        value = getattr(attrs, by) if attrs is not None else ""
        value = value or "(not recorded)"
        listed[value] += 1
        present[value] += item.name in tree.present
    return {value: {"listed": n, "present": present[value]} for value, n in listed.most_common()}


def format_counts(by: str, counts: dict[str, dict[str, int]]) -> list[str]:
    width = max([_columns(by), *(_columns(v) for v in counts)])
    lines = [f"By {by} (original_tags.txt)", "", f"  {_pad(by, width)}  {'present':>8}  {'listed':>8}"]
    lines += [f"  {_pad(value, width)}  {n['present']:>8,}  {n['listed']:>8,}" for value, n in counts.items()]
    return lines


def _columns(text: str) -> int:
    """The columns `text` takes in a terminal: the works' and holders' names are Japanese, whose
    characters take two columns each, and padding them by len() would leave the counts ragged."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _columns(text))


__all__ = ["dataset_info", "info_from_tree", "counts_by"]
