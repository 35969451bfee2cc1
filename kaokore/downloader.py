"""`kaokore.download`: the whole run, from pinned metadata to a verified tree on disk.

This module only sequences the stages; each stage lives in its own module:
versions -> metadata -> plan -> fetch -> normalize -> store -> report.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Iterable, TextIO

import requests

from . import metadata as md
from ._version import __version__
from .errors import DirectoryError, NetworkError, UsageError
from .fetch import RETRY_STATUSES, Failure, HostDown, RetryPolicy, make_task, run_workers
from .layout import DEFAULT_LAYOUT, check_layout, every_folder
from .plan import check_selection, make_plan, select
from .report import Progress, Summary
from .session import TLS_HINT, HttpOptions, ResponseTooLarge, describe, get_body, host_key, make_session
from .store import (
    Journal, ManifestRow, StoreError, exclusive, prepare_folders, read_failures, read_state, prepare_root, read_manifest, remove_temporaries, write_failures,
    write_manifest, write_root_files, write_state,
)
from .versions import DEFAULT_VERSION, UPSTREAM_BASE_URL, VERSIONS, Version, get_version, identify_version

METADATA_URL_ENV = "KAOKORE_METADATA_URL"
MAX_TIMEOUT = 3600.0  # beyond this (or inf, or nan) a timeout is a hang
STOP_GRACE = 2.0  # seconds Ctrl-C waits for in-flight images before saving and leaving
JOURNAL_FLUSH = 1.0


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a download, raised after state was saved; carries the summary."""

    def __init__(self, summary: Summary):
        super().__init__("interrupted")
        self.summary = summary


def download(
    dir: str | os.PathLike = "kaokore",
    dataset_version: str | Version | None = None,
    layout: str | None = None,
    *,
    threads: int = 12,
    per_host: int = 4,
    retries: int | None = None,
    timeout: float = 30.0,
    force: bool = False,
    ssl_unverified_context: bool = False,
    ca_bundle: str | None = None,
    metadata_dir: str | os.PathLike | None = None,
    metadata_url: str | None = None,
    splits: Iterable[str] | None = None,
    limit: int | None = None,
    quiet: bool = False,
    stream: TextIO | None = None,
    policy: RetryPolicy | None = None,
) -> Summary:
    """Download (or complete, or re-check) the KaoKore dataset under `dir`.

    `dataset_version` and `layout` default to what DIR already holds (so a bare rerun
    resumes rather than rearranges), else to 1.0 and "split".
    The keyword arguments are the command line's options (`kaokore download --help`);
    `splits` and `limit` select a subset, `stream` receives the human output
    (default stderr), and `policy` tunes retries and the dead-host breaker.

    Returns a `Summary`; `summary.exit_status` is what the command line exits with.
    Raises `KaokoreError` for bad options, metadata or directory (nothing is
    fetched then), and `Interrupted` on Ctrl-C once the manifest is saved.
    """
    started = time.monotonic()
    stream = stream or sys.stderr
    policy = policy or RetryPolicy()
    if retries is not None:
        policy = replace(policy, retries=retries)  # the plain argument is what a user reaches for first
    _check_numbers(threads=threads, per_host=per_host, retries=policy.retries, timeout=timeout)
    root = Path(dir)
    held = read_state(root)
    layout = check_layout(layout or held.get("layout") or DEFAULT_LAYOUT)
    if dataset_version is None:
        dataset_version = held.get("dataset_version") if held.get("dataset_version") in VERSIONS else DEFAULT_VERSION
    splits = list(splits) if splits is not None else None
    check_selection(splits, limit)
    version = dataset_version if isinstance(dataset_version, Version) else get_version(dataset_version)
    options = HttpOptions(timeout=timeout, ssl_unverified=ssl_unverified_context, ca_bundle=ca_bundle)

    if (root / "__init__.py").exists() or (root / "pyproject.toml").exists():
        # Upstream's default --dir is "kaokore", which in a clone of this project is the source package.
        raise DirectoryError(f"{str(root)!r} looks like source code, not a dataset; pass another --dir")
    prepare_root(root)
    if ssl_unverified_context:
        print("kaokore: warning: --ssl_unverified_context: TLS certificates are NOT checked", file=stream)
    with exclusive(root), make_session(options, per_host) as session:
        meta = _load_metadata(root, version, session, options, metadata_dir, metadata_url)
        _refuse_other_version(root, version, meta)
        write_root_files(root, meta.files)

        selection = select(meta.items, splits, limit)
        old_rows = read_manifest(root)
        remove_temporaries(root, every_folder(meta.classes))
        plan = make_plan(root, meta, layout, selection, old_rows, force)
        # Only now: the files are where this layout puts them, so the state may say so.
        write_state(root, dataset_version=version.name, layout=layout, metadata_pinned=meta.pinned,
                    kaokore=__version__)
        prepare_folders(root, (rel.rpartition("/")[0] for _, rel in plan.fetch))

        summary = Summary(dir=str(root), dataset_version=version.name, layout=layout, total=plan.total,
                          already_present=plan.already_present, unavailable=plan.unavailable,
                          relocated=plan.relocated, damaged=len(plan.damaged))
        rows = dict(plan.rows)
        try:
            _fetch_all(session, root, plan.fetch, rows, summary, threads=threads, per_host=per_host,
                       options=options, policy=policy, layout=layout, quiet=quiet, stream=stream)
        finally:
            # Saved however the fetching ended: a rerun trusts the manifest to skip what is done.
            write_manifest(root, rows.values())
            write_failures(root, [*summary.failures, *_earlier_failures(root, selection, rows)])
        summary.seconds = time.monotonic() - started
        print(summary.line(), file=stream, flush=True)
    if summary.interrupted:
        raise Interrupted(summary)
    return summary


def _fetch_all(session, root: Path, todo, rows: dict[str, ManifestRow], summary: Summary, *, threads: int,
               per_host: int, options: HttpOptions, policy: RetryPolicy, layout: str, quiet: bool,
               stream: TextIO) -> None:
    if not todo:
        return
    tasks = [make_task(item, root, rel, policy) for item, rel in todo]
    stop = threading.Event()
    results: queue.Queue = queue.Queue()
    progress = Progress(Counter(task.host for task in tasks), quiet=quiet, stream=stream)
    collector = _Collector(rows, summary, Journal(root), progress, workers=min(threads, len(tasks)))
    run_workers(session, tasks, threads=collector.workers, per_host=per_host, options=options, policy=policy,
                layout=layout, stop=stop, results=results)
    try:
        while collector.workers and collector.fatal is None:
            try:
                collector.take(results.get(timeout=0.5))
            except queue.Empty:
                progress.tick()
    except KeyboardInterrupt:
        summary.interrupted = True
        progress.note("kaokore: interrupted; saving state")
    finally:
        # No new requests from here; what is in flight gets STOP_GRACE to land in the
        # manifest, then is dropped (a rerun adopts any file that landed after that).
        stop.set()
        deadline = time.monotonic() + STOP_GRACE
        while collector.workers and (summary.interrupted or collector.fatal is not None):
            try:
                collector.take(results.get(timeout=max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                break
        progress.close()
        collector.journal.close()
    if collector.fatal is not None:
        raise collector.fatal
    summary.failed = len(summary.failures)
    summary.not_attempted = max(len(tasks) - summary.downloaded - summary.failed, 0)


class _Collector:
    """Folds the workers' results into the summary, the manifest rows and the journal, on the main thread."""

    def __init__(self, rows: dict[str, ManifestRow], summary: Summary, journal: Journal, progress: Progress,
                 workers: int):
        self.rows = rows
        self.summary = summary
        self.journal = journal
        self.progress = progress
        self.workers = workers  # still running; each sends None as it exits
        self.fatal: StoreError | None = None  # DIR cannot take more images: the run must stop
        self._last_flush = time.monotonic()

    def take(self, result) -> None:
        if result is None:
            self.workers -= 1
        elif isinstance(result, ManifestRow):
            self.rows[result.image] = result
            self.journal.append(result)
            self.summary.downloaded += 1
            self.summary.converted += bool(result.converted)
            self.progress.advance(host_key(result.url), ok=True)
        elif isinstance(result, Failure):
            self.summary.failures.append(result)
            self.progress.advance(host_key(result.url), ok=False)
        elif isinstance(result, StoreError):
            self.fatal = self.fatal or result
        elif isinstance(result, HostDown):
            self.summary.hosts_unreachable.append(result.host)
            self.progress.note(f"kaokore: {result.host}: {result.reason}; "
                               f"its {result.not_attempted} remaining images were not attempted")
        now = time.monotonic()
        if now - self._last_flush >= JOURNAL_FLUSH:
            # Rows reach the disk about once a second: a crash loses at most that much source detail.
            self.journal.flush()
            self._last_flush = now


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


def _check_numbers(*, threads: int, per_host: int, retries: int, timeout: float) -> None:
    if threads < 1:
        raise UsageError("--threads must be at least 1")
    if per_host < 1:
        raise UsageError("--per-host must be at least 1")
    if retries < 0:
        raise UsageError("--retries must be 0 or more")
    if not 0 < timeout <= MAX_TIMEOUT:
        raise UsageError(f"--timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")


def _load_metadata(root: Path, version: Version, session, options: HttpOptions,
                   metadata_dir, metadata_url) -> md.Metadata:
    if metadata_dir is not None:
        # The user's own files: validated like any others, but not held to the pins.
        files = md.read_local(metadata_dir)
        pinned = all(md.sha256(files[n]) == d for n, d in version.sha256.items())
        other = identify_version(md.sha256(files["urls.txt"]))
        if other is not None and other.name != version.name:
            raise UsageError(f"{metadata_dir} holds the metadata of KaoKore {other.name}, not {version.name}; "
                             f"pass --dataset_version {other.name}")
        return md.parse(files, pinned=pinned)
    files = md.read_pinned_copy(root, version)
    if files is None:
        base = metadata_url or os.environ.get(METADATA_URL_ENV) or UPSTREAM_BASE_URL
        files = md.fetch_pinned(version, base, lambda url: _get_metadata_file(session, url, options))
    return md.parse(files, pinned=True)


def _get_metadata_file(session, url: str, options: HttpOptions) -> bytes:
    error = ""
    for attempt in range(3):
        if attempt:
            time.sleep(2 ** attempt)
        try:
            response = get_body(session, url, options)
        except requests.exceptions.SSLError:
            raise NetworkError(f"cannot fetch {url}: TLS certificate not trusted ({TLS_HINT})") from None
        except ResponseTooLarge as exc:
            raise NetworkError(f"cannot fetch metadata {url}: {exc}") from None
        except (requests.exceptions.RequestException, OSError) as exc:
            error = describe(exc)
            continue
        if response.status == 200:
            return response.body
        error = f"HTTP {response.status}"
        if response.status not in RETRY_STATUSES:
            break
    raise NetworkError(f"cannot fetch metadata {url}: {error} (use --metadata-dir DIR to read local copies)")


def _refuse_other_version(root: Path, version: Version, meta: md.Metadata) -> None:
    """Image N of one version is not image N of another: never mix them in one DIR."""
    try:
        existing = (root / "urls.txt").read_bytes()
    except OSError:
        return
    other = identify_version(md.sha256(existing))
    if other is not None and other.name != version.name:
        raise UsageError(f"{root} holds KaoKore {other.name}; use another --dir for {version.name}")
