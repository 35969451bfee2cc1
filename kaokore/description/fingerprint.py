"""The dataset fingerprint: one SHA-256 that two copies of a tree can compare.

Definition: SHA-256 (hex) of the UTF-8 text made of one line per manifest row,
`<image sha256><two spaces><image name>\\n` (sha256sum's own line format), the
lines sorted by image name. Only names and bytes count: not the folder (so every
layout of the same images has the same fingerprint), not the URL (so a mirror gives
the same fingerprint), and not the order of manifest.csv. It is printed as
`sha256:<hex>`. An empty manifest has the fingerprint of the empty text.

Images kaokore re-encoded (see manifest.csv `converted`) are bytes of the local JPEG
encoder, so two copies fetched with different Pillow/libjpeg builds can differ in
those images only; `kaokore info` counts them.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..dataset.metadata import sha256
from ..storage.records import ManifestRow

PREFIX = "sha256:"


def dataset_fingerprint(rows: Iterable[ManifestRow]) -> str:
    """The fingerprint of the images a manifest lists, as 'sha256:<64 hex digits>'.

    Parameters
    ----------
    rows : iterable of ManifestRow
        The manifest's rows (e.g. ``kaokore.storage.manifest.read_manifest(root).values()``).

    Returns
    -------
    str
        ``"sha256:"`` followed by the hex SHA-256 defined in this module's docstring.
    """
    lines = [f"{row.sha256}  {row.image}\n" for row in sorted(rows, key=lambda row: row.image)]
    return PREFIX + sha256("".join(lines).encode("utf-8"))
