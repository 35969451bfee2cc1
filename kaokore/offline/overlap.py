"""`kaokore versions --overlap`: how many faces the versions share, by IIIF request.

Measured from each version's pinned urls.txt with `iiif.request_key`, the key ``--reuse``
looks images up by: for each pair of versions, the requests the newer one shares with
the older, and what a download of the newer one fetches without ``--reuse`` (one request
per distinct request: a face listed twice is fetched once) and with ``--reuse`` of a
complete tree of the older one. The last figure is a floor: a face whose source the
older tree recorded at another size than the newer version asks for (a region that runs
off the page) is fetched again, which only the tree can tell.

The urls.txt files are held to their pins, read from a clone of upstream's repository
(``--upstream-dir``) or fetched as ``kaokore download`` fetches metadata.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ..dataset import metadata as md
from ..dataset.iiif import request_key
from ..dataset.versions import UPSTREAM_BASE_URL, VERSIONS, Version
from ..errors import EXIT_OK, MetadataError, NetworkError

URLS = "urls.txt"
REPOSITORY = "https://github.com/rois-codh/kaokore"


@dataclass(frozen=True)
class Overlap:
    """One pair of versions: a complete tree of `have`, a download of `want`.

    Attributes
    ----------
    have, want : str
        The version whose tree is reused, and the version downloaded.
    shared : int
        Distinct requests of `want` that `have` makes too.
    fetches : int
        Requests a download of `want` makes without ``--reuse``.
    with_reuse : int
        Requests it makes with ``--reuse`` of a complete `have` tree, at most.
    """

    have: str
    want: str
    shared: int
    fetches: int
    with_reuse: int


def overlaps(urls: Mapping[str, bytes]) -> list[Overlap]:
    """Every pair of the versions given (urls.txt bytes by version name), older first."""
    keys = {name: {request_key(url) for url in md.parse_urls(data) if url} for name, data in urls.items()}
    rows = []
    for have, want in itertools.combinations(urls, 2):
        shared = len(keys[have] & keys[want])
        rows.append(Overlap(have, want, shared, len(keys[want]), len(keys[want]) - shared))
    return rows


def read_upstream(folder: str | os.PathLike) -> dict[str, bytes]:
    """Each version's urls.txt from a clone of upstream's repository, held to its pin."""
    files = {}
    for version in VERSIONS.values():
        path = Path(folder) / version.folder / URLS
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise MetadataError(str(path), None, f"cannot read: {exc.strerror or exc} "
                                                 f"(--upstream-dir takes a clone of {REPOSITORY})") from None
        md.check_pinned(version, URLS, data, str(path))
        files[version.name] = data
    return files


def fetch_upstream(base: str | None, timeout: float) -> dict[str, bytes]:
    """Each version's urls.txt from upstream at its pinned commit (or a mirror), held to its pin."""
    # Imported here: with --upstream-dir the table needs no network, nor the HTTP stack's tenth of a second.
    from ..pipeline.fetch import get_metadata_file
    from ..pipeline.opening import METADATA_URL_ENV
    from ..pipeline.records import RetryPolicy
    from ..pipeline.session import HttpOptions, check_ca, make_session

    base = base or os.environ.get(METADATA_URL_ENV) or UPSTREAM_BASE_URL
    options, policy = HttpOptions(timeout=timeout), RetryPolicy(retries=1)
    check_ca(options)
    files = {}
    with make_session(options, per_host=1) as session:
        for version in VERSIONS.values():
            files[version.name] = _fetch(version, base, lambda url: get_metadata_file(session, url, options, policy))
    return files


def _fetch(version: Version, base: str, get) -> bytes:
    try:
        return md.fetch_pinned(version, base, get, names=[URLS])[URLS]
    except NetworkError as exc:
        reason = str(exc).partition(" (use --metadata-dir")[0]
        raise NetworkError(f"{reason}; offline, pass --upstream-dir with a clone of {REPOSITORY}") from None


def format_table(rows: list[Overlap]) -> str:
    lines = ["| have -> want | requests shared | a download fetches | with --reuse of have |",
             "|---|---:|---:|---:|"]
    lines += [f"| {r.have} -> {r.want} | {r.shared:,} | {r.fetches:,} | {r.with_reuse:,} |" for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``kaokore versions --overlap``: the table (or ``--json``) on stdout."""
    if args.upstream_dir is not None:
        files = read_upstream(args.upstream_dir)
    else:
        files = fetch_upstream(args.metadata_url, args.timeout)
    rows = overlaps(files)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(format_table(rows))
    return EXIT_OK
