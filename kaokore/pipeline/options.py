"""What a download was asked to do: its arguments, checked before DIR is looked at.

Every usage error of `kaokore.download` that needs neither DIR nor the metadata is found
here, so a bad option never leaves a trace on disk.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from ..dataset.layout import check_layout
from ..dataset.versions import Version
from ..errors import UsageError
from .plan import check_selection
from .records import RetryPolicy
from .session import CaCheck, HttpOptions

MAX_TIMEOUT = 3600.0  # beyond this (or inf, or nan) a timeout is a hang


@dataclass(frozen=True)
class Options:
    """One run's arguments, checked; `dataset_version` and `layout` are as asked (None: DIR's own)."""

    root: Path
    dataset_version: str | Version | None
    layout: str | None
    threads: int
    per_host: int
    force: bool
    http: HttpOptions
    policy: RetryPolicy
    metadata_dir: str | os.PathLike | None
    metadata_url: str | None
    splits: list[str] | None
    limit: int | None
    quiet: bool
    stream: TextIO
    reuse: Iterable[str | os.PathLike]
    started: float  # time.monotonic() when the run began: the summary says how long it took
    ca_check: CaCheck  # the CA file's full load, under way: waited for before the first request


def check_options(dir: str | os.PathLike, dataset_version: str | Version | None, layout: str | None, *,
                  threads: int, per_host: int, retries: int | None, timeout: float, force: bool,
                  verify: bool | str | os.PathLike, metadata_dir: str | os.PathLike | None,
                  metadata_url: str | None, splits: Iterable[str] | None, limit: int | None, quiet: bool,
                  stream: TextIO | None, policy: RetryPolicy | None,
                  reuse: Iterable[str | os.PathLike]) -> Options:
    """`kaokore.download`'s arguments (documented there) as `Options`, or the first `UsageError`."""
    started = time.monotonic()
    policy = policy or RetryPolicy()
    if retries is not None:
        policy = replace(policy, retries=retries)  # the plain argument is what a user reaches for first
    _check_numbers(threads=threads, per_host=per_host, retries=policy.retries, timeout=timeout)
    if layout is not None:
        check_layout(layout)
    splits = list(splits) if splits is not None else None
    check_selection(splits, limit)
    http = _http_options(timeout, verify)
    return Options(root=Path(dir), dataset_version=dataset_version, layout=layout, threads=threads,
                   per_host=per_host, force=force, http=http, policy=policy,
                   metadata_dir=metadata_dir, metadata_url=metadata_url, splits=splits, limit=limit,
                   quiet=quiet, stream=stream or sys.stderr, reuse=reuse, started=started, ca_check=CaCheck(http))


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
