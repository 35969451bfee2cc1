"""What a download makes of DIR: the version it completes DIR in, the layout, and whether files
with no manifest row may be kept as images.

The version is `DatasetDir.version_for`'s, the rule every command follows; what is the
download's own is the user's ``--metadata-dir`` files, which may name the version too.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..dataset import metadata as md
from ..dataset.layout import DEFAULT_LAYOUT, LAYOUTS
from ..dataset.versions import DEFAULT_VERSION, Version, get_version
from ..errors import UsageError
from .directory import DatasetDir
from .identify import pinned_version


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
    adopt: bool


def resolve(dataset_dir: DatasetDir, dataset_version: str | Version | None, layout: str | None,
            custom_files: Mapping[str, bytes] | None = None) -> Resolved:
    """The version and layout a download completes DIR in, or a one-line refusal.

    A recognised tree is completed in its own version; an explicit version that
    contradicts it is refused. A tree holding images of a version nobody can tell
    is refused unless the user names the version.

    Parameters
    ----------
    dataset_dir : DatasetDir
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
    custom = pinned_version(custom_files)
    if custom is not None and requested is not None and custom.name != requested:
        raise UsageError(f"the --metadata-dir files are KaoKore {custom.name}'s, not {requested}'s; "
                         f"pass --dataset_version {custom.name}")
    requested = requested or (custom.name if custom else None)
    version = named(dataset_dir.version_for(requested, default=DEFAULT_VERSION))
    # A DIR with no images and no known version has nothing to adopt.
    adopt = ((dataset_dir.version is not None or dataset_dir.holds_images)
             and _may_adopt(dataset_dir, version, custom_files))
    held = dataset_dir.holds_images or dataset_dir.state.get("layout") in LAYOUTS
    chosen = layout or (dataset_dir.layout if held else DEFAULT_LAYOUT)
    return Resolved(version, chosen, adopt)


def _may_adopt(dataset_dir: DatasetDir, version: Version, custom_files: Mapping[str, bytes] | None) -> bool:
    """Whether a file with no manifest row may be kept as image N: only if the urls.txt this run
    numbers images by (the user's own, or `version`'s pinned one) is the one DIR's images came from."""
    digest = md.sha256(custom_files["urls.txt"]) if custom_files is not None else version.sha256["urls.txt"]
    if "urls.txt" in dataset_dir.files:
        return md.sha256(dataset_dir.files["urls.txt"]) == digest
    if dataset_dir.version is not None:  # recognised without a urls.txt (upstream's tree): by its pins
        return digest == dataset_dir.version.sha256["urls.txt"]
    return True  # nothing in DIR says otherwise, and the user has named the version
