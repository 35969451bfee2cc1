"""Errors that end a command with a one-line message and a documented exit status.

Anything raised as a `KaokoreError` is the user's or the input's fault and is
reported without a traceback; anything else is a bug in kaokore. `Interrupted`
(Ctrl-C) is no error of the input: a `KeyboardInterrupt`, with the summary saved.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # as a shell reports a process ended by SIGPIPE

# What each status means, as `--help` prints it; docs/cli.md has the full table.
_MEANINGS = {
    EXIT_OK: "complete (download) / intact (verify)",
    EXIT_INCOMPLETE: "some images failed (see failures.csv) / the tree is not intact",
    EXIT_USAGE: "bad usage, bad or mismatched metadata, or an unusable --dir",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); state was saved and a rerun resumes",
    EXIT_BROKEN_PIPE: "the reader of stdout went away (e.g. `| head`)",
}
# `kaokore verify --help` says what each of the three statuses it uses proves.
_VERIFY_MEANINGS = {
    EXIT_OK: "every listed image is present, intact and normalized; metadata matches its pins",
    EXIT_INCOMPLETE: "problems found (one line each; --json lists them all)",
    EXIT_USAGE: "bad usage, or DIR has no usable metadata",
}


def exit_status_help(verify: bool = False) -> str:
    """The "exit status:" block of a `--help` epilog, one status a line: `kaokore verify`'s, or everyone's."""
    meanings = _VERIFY_MEANINGS if verify else _MEANINGS
    return "\n".join(["exit status:", *(f"  {status:<4} {text}" for status, text in meanings.items())])


class KaokoreError(Exception):
    """Base class of kaokore's errors: the message is one line, fit to show a user as it is.

    Attributes
    ----------
    exit_status : int
        What the command line exits with when this error ends it: 2 (``EXIT_USAGE``)
        for every kaokore error.
    """

    exit_status = EXIT_USAGE


class UsageError(KaokoreError):
    """An option or argument that cannot work."""


class MetadataError(KaokoreError):
    """A metadata file that is missing, malformed or hostile.

    Attributes
    ----------
    filename : str
        The file at fault.
    line : int or None
        Its 1-based line number, when the fault is on one line.
    """

    def __init__(self, filename: str, line: int | None, message: str):
        self.filename = filename
        self.line = line
        where = f"{filename}:{line}" if line is not None else filename
        super().__init__(f"{where}: {message}")


class ChecksumError(MetadataError):
    """A pinned metadata file whose bytes are not the ones we pinned."""


class DirectoryError(KaokoreError):
    """DIR cannot be used: it cannot be created or written, or holds no (or no complete) dataset."""


class NetworkError(KaokoreError):
    """The metadata could not be fetched, so no download can start."""


class RunStopped(DirectoryError):
    """The disk stopped the run (full, over quota, read-only) after it had begun fetching.

    What landed is in manifest.csv and what failed in failures.csv, as after any run;
    a rerun once there is room completes it. A `KaokoreError` (exit status 2); the
    message is the disk's first error.

    Attributes
    ----------
    summary : Summary
        What the run did before the disk stopped it.
    """

    def __init__(self, error: Exception, summary):
        super().__init__(str(error))
        self.summary = summary


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a download, raised after state was saved; carries the summary.

    A `KeyboardInterrupt`, so code that does not catch it stops as on any Ctrl-C.
    The manifest and failures.csv are saved first, and a rerun resumes the download.

    Attributes
    ----------
    summary : Summary
        What the run did before it was interrupted (``summary.interrupted`` is True).
    """

    def __init__(self, summary):
        super().__init__("interrupted")
        self.summary = summary
