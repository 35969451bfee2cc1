"""The pinned registry of KaoKore dataset versions.

Every metadata file is pinned to one upstream commit and to its SHA-256, so a
download is reproducible and a tampered or truncated file is an error rather
than a silently different dataset.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import UsageError

UPSTREAM_COMMIT = "2a1217883a2e86586b5cabe58f9e358b16ab6f33"
UPSTREAM_BASE_URL = f"https://raw.githubusercontent.com/rois-codh/kaokore/{UPSTREAM_COMMIT}"

METADATA_FILES = (
    "urls.txt",
    "labels.csv",
    "labels.metadata.en.txt",
    "labels.metadata.ja.txt",
    "original_tags.txt",
)

DEFAULT_VERSION = "1.0"  # upstream's default; the published benchmark numbers are for 1.0


@dataclass(frozen=True)
class Version:
    """One dataset version, its metadata files pinned by SHA-256; the entries of `VERSIONS`.

    Attributes
    ----------
    name : str
        "1.0", "1.1", "1.2" or "1.3".
    folder : str
        The upstream folder holding its metadata files (e.g. "dataset_v1.3").
    images : int
        The number of images upstream announces for the version.
    sha256 : Mapping of str to str
        The pinned hex SHA-256 of each of the five metadata files, by file name.
    """

    name: str
    folder: str
    images: int
    sha256: Mapping[str, str]

    def metadata_url(self, filename: str, base_url: str = UPSTREAM_BASE_URL) -> str:
        """The URL of metadata file `filename` under `base_url` (default: upstream at the pinned commit)."""
        return f"{base_url.rstrip('/')}/{self.folder}/{filename}"


_LABELS_METADATA_EN = "509e358dcc9c623c4b79d18026c1e9e7e49e9d62cf551ff9c6410c23e21153c8"
_LABELS_METADATA_JA = "6a856de6c7dda5add3aac5899be6b7cc5603c43811b2047c18a47859cb76f000"


def _version(name: str, folder: str, images: int, urls: str, labels: str, tags: str) -> Version:
    digests = {
        "urls.txt": urls,
        "labels.csv": labels,
        "labels.metadata.en.txt": _LABELS_METADATA_EN,
        "labels.metadata.ja.txt": _LABELS_METADATA_JA,
        "original_tags.txt": tags,
    }
    return Version(name, folder, images, MappingProxyType(digests))


VERSIONS: Mapping[str, Version] = MappingProxyType({
    v.name: v
    for v in (
        _version(
            "1.0", "dataset", 5552,
            urls="22e1ebd6fc3374358fd75540e62c767a8dfcbe2298510472d9ba0385ec4a3c22",
            labels="13c3564f5db3854fa20de924271a29163bc702b06da97ad86a9414fe7c2ea98c",
            tags="aed5a0088b80bf6a359b4d5f9b7c6a2e57a457357c31927e94817b2ec4b6c9d4",
        ),
        _version(
            "1.1", "dataset_v1.1", 8573,
            urls="a41bd73ca2abff7a665319785264198fe5d9df0bef3cdd816ff41bdda06e7393",
            labels="1776a644b37bc46c318d604b572341d9045439ff82597ee8ec0991b8bd9e9a1c",
            tags="d727206243e127094dc1d9ae512034e6e4f6b47ea6258f203b5eac1edb642e85",
        ),
        _version(
            "1.2", "dataset_v1.2", 8848,
            urls="5675da064164657c367558fb16ade6fca4e73930169672261698d984c6cb4192",
            labels="fcf670ed4824de878af3b8c7ab4dd38cc1b47adedbfce9170faa568b0f982da6",
            tags="d8c61312fe9101559ced73300e85bdc155ecb933956488dc5d9867d578baea7b",
        ),
        _version(
            "1.3", "dataset_v1.3", 9683,
            urls="5d100e034e1fb956af0d39b7e662533e06c32aaf71d1f52709b358d37ee6ef1c",
            labels="fa2c9e869073f26253cf0a5f58c619ec3e76ea918c603933ad1e1d93b9dc5d67",
            tags="87fcaa038e9c337e638dfb0a8884715a3bd400f80b538a4f032d27c7fb05c694",
        ),
    )
})


def get_version(name: str) -> Version:
    """The registered version called `name`.

    Parameters
    ----------
    name : str
        "1.0", "1.1", "1.2" or "1.3".

    Returns
    -------
    Version

    Raises
    ------
    UsageError
        No version has that name.
    """
    try:
        return VERSIONS[name]
    except KeyError:
        known = ", ".join(VERSIONS)
        raise UsageError(f"unknown dataset version {name!r} (known: {known})") from None
