"""`kaokore.download`: the whole run, from pinned metadata to a verified tree on disk.

`download` reads as its steps, each a function of its own: check the arguments (`options`),
open DIR (`opening`: what it holds, the metadata), plan, fetch, save the bookkeeping
(`bookkeeping`), describe. The stages themselves live in their modules (this package's docstring).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import TextIO

import requests

from .. import defaults
from .._version import __version__
from ..dataset import metadata as md
from ..dataset.layout import any_layout_folders
from ..dataset.versions import Version
from ..description.listing import prepare_description
from ..description.write import download_command, write_dataset_description
from ..errors import DirectoryError, Interrupted, RunStopped
from ..storage.identify import IDENTIFYING_FILES
from ..storage.lock import exclusive
from ..storage.manifest import Journal, write_manifest, write_state
from ..storage.records import ManifestRow, State
from ..storage.store import StoreError, prepare_folders, remove_temporaries, write_root_files
from .bookkeeping import count_plan, reserve, save, settle
from .fetch import fetch_images
from .opening import Opened, look_first, open_dir
from .options import Options, check_options
from .plan import Plan, make_plan, select
from .records import RetryPolicy
from .report import Summary, log, note
from .reuse import Source, planner
from .session import make_session
from .twins import split_twins, store_twins

FIRST_REQUESTS = 1.0  # seconds a run's first requests have before the description is prepared beside them


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
    options = check_options(dir, dataset_version, layout, threads=threads, per_host=per_host, retries=retries,
                            timeout=timeout, force=force, verify=verify, metadata_dir=metadata_dir,
                            metadata_url=metadata_url, splits=splits, limit=limit, quiet=quiet, stream=stream,
                            policy=policy, reuse=reuse)
    custom_files, sources = look_first(options)
    with exclusive(options.root), make_session(options.http, options.per_host) as session:
        opened = open_dir(options, session, custom_files)
        options.ca_check.wait()  # loaded meanwhile: a bad CA file still stops the run before it plans or fetches
        summary = Summary(dir=str(options.root), dataset_version=opened.version.name, layout=opened.layout)
        # What the description takes from the metadata alone is made on a thread while the images
        # download: from now when DIR lacks some of its images (the plan's hashing leaves the CPU
        # time), else once the first requests are out.
        with _Preparation(opened.meta, opened.layout) as preparation:
            if 0 < len(opened.dataset_dir.image_files) < len(opened.meta.downloadable):
                preparation.start(delay=0.0)
            selection = select(opened.meta.items, options.splits, options.limit)
            plan, state = _plan(options, opened, selection, sources, summary)
            if plan.fetch:
                preparation.start(delay=FIRST_REQUESTS)
            rows = dict(plan.rows)
            try:
                stopped = _fetch(options, session, opened.layout, plan, selection, rows, summary)
            finally:
                # Saved however the fetching ended: a rerun trusts the manifest to skip what is done.
                unsaved = save(options.root, rows, summary, selection)
            stopped = stopped or unsaved or _describe(options, opened, rows, state, preparation)
            _show(options, summary)
    if stopped is not None:
        raise RunStopped(stopped, summary)
    if summary.interrupted:
        raise Interrupted(summary)
    return summary


def _plan(options: Options, opened: Opened, selection: Sequence[md.Item], sources: list[Source],
          summary: Summary) -> tuple[Plan, State]:
    """Bring DIR into the layout and record its state; the plan, and that state.

    The disk filling up (or turning read-only), or Ctrl-C, before a single image is fetched
    ends the run with the same summary and --json as midway; what was adopted so far is in the journal."""
    root, meta = options.root, opened.meta
    try:
        write_root_files(root, meta.files)
        remove_temporaries(root, any_layout_folders(meta.classes))
        plan = _make_plan(options, opened, selection, sources)
        state = _write_state(options, opened)
        if plan.adopted or plan.relocated or plan.damaged or plan.reused:
            # A checkpoint before the long part: an adopted file was normalized in place, and a
            # rerun after a crash must not take the re-encoded bytes for the server's own.
            write_manifest(root, plan.rows.values())
        prepare_folders(root, (rel.rpartition("/")[0] for _, rel in plan.fetch))
    except (StoreError, KeyboardInterrupt) as exc:
        meant = {item.name for item in selection if item.url}
        summary.total = len(meant)
        settle(summary, meant)
        summary.interrupted = isinstance(exc, KeyboardInterrupt)
        _show(options, summary)
        if summary.interrupted:
            raise Interrupted(summary) from None
        raise RunStopped(exc, summary) from None
    if plan.adopted:
        note(f"kept {plan.adopted} images already in {root} as KaoKore {opened.version.name}'s "
             f"({plan.adopted_converted} normalized to 256x256 RGB from the file on disk)",
             stream=options.stream, quiet=options.quiet, level=logging.INFO)
    count_plan(summary, plan)
    return plan, state


def _make_plan(options: Options, opened: Opened, selection: Sequence[md.Item], sources: list[Source]) -> Plan:
    """`make_plan`, each adopted or reused image's row journaled as soon as it is final."""
    journal = Journal(options.root)
    inform = partial(note, stream=options.stream, quiet=options.quiet, level=logging.INFO)
    try:
        return make_plan(opened.dataset_dir, opened.meta, opened.layout, selection, options.force, adopt=opened.adopt,
                         note=inform, record=lambda row: (journal.append(row), journal.flush()),
                         reuse=planner(options.root, sources, opened.layout, inform))
    finally:
        journal.close()


def _write_state(options: Options, opened: Opened) -> State:
    """kaokore.json, written only now: the files are where this layout puts them, so it may say so.
    The record of the description is carried over as it was: it says what the files were made of,
    not what DIR holds."""
    meta = opened.meta
    state = State(opened.version.name, opened.layout, meta.pinned,
                  {n: md.sha256(meta.files[n]) for n in IDENTIFYING_FILES}, __version__, opened.described)
    write_state(options.root, state)
    return state


def _fetch(options: Options, session: requests.Session, layout: str, plan: Plan, selection: Sequence[md.Item],
           rows: dict[str, ManifestRow], summary: Summary) -> StoreError | None:
    """Fetch what the plan left into `rows` and `summary`; the disk's first error, if it stopped the run."""
    todo, twins = split_twins(plan.fetch)  # one request, two image numbers: fetched once
    twins_stored = 0
    try:
        fetching = {item.name for item, _ in plan.fetch} | set(plan.reused)
        present = {item.name for item in selection if item.name in plan.rows and item.name not in fetching}
        # The room for the manifest is set aside while the first requests are out (~5 MB of random
        # bytes: ~20 ms with the GIL released), and before any image is written.
        fetch_images(session, options.root, todo, rows, summary, threads=options.threads,
                     per_host=options.per_host, options=options.http, policy=options.policy, layout=layout,
                     quiet=options.quiet, stream=options.stream, present=present,
                     before_writes=lambda: reserve(options.root, rows, plan.fetch))
        # A reused image is taken back out if a fetched one turns out to have its bytes (a placeholder).
        summary.reused = sum(1 for name in plan.reused if name in rows)
        twins_stored = store_twins(options.root, twins, rows, summary, layout)
    except StoreError as exc:
        return exc  # the FIRST error of the disk: it is what the user must hear
    finally:
        settle(summary, {item.name for item, _ in plan.fetch}, twins_stored)
    return None


def _describe(options: Options, opened: Opened, rows: dict[str, ManifestRow], state: State,
              preparation: _Preparation) -> DirectoryError | None:
    """croissant.json, the card and imagefolder's files, kept true every run (a layout switch included);
    the error, if the disk filled up at this last moment (the summary is still shown)."""
    root, version, layout, described = options.root, opened.version.name, opened.layout, opened.described
    try:
        record = write_dataset_description(
            root, opened.meta, layout, rows.values(), version=version,
            command=download_command(root, version, layout, options.splits, options.limit, options.metadata_dir),
            prepared=preparation.result(), record=described)
        if record != described:
            write_state(root, replace(state, description=record))
    except DirectoryError as exc:  # StoreError included
        return exc
    return None


class _Preparation:
    """`prepare_description` on a thread of its own, from `start` on: it runs after `delay` seconds or
    as soon as its result is asked for, so the first requests of a run do not wait for it, and the
    run's end does not make it. Never started, its result is None: the description makes it then."""

    def __init__(self, meta: md.Metadata, layout: str):
        self._meta, self._layout = meta, layout
        self._go = threading.Event()
        self._cancelled = False
        self._pool: ThreadPoolExecutor | None = None
        self._future = None

    def start(self, delay: float) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kaokore-describe")
            self._future = self._pool.submit(self._run, delay)

    def _run(self, delay: float):
        self._go.wait(delay)
        return None if self._cancelled else prepare_description(self._meta, self._layout)

    def result(self):
        if self._future is None:
            return None
        self._go.set()
        return self._future.result()

    def __enter__(self) -> _Preparation:
        return self

    def __exit__(self, *exc) -> None:
        self._cancelled = True
        self._go.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def _show(options: Options, summary: Summary) -> None:
    summary.seconds = time.monotonic() - options.started
    log.info(summary.line())
    if not options.quiet:
        print(summary.line(), file=options.stream, flush=True)
