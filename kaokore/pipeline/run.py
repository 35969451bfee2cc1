"""`kaokore.download`: the whole run, from pinned metadata to a verified tree on disk.

This module only sequences the stages; each stage lives in its own module:
versions -> metadata -> directory (what DIR holds) -> plan -> fetch (scheduler) -> normalize
-> store -> report, and last describe (what DIR says about itself to other tools).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TextIO

from .. import defaults, hints
from .._version import __version__
from ..dataset import metadata as md
from ..dataset.labels import parse_classes
from ..dataset.layout import any_layout_folders, check_layout
from ..dataset.versions import METADATA_FILES, UPSTREAM_BASE_URL, Version
from ..description.listing import prepare_description
from ..description.write import download_command, write_dataset_description
from ..errors import DirectoryError, UsageError
from ..storage.directory import DatasetDir, inspect
from ..storage.identify import IDENTIFYING_FILES
from ..storage.lock import exclusive
from ..storage.manifest import Journal, read_failures, write_failures, write_manifest, write_state
from ..storage.records import State
from ..storage.resolve import resolve
from ..storage.safefs import check_dir
from ..storage.store import (
    StoreError,
    prepare_folders,
    prepare_root,
    release_space,
    remove_temporaries,
    reserve_space,
    write_root_files,
)
from .fetch import fetch_images, get_metadata_file
from .plan import check_selection, make_plan, select
from .records import Failure, RetryPolicy
from .report import Summary, log, note
from .reuse import open_sources, planner, split_twins, store_twins
from .session import HttpOptions, make_session

METADATA_URL_ENV = "KAOKORE_METADATA_URL"
FIRST_REQUESTS = 1.0  # seconds a run's first requests have before the description is prepared beside them
MAX_TIMEOUT = 3600.0  # beyond this (or inf, or nan) a timeout is a hang


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a download, raised after state was saved; carries the summary.

    A `KeyboardInterrupt`, so code that does not catch it stops as on any Ctrl-C.
    The manifest and failures.csv are saved first, and a rerun resumes the download.

    Attributes
    ----------
    summary : Summary
        What the run did before it was interrupted (``summary.interrupted`` is True).
    """

    def __init__(self, summary: Summary):
        super().__init__("interrupted")
        self.summary = summary


def download(
    dir: str | os.PathLike = defaults.DIR,
    dataset_version: str | Version | None = None,
    layout: str | None = None,
    *,
    threads: int = defaults.THREADS,
    per_host: int = defaults.PER_HOST,
    retries: int | None = None,
    timeout: float = defaults.TIMEOUT,
    force: bool = False,
    verify: bool | str | os.PathLike = True,
    metadata_dir: str | os.PathLike | None = None,
    metadata_url: str | None = None,
    splits: Iterable[str] | None = None,
    limit: int | None = None,
    quiet: bool = False,
    stream: TextIO | None = None,
    policy: RetryPolicy | None = None,
    reuse: Iterable[str | os.PathLike] = (),
) -> Summary:
    """Download, complete or re-check the KaoKore dataset under `dir`.

    A rerun fetches only what is missing or damaged; a tree that already holds a
    version (one of kaokore's, or upstream's ``images_256/``) is completed in that
    version and layout.

    Parameters
    ----------
    dir : str or os.PathLike
        The dataset directory (created if missing).
    dataset_version : str or Version, optional
        "1.0", "1.1", "1.2" or "1.3". Default: the version `dir` holds, else "1.0".
        A version that contradicts what `dir` holds is refused (`UsageError`).
    layout : str, optional
        "split", "flat", "gender" or "status". Default: the layout `dir` has, else "split".
        Another layout than `dir`'s moves the images already there (no network).
    threads : int
        Simultaneous downloads in total.
    per_host : int
        Simultaneous requests to one server; never exceeded.
    retries : int, optional
        Retries per image for transient failures (default: the policy's, 5).
    timeout : float
        Connect and read timeout in seconds.
    force : bool
        Fetch again images already present.
    verify : bool or str or os.PathLike
        TLS verification, as in `requests`: True checks certificates against the
        system's (or ``REQUESTS_CA_BUNDLE``'s) CAs, a path trusts that CA bundle,
        False checks nothing (``--ssl_unverified_context``, for broken conda installs).
    metadata_dir : str or os.PathLike, optional
        Read the five metadata files from this folder (validated, not held to the pins).
    metadata_url : str, optional
        A mirror of the upstream tree (``BASE/<folder>/<file>``); pins still enforced.
        Default: ``$KAOKORE_METADATA_URL``, else upstream at its pinned commit.
    splits : iterable of str, optional
        Only these of "train", "dev", "test", "unlabeled".
    limit : int, optional
        At most this many images (smoke runs).
    quiet : bool
        Show nothing: no progress, no notes, no summary line. Notes are still logged
        under the "kaokore" logger.
    stream : text file, optional
        Where the progress display goes (default: stderr).
    policy : RetryPolicy, optional
        Retry, backoff and failing-host settings.
    reuse : iterable of str or os.PathLike
        Other trees kaokore downloaded (``--reuse``), e.g. another version's: an image whose
        IIIF request one of them holds, intact, is hard-linked (or copied) from there rather
        than fetched. They are only read. Images of one request under two numbers are
        fetched once, with or without this.

    Returns
    -------
    Summary
        What the run did; ``summary.exit_status`` is what the command line exits with.

    Raises
    ------
    KaokoreError
        Bad options, metadata or directory; nothing is fetched then. `RunStopped` (exit
        status 2) when the disk fills up or turns read-only mid-run, once the manifest is saved.
    Interrupted
        Ctrl-C (or SIGTERM from the command line), once the manifest is saved.
    """
    started = time.monotonic()
    stream = stream or sys.stderr
    policy = policy or RetryPolicy()
    if retries is not None:
        policy = replace(policy, retries=retries)  # the plain argument is what a user reaches for first
    _check_numbers(threads=threads, per_host=per_host, retries=policy.retries, timeout=timeout)
    root = Path(dir)
    if layout is not None:
        check_layout(layout)
    splits = list(splits) if splits is not None else None
    check_selection(splits, limit)
    options = _http_options(timeout, verify)

    if hints.looks_like_source(root):
        # Upstream's default --dir is "kaokore", which in a clone of this project is the source package.
        raise DirectoryError(f"{str(root)!r} looks like source code, not a dataset; pass another --dir")
    # The user's own metadata is read (and validated) first: it is part of what DIR is judged against.
    custom_files = md.read_local(metadata_dir) if metadata_dir is not None else None
    first = inspect(root, manifest_later=True)
    if custom_files is None and dataset_version is None:
        # A bare rerun of a tree made from the user's own files goes on with them; naming a version
        # asks for its pinned files instead.
        custom_files = first.own_metadata()
    # Judged before anything is written, so a refusal leaves DIR exactly as it was.
    resolve(first, dataset_version, layout, custom_files)
    sources = open_sources(reuse, root)  # only read, never locked or written
    if custom_files is not None:
        # Where the classes are known already, even the lock file waits for this check.
        check_dir(root, any_layout_folders(parse_classes(custom_files["labels.metadata.en.txt"])))
    prepare_root(root)
    if options.ssl_unverified:
        note("warning: --ssl_unverified_context (verify=False): TLS certificates are NOT checked",
             stream=stream, quiet=quiet)
    with exclusive(root), make_session(options, per_host) as session:
        # Again under the lock: another run may have changed DIR since the first look.
        found = inspect(root)
        resolved = resolve(found, dataset_version, layout, custom_files)
        version, layout = resolved.version, resolved.layout
        meta = _load_metadata(found, version, session, options, policy, custom_files, metadata_url)
        found = replace(found, files={})  # DIR's copies of the metadata are read: 3 MB less to hold for 1.3
        # Class folders are known only now: a link among them is refused before anything is written.
        check_dir(root, any_layout_folders(meta.classes))
        # What the description takes from the metadata alone is made on a thread while the images
        # download: from now when DIR lacks some of its images (the plan's hashing leaves the CPU
        # time), else once the first requests are out.
        preparation = (_Preparation(meta, layout, delay=0.0)
                       if 0 < len(found.image_files) < len(meta.downloadable) else None)
        try:
            selection = select(meta.items, splits, limit)
            summary = Summary(dir=str(root), dataset_version=version.name, layout=layout)
            try:
                write_root_files(root, meta.files)
                remove_temporaries(root, any_layout_folders(meta.classes))
                journal = Journal(root)
                inform = partial(note, stream=stream, quiet=quiet, level=logging.INFO)
                try:
                    plan = make_plan(found, meta, layout, selection, force, adopt=resolved.adopt, note=inform,
                                     record=lambda row: (journal.append(row), journal.flush()),
                                     reuse=planner(root, sources, layout, inform))
                finally:
                    journal.close()
                # Only now: the files are where this layout puts them, so the state may say so. The record of
                # the description is carried over as it was: it says what the files were made of, not what DIR holds.
                described = found.state.get("description")
                state = State(version.name, layout, meta.pinned,
                              {n: md.sha256(meta.files[n]) for n in IDENTIFYING_FILES}, __version__, described)
                write_state(root, state)
                if plan.adopted or plan.relocated or plan.damaged or plan.reused:
                    # A checkpoint before the long part: an adopted file was normalized in place, and a
                    # rerun after a crash must not take the re-encoded bytes for the server's own.
                    write_manifest(root, plan.rows.values())
                prepare_folders(root, (rel.rpartition("/")[0] for _, rel in plan.fetch))
                todo, twins = split_twins(plan.fetch)  # one request, two image numbers: fetched once
            except (StoreError, KeyboardInterrupt) as exc:
                # The disk filled up (or turned read-only), or Ctrl-C, before a single image was fetched:
                # the same summary and --json as midway. What was adopted so far is in the journal.
                summary.total = summary.not_attempted = sum(1 for item in selection if item.url)
                summary.interrupted = isinstance(exc, KeyboardInterrupt)
                _show(summary, started, stream, quiet)
                if summary.interrupted:
                    raise Interrupted(summary) from None
                raise RunStopped(exc, summary) from None
            if plan.adopted:
                note(f"kept {plan.adopted} images already in {root} as KaoKore {version.name}'s "
                     f"({plan.adopted_converted} normalized to 256x256 RGB from the file on disk)",
                     stream=stream, quiet=quiet, level=logging.INFO)

            summary = Summary(dir=str(root), dataset_version=version.name, layout=layout, total=plan.total,
                              already_present=plan.already_present, unavailable=plan.unavailable,
                              relocated=plan.relocated, damaged=len(plan.damaged), adopted=plan.adopted,
                              reused=len(plan.reused))
            rows = dict(plan.rows)
            stopped: StoreError | None = None  # the FIRST error of the disk: it is what the user must hear
            if preparation is None and plan.fetch:
                preparation = _Preparation(meta, layout, delay=FIRST_REQUESTS)
            try:
                if plan.fetch:
                    reserve_space(root, _bookkeeping_bytes(rows, plan.fetch))
                fetching = {item.name for item, _ in plan.fetch} | set(plan.reused)
                present = {item.name for item in selection if item.name in plan.rows and item.name not in fetching}
                fetch_images(session, root, todo, rows, summary, threads=threads, per_host=per_host,
                             options=options, policy=policy, layout=layout, quiet=quiet, stream=stream,
                             present=present)
                # A reused image is taken back out if a fetched one turns out to have its bytes (a placeholder).
                summary.reused = sum(1 for name in plan.reused if name in rows)
                _store_twins(root, twins, rows, summary, layout)
            except StoreError as exc:
                stopped = exc
                summary.failed = len(summary.failures)
                summary.not_attempted = max(len(plan.fetch) - summary.downloaded - summary.failed, 0)
            finally:
                # Saved however the fetching ended: a rerun trusts the manifest to skip what is done.
                # Never raises: an error here must not hide the one that stopped the run.
                release_space(root)
                unsaved = _save_bookkeeping(root, rows, summary, selection)
            stopped = stopped or unsaved
            if stopped is None:
                # Every run, a layout switch included: croissant.json, the card and imagefolder's files stay true.
                try:
                    record = write_dataset_description(
                        root, meta, layout, rows.values(), version=version.name,
                        command=download_command(root, version.name, layout, splits, limit, metadata_dir),
                        prepared=preparation.result() if preparation is not None else None, record=described)
                    if record != described:
                        write_state(root, replace(state, description=record))
                except (DirectoryError, StoreError) as exc:  # the disk filled up at the last moment: still a summary
                    stopped = StoreError(str(exc))
            _show(summary, started, stream, quiet)
        finally:
            if preparation is not None:
                preparation.close()
    if stopped is not None:
        raise RunStopped(stopped, summary)
    if summary.interrupted:
        raise Interrupted(summary)
    return summary


def _store_twins(root: Path, twins, rows, summary: Summary, layout: str) -> None:
    """The images of a request another image of the run was fetched for: from its file, or failed with it."""
    if not twins:
        return
    if summary.interrupted:
        summary.not_attempted += len(twins)
        return
    done = store_twins(root, twins, rows, summary.failures, layout)
    for row in done.rows:
        rows[row.image] = row
    summary.reused += len(done.rows)
    summary.failures.extend(done.failures)
    summary.failed = len(summary.failures)
    summary.not_attempted += done.not_attempted


class _Preparation:
    """`prepare_description` on a thread of its own, started after `delay` seconds or as soon as its
    result is asked for: the first requests of a run do not wait for it, and the run's end does not
    make it."""

    def __init__(self, meta: md.Metadata, layout: str, delay: float):
        self._go = threading.Event()
        self._cancelled = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kaokore-describe")
        self._future = self._pool.submit(self._run, meta, layout, delay)

    def _run(self, meta: md.Metadata, layout: str, delay: float):
        self._go.wait(delay)
        return None if self._cancelled else prepare_description(meta, layout)

    def result(self):
        self._go.set()
        return self._future.result()

    def close(self) -> None:
        self._cancelled = True
        self._go.set()
        self._pool.shutdown(wait=False)


def _show(summary: Summary, started: float, stream, quiet: bool) -> None:
    summary.seconds = time.monotonic() - started
    log.info(summary.line())
    if not quiet:
        print(summary.line(), file=stream, flush=True)


class RunStopped(StoreError):
    """The disk stopped the run (full, over quota, read-only) after it had begun fetching.

    What landed is in manifest.csv and what failed in failures.csv, as after any run;
    a rerun once there is room completes it. A `KaokoreError` (exit status 2); the
    message is the disk's first error.

    Attributes
    ----------
    summary : Summary
        What the run did before the disk stopped it.
    """

    def __init__(self, error: StoreError, summary: Summary):
        super().__init__(str(error))
        self.summary = summary


def _save_bookkeeping(root: Path, rows, summary: Summary, selection) -> StoreError | None:
    """Write the manifest and failures.csv, each whatever became of the other; the first error, if any."""
    first = None
    for save in (lambda: write_manifest(root, rows.values()),
                 lambda: write_failures(root, [*summary.failures, *_earlier_failures(root, selection, rows)])):
        try:
            save()
        except StoreError as exc:
            first = first or exc
    return first


def _bookkeeping_bytes(rows, todo) -> int:
    """Room, generously, for the manifest and failures.csv this run ends with, set aside while it fetches:
    a row per image kept, and per image fetched a row in one file or the other (errors ~300 characters)."""
    kept = sum(len(r.url) + 2 * len(r.path) + 200 for r in rows.values())
    fetched = sum(len(item.url) + max(2 * len(rel) + 200, 330) for item, rel in todo)
    return (kept + fetched) * 5 // 4 + 64 * 1024


def _earlier_failures(root: Path, selection, rows) -> list[Failure]:
    """Failures of earlier runs outside this run's selection that are still missing:
    a `--split dev` run must not erase the record of train images that never arrived."""
    selected = {item.name for item in selection}
    kept = []
    for old in read_failures(root):
        if old["image"] not in selected and old["image"] not in rows:
            attempts = int(old["attempts"]) if old["attempts"].isascii() and old["attempts"].isdigit() else 0
            kept.append(Failure(old["image"], old["url"], old["error"], attempts))
    return kept


def _http_options(timeout: float, verify) -> HttpOptions:
    if verify is True:
        return HttpOptions(timeout=timeout)
    if verify is False:
        return HttpOptions(timeout=timeout, ssl_unverified=True)
    if isinstance(verify, (str, os.PathLike)):
        return HttpOptions(timeout=timeout, ca_bundle=os.fspath(verify))
    raise UsageError(f"verify must be True, False or the path of a CA bundle, not {verify!r}")


def _check_numbers(*, threads: int, per_host: int, retries: int, timeout: float) -> None:
    if threads < 1:
        raise UsageError("--threads must be at least 1")
    if per_host < 1:
        raise UsageError("--per-host must be at least 1")
    if retries < 0:
        raise UsageError("--retries must be 0 or more")
    if not 0 < timeout <= MAX_TIMEOUT:
        raise UsageError(f"--timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")


def _load_metadata(found: DatasetDir, version: Version, session, options: HttpOptions, policy: RetryPolicy,
                   custom_files, metadata_url) -> md.Metadata:
    if custom_files is not None:
        # The user's own files: validated like any others, but not held to the pins.
        pinned = all(md.sha256(custom_files[n]) == d for n, d in version.sha256.items())
        return md.parse(custom_files, pinned=pinned)
    # DIR's copies that match their pins need no request (an upstream tree lacks only urls.txt).
    files = {n: data for n, data in found.files.items() if md.sha256(data) == version.sha256[n]}
    missing = [n for n in METADATA_FILES if n not in files]
    if missing:
        base = metadata_url or os.environ.get(METADATA_URL_ENV) or UPSTREAM_BASE_URL
        files.update(md.fetch_pinned(version, base, lambda url: get_metadata_file(session, url, options, policy),
                                     names=missing))
    return md.parse({n: files[n] for n in METADATA_FILES}, pinned=True)
