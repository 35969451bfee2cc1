"""Opening DIR for a download: what it holds, judged against what was asked, and the metadata.

`look_first` judges DIR before anything is written, so a refusal leaves it exactly as it was;
`open_dir` looks again under the lock (another run may have changed DIR since) and loads
the metadata the run completes DIR from.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

import requests

from .. import hints
from ..dataset import metadata as md
from ..dataset.labels import parse_classes
from ..dataset.layout import any_layout_folders
from ..dataset.versions import METADATA_FILES, UPSTREAM_BASE_URL, Version
from ..errors import DirectoryError
from ..storage.directory import DatasetDir, inspect
from ..storage.resolve import resolve
from ..storage.safefs import check_dir
from ..storage.store import prepare_root
from .fetch import get_metadata_file
from .options import Options
from .report import note
from .reuse import Source, open_sources

METADATA_URL_ENV = "KAOKORE_METADATA_URL"


@dataclass(frozen=True)
class Opened:
    """DIR under the run's lock: what it holds (`dataset_dir`, its metadata copies dropped once read),
    the version and layout the run completes it in, and the metadata it completes it from."""

    dataset_dir: DatasetDir
    version: Version
    layout: str
    adopt: bool  # a file with no manifest row may be kept as its number's image (`plan.make_plan`)
    meta: md.Metadata

    @property
    def described(self) -> dict | None:
        """kaokore.json's record of the description: what DIR's description files were made of."""
        return self.dataset_dir.state.get("description")


def look_first(options: Options) -> tuple[Mapping[str, bytes] | None, list[Source]]:
    """The user's own metadata files, if any, and the ``--reuse`` trees, once DIR is judged fit;
    then DIR's root is made ready for the lock."""
    root = options.root
    if hints.looks_like_source(root):
        # Upstream's default --dir is "kaokore", which in a clone of this project is the source package.
        raise DirectoryError(f"{str(root)!r} looks like source code, not a dataset; pass another --dir")
    # The user's own metadata is read (and validated) first: it is part of what DIR is judged against.
    custom_files = md.read_local(options.metadata_dir) if options.metadata_dir is not None else None
    first = inspect(root, manifest_later=True)
    if custom_files is None and options.dataset_version is None:
        # A bare rerun of a tree made from the user's own files goes on with them; naming a version
        # asks for its pinned files instead.
        custom_files = first.own_metadata()
    resolve(first, options.dataset_version, options.layout, custom_files)
    sources = open_sources(options.reuse, root)  # only read, never locked or written
    if custom_files is not None:
        # Where the classes are known already, even the lock file waits for this check.
        check_dir(root, any_layout_folders(parse_classes(custom_files["labels.metadata.en.txt"])))
    prepare_root(root)
    if options.http.ssl_unverified:
        note("warning: --ssl_unverified_context (verify=False): TLS certificates are NOT checked",
             stream=options.stream, quiet=options.quiet, level=logging.WARNING)
    return custom_files, sources


def open_dir(options: Options, session: requests.Session, custom_files: Mapping[str, bytes] | None) -> Opened:
    """DIR again, under the lock, with the metadata; its class folders checked for links."""
    dataset_dir = inspect(options.root)
    resolved = resolve(dataset_dir, options.dataset_version, options.layout, custom_files)
    meta = _load_metadata(dataset_dir, resolved.version, session, options, custom_files)
    # Class folders are known only now: a link among them is refused before anything is written.
    check_dir(options.root, any_layout_folders(meta.classes))
    # DIR's copies of the metadata are read: 3 MB less to hold for 1.3.
    return Opened(replace(dataset_dir, files={}), resolved.version, resolved.layout, resolved.adopt, meta)


def _load_metadata(dataset_dir: DatasetDir, version: Version, session: requests.Session, options: Options,
                   custom_files: Mapping[str, bytes] | None) -> md.Metadata:
    if custom_files is not None:
        # The user's own files: validated like any others, but not held to the pins.
        pinned = all(md.sha256(custom_files[n]) == d for n, d in version.sha256.items())
        return md.parse(custom_files, pinned=pinned)
    # DIR's copies that match their pins need no request (an upstream tree lacks only urls.txt).
    files = {n: data for n, data in dataset_dir.files.items() if md.sha256(data) == version.sha256[n]}
    missing = [n for n in METADATA_FILES if n not in files]
    if missing:
        options.ca_check.wait()
        base = options.metadata_url or os.environ.get(METADATA_URL_ENV) or UPSTREAM_BASE_URL
        get = lambda url: get_metadata_file(session, url, options.http, options.policy)  # noqa: E731
        files.update(md.fetch_pinned(version, base, get, names=missing))
    return md.parse({n: files[n] for n in METADATA_FILES}, pinned=True)
