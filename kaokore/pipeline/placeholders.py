"""Placeholders: one picture a server sends for many faces, in place of images it does not have.

Servers and CDNs answer a request for a missing image with 200 and a stock picture. It is a
valid JPEG, often 256x256 RGB, so nothing about one answer betrays it; every face it stands
for would be stored as the same picture under its own labels. What betrays it is that it
comes back for different requests: two IIIF requests that ask for different pixels (see
`iiif.request_key`) never render byte-identical faces, so identical bytes (the same SHA-256)
for two of them mean the server rendered neither. The same request under two image numbers
is one request, and its bytes are rightly the same (1.2 lists three faces once over http and
once over https).

The download holds every image to this as it arrives (`Ledger`, under the scheduler's lock,
before the file is written), `plan` holds the images already in DIR to it, and `verify`
reports what breaks it (`duplicates`): so a tree a download leaves complete verifies clean.

Pure functions and records, no I/O.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ..dataset.iiif import request_key

# Distinct requests sharing one SHA-256 that prove a placeholder. Two already do: different
# crops of scanned paintings differ in some pixel, and a JPEG with one pixel changed is other
# bytes, so no two real faces are byte-identical. Waiting for a third would keep the first two
# placeholders of a host that sends one only for its few missing images, the silent case that
# poisons labels, and `verify` could then not hold a download's tree to the same rule.
DISTINCT_REQUESTS = 2


def reason(host: str, faces: int) -> str:
    """Why an image was not kept: its host sent its bytes for `faces` different requests."""
    return f"{host} sent the same image for {faces} different faces: a placeholder for a missing image?"


def duplicates(rows: Iterable) -> list[list]:
    """Manifest rows that share their SHA-256 with rows of other requests, in groups of one
    SHA-256 each (sorted by image name); rows of one request under several image numbers are not."""
    by_digest = defaultdict(list)
    for row in rows:
        by_digest[row.sha256].append(row)
    groups = []
    for same in by_digest.values():
        # request_key only for the rare shared digest: a whole tree's rows cost one dict.
        if len(same) > 1 and len({request_key(r.url) for r in same}) >= DISTINCT_REQUESTS:
            groups.append(sorted(same, key=lambda r: r.image))
    return sorted(groups, key=lambda group: group[0].image)


@dataclass
class Holder:
    """An image whose bytes the run knows: on disk, or being written by a worker."""

    image: str
    url: str
    path: str  # relative to DIR
    task: object | None  # the run's Task; None for an image kept from before this run
    stored: bool  # on disk (False: its worker is writing it now)


class Ledger:
    """Which bytes stand for which requests in this run: every image on disk, and those being written.

    Not thread-safe: the scheduler calls it under its lock.
    """

    def __init__(self, kept: Iterable = ()):
        self._holders: dict[str, dict[str, Holder]] = {}  # SHA-256 -> image -> holder
        self._digest_of: dict[str, str] = {}  # image -> the SHA-256 it holds
        self._keys: dict[str, str] = {}  # URL -> request key, computed when first needed
        self.placeholders: dict[str, set[str]] = {}  # SHA-256 -> the distinct requests it was sent for
        for row in kept:
            self._add(row.sha256, Holder(row.image, row.url, row.path, None, stored=True))

    def claim(self, digest: str, holder: Holder) -> tuple[int, list[Holder]]:
        """Hold `digest` for `holder`'s image, about to be written.

        Returns ``(0, [])`` when no other request has those bytes. Otherwise they are a
        placeholder: the distinct requests that got them, and the other holders that must
        be taken back (those on disk now; those still being written, once they land).
        """
        self.release(holder.image)
        key = self._key(holder.url)
        seen = self.placeholders.get(digest)
        if seen is not None:
            seen.add(key)
            return len(seen), []
        others = self._holders.get(digest, {})
        keys = {self._key(h.url) for h in others.values()} | {key}
        if len(keys) < DISTINCT_REQUESTS:
            self._add(digest, holder)
            return 0, []
        self.placeholders[digest] = keys
        for other in others.values():
            del self._digest_of[other.image]
        self._holders.pop(digest, None)
        return len(keys), list(others.values())

    def landed(self, image: str, digest: str) -> int:
        """`image` is on disk with `digest`: 0, or the distinct requests of the placeholder its
        bytes turned out to be while it was written (then it must be taken back)."""
        if digest in self.placeholders:
            return len(self.placeholders[digest])
        holder = self._holders.get(digest, {}).get(image)
        if holder is not None:
            holder.stored = True
        return 0

    def release(self, image: str) -> None:
        """Forget what `image` held (its write failed, or it is being fetched anew)."""
        digest = self._digest_of.pop(image, None)
        if digest is not None:
            holders = self._holders[digest]
            holders.pop(image, None)
            if not holders:
                del self._holders[digest]

    def _add(self, digest: str, holder: Holder) -> None:
        self._holders.setdefault(digest, {})[holder.image] = holder
        self._digest_of[holder.image] = digest

    def _key(self, url: str) -> str:
        key = self._keys.get(url)
        if key is None:
            key = self._keys[url] = request_key(url)
        return key
