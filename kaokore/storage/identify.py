"""Which pinned version a set of metadata files is: the evidence `DatasetDir.version` is drawn from.

A file is recognised by its SHA-256 against the pins of every version; kaokore.json is
the record when the files are the user's own (``--metadata-dir``) or have since gone.
"""
from __future__ import annotations

from collections.abc import Mapping

from ..dataset import metadata as md
from ..dataset import versions
from ..dataset.versions import Version

# The files whose bytes tell one version from another, strongest first: urls.txt decides
# which image N is; labels.csv and original_tags.txt are what upstream's download.py copies.
IDENTIFYING_FILES = ("urls.txt", "labels.csv", "original_tags.txt")


def judge_version(files: Mapping[str, bytes], state: Mapping) -> tuple[Version | None, str]:
    """The version DIR holds, judged by its files' pins first and its state file second, and how
    it was told (or why it could not be).

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
        return _by_pins(matched, said)
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


def _by_pins(matched: Mapping[str, set[str]], said: str | None) -> tuple[Version | None, str]:
    """The version every pinned file agrees on (kaokore.json's, among several), or why there is none."""
    common = set.intersection(*matched.values())
    if not common:
        parts = ", ".join(f"{n} is {' or '.join(sorted(vs))}'s" for n, vs in matched.items())
        return None, f"its metadata files belong to different versions ({parts})"
    source = next(n for n in IDENTIFYING_FILES if n in matched)
    name = said if said in common else sorted(common)[0]
    if said and said not in common:
        return None, f"kaokore.json says {said} but {source} is {name}'s"
    return versions.VERSIONS[name], f"{source} is the pinned copy of {name}"


def pinned_version(files: Mapping[str, bytes] | None) -> Version | None:
    """The pinned version the user's --metadata-dir files are, if they are one."""
    if files is None or "urls.txt" not in files:
        return None
    digest = md.sha256(files["urls.txt"])
    return next((v for v in versions.VERSIONS.values() if v.sha256["urls.txt"] == digest), None)
