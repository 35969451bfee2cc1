"""The command line: one table of subcommands (`COMMANDS`), a thin argparse layer over the library.

Multi-word flags take both spellings, `--per-host` and `--per_host`; help shows
the one the docs use (dashes, but upstream's `--dataset_version` and
`--ssl_unverified_context`). Every `KaokoreError` becomes one line on stderr and its
exit status; a traceback here would be a bug.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from . import defaults, errors
from ._version import __version__
from .dataset.layout import DEFAULT_LAYOUT, LAYOUTS, SPLIT_CHOICES
from .dataset.versions import DEFAULT_VERSION, VERSIONS
from .errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, KaokoreError, UsageError, exit_status_help
from .flags import Parser, flag

# Pre-wrapped: these parsers keep the exit-status tables' line breaks, so they do not wrap text.
DOWNLOAD_DESCRIPTION = """\
Download a KaoKore version into DIR: the pinned metadata, then every image as a
256x256 RGB JPEG in the chosen layout. A rerun checks what is there and fetches
only what is missing or damaged; another --layout moves the images already
there, without the network. Every multi-word flag also takes its other
spelling (--per_host, --dataset-version)."""

VERIFY_DESCRIPTION = """\
Check DIR without the network: every image the version lists is present where
the layout puts it, matches its manifest SHA-256 and is a 256x256 RGB JPEG; the
metadata matches its pins; no stray files sit among the images.

What "is a 256x256 RGB JPEG" proves depends on the mode:
  plain   an image whose SHA-256 matches its manifest row is the image kaokore
          decoded in full when it wrote that row: its header is read (format,
          size, mode), its scan data is not decoded again. An image with no row
          is decoded in full.
  --deep  every image is decoded in full, whatever its row says: also finds
          damage the manifest does not show (a row edited to match damaged
          bytes). About five times the CPU of a plain check."""


def add_dir_option(parser: argparse.ArgumentParser, what: str = "dataset directory",
                   default: str = defaults.DIR) -> None:
    """`--dir`, the one flag every command but `versions` takes."""
    flag(parser, "dir", default=default, metavar="DIR", help=f"{what} (default: %(default)s)")


def add_download_options(parser: argparse.ArgumentParser, *, threads_default: int = defaults.THREADS,
                         dir_default: str = defaults.DIR, layout: bool = True) -> None:
    """The download flags; shared with the top-level download.py so the two never drift."""
    add_dir_option(parser, "directory to store the dataset in", dir_default)
    flag(parser, "dataset_version", default=None, choices=list(VERSIONS), metavar="V",
         help=f"dataset version: {', '.join(VERSIONS)} (default: the one DIR holds, else {DEFAULT_VERSION}, "
              "the one upstream's benchmarks use)")
    if layout:
        flag(parser, "layout", default=None, choices=LAYOUTS, metavar="L",
             help="split: DIR/{train,dev,test,unlabeled}/; flat: DIR/images_256/ (upstream); "
                  f"gender/status: DIR/{{split}}/{{class}}/ for ImageFolder (default: the one DIR has, "
                  f"else {DEFAULT_LAYOUT})")
    flag(parser, "threads", type=int, default=threads_default, metavar="N",
         help="simultaneous downloads in total (default: %(default)s)")
    flag(parser, "per_host", type=int, default=defaults.PER_HOST, metavar="N",
         help="simultaneous requests to one server, never exceeded (default: %(default)s)")
    flag(parser, "retries", type=int, default=defaults.RETRIES, metavar="N",
         help="retries per image (default: %(default)s)")
    flag(parser, "timeout", type=float, default=defaults.TIMEOUT, metavar="S",
         help="connect and read timeout in seconds (default: %(default)s)")
    flag(parser, "force", action="store_true", help="fetch again even images already present")
    flag(parser, "ssl_unverified_context", action="store_true",
         help="do not check TLS certificates (for broken conda installs)")
    flag(parser, "ca_bundle", metavar="PEM", help="trust the CA certificates in PEM")
    flag(parser, "metadata_dir", metavar="DIR",
         help="read the five metadata files from DIR (not held to the pinned checksums)")
    flag(parser, "metadata_url", metavar="BASE",
         help="mirror of the upstream tree, checksums still enforced (env: KAOKORE_METADATA_URL)")
    flag(parser, "split", action="append", choices=SPLIT_CHOICES, dest="splits", metavar="NAME",
         help=f"fetch only this split: {', '.join(SPLIT_CHOICES)} (repeatable; default: all)")
    flag(parser, "limit", type=int, metavar="N", help="fetch at most N images (smoke runs)")
    flag(parser, "reuse", action="append", default=[], metavar="OTHER_DIR",
         help="take images of the same IIIF requests from another kaokore tree (e.g. another version's) "
              "instead of fetching them; OTHER_DIR is only read (repeatable)")
    flag(parser, "quiet", action="store_true", help="no progress display")
    flag(parser, "json", action="store_true", help="print a JSON summary on stdout")


def download_kwargs(args: argparse.Namespace) -> dict:
    return dict(
        dir=args.dir, dataset_version=args.dataset_version, layout=getattr(args, "layout", "flat"),
        threads=args.threads, per_host=args.per_host, retries=args.retries, timeout=args.timeout,
        force=args.force, verify=False if args.ssl_unverified_context else (args.ca_bundle or True),
        metadata_dir=args.metadata_dir, metadata_url=args.metadata_url, splits=args.splits,
        limit=args.limit, quiet=args.quiet, reuse=args.reuse,
    )


def run_download(kwargs: dict, as_json: bool) -> int:
    # Imported here, not at the top: the HTTP stack it loads would slow `kaokore verify` and `info`.
    from .pipeline.run import download

    quiet = kwargs.get("quiet", False)
    with _warnings_on_stderr(quiet):
        try:
            with _json_errors(as_json):
                summary = download(**kwargs)
        except errors.Interrupted as exc:
            summary = exc.summary
        except KaokoreError as exc:
            if quiet and getattr(exc, "summary", None) is not None:
                print(exc.summary.line(), file=sys.stderr, flush=True)  # a run the disk stopped
            raise
    if quiet:
        # --quiet drops the progress display, not the one line a CI log needs.
        print(summary.line(), file=sys.stderr, flush=True)
    if as_json:
        print(json.dumps(summary.to_json(), indent=2), flush=True)
    return summary.exit_status


@contextlib.contextmanager
def _warnings_on_stderr(quiet: bool):
    """A quiet run shows no progress display, but a warning (a host given up, TLS not checked)
    must still reach the terminal: the library logs it, and here it is shown."""
    if not quiet:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("kaokore: %(message)s"))
    logger = logging.getLogger("kaokore")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@contextlib.contextmanager
def _json_errors(as_json: bool):
    """With --json, a run that cannot start still answers on stdout: a CI script parsing it
    gets {"error", "exit_status"} rather than an empty string. A run the disk stopped midway
    (`RunStopped`) answers with its whole summary plus those two keys."""
    try:
        yield
    except KaokoreError as exc:
        if as_json:
            summary = getattr(exc, "summary", None)
            doc = summary.to_json() if summary is not None else {}
            doc.update(error=str(exc), exit_status=exc.exit_status)
            print(json.dumps(doc, indent=2 if summary is not None else None), flush=True)
        raise


def _verify_options(p: argparse.ArgumentParser) -> None:
    flag(p, "dataset_version", choices=list(VERSIONS), default=None, metavar="V",
         help=f"expected version: {', '.join(VERSIONS)} (default: the one DIR's metadata is)")
    flag(p, "split", action="append", choices=SPLIT_CHOICES, dest="splits", metavar="NAME",
         help=f"check only this split: {', '.join(SPLIT_CHOICES)} (repeatable)")
    flag(p, "limit", type=int, metavar="N", help="check only the first N images (as download --limit)")
    flag(p, "deep", action="store_true",
         help="decode every image in full, not only those without a manifest row (slower; see above)")
    flag(p, "json", action="store_true", help="print the report as JSON on stdout")


def _versions_options(p: argparse.ArgumentParser) -> None:
    flag(p, "overlap", action="store_true",
         help="for each pair of versions, the faces they share by IIIF request and what a download fetches "
              "with and without --reuse (reads every version's pinned urls.txt)")
    flag(p, "upstream_dir", metavar="DIR",
         help="with --overlap: read the urls.txt files from a clone of upstream's repository, not the network")
    flag(p, "metadata_url", metavar="BASE",
         help="with --overlap: mirror of the upstream tree, checksums still enforced (env: KAOKORE_METADATA_URL)")
    flag(p, "timeout", type=float, default=defaults.TIMEOUT,
         help="with --overlap: connect and read timeout in seconds (default: %(default)s)")
    flag(p, "json", action="store_true", help="with --overlap: the table as JSON on stdout")


def _run_verify(args: argparse.Namespace) -> int:
    # Imported here, not at the top: it loads Pillow, which `kaokore info` and `versions` do without.
    from .offline.verifier import verify

    with _json_errors(args.json):
        report = verify(args.dir, dataset_version=args.dataset_version, splits=args.splits, limit=args.limit,
                        deep=args.deep)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.text(), end="")
    return report.exit_status


def _run_versions(args: argparse.Namespace) -> int:
    if args.overlap:
        from .offline import overlap  # here: only --overlap needs it, and every other command would pay for it

        return overlap.run(args)
    if args.upstream_dir or args.metadata_url or args.json:
        raise UsageError("--upstream-dir, --metadata-url and --json go with --overlap")
    for v in VERSIONS.values():
        print(f"{v.name}\t{v.images:>6,} images\t{v.folder}/")
    return EXIT_OK


def _offline(module: str) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    """The flags and the run of `kaokore.offline.<module>`, which is imported only when either is called:
    info's and preview's modules cost every other command ~5 ms."""
    load = partial(importlib.import_module, f"{__package__}.offline.{module}")

    def options(p: argparse.ArgumentParser) -> None:
        p.description = load().DESCRIPTION
        load().add_options(p)

    return options, lambda args: load().run(args)


@dataclass(frozen=True)
class Command:
    """A subcommand: its `--help` texts, its flags but `--dir`, and the function that runs it."""

    name: str
    help: str
    options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None
    epilog: str | None = None
    takes_dir: bool = True  # the common `--dir`; download declares its own, shared with download.py


COMMANDS = (
    Command("download", "download the dataset (resumes; fetches only what is missing)", add_download_options,
            lambda args: run_download(download_kwargs(args), args.json), DOWNLOAD_DESCRIPTION, exit_status_help(),
            takes_dir=False),
    Command("verify", "check a downloaded tree offline", _verify_options, _run_verify,
            VERIFY_DESCRIPTION, exit_status_help(verify=True)),
    Command("versions", "list the dataset versions", _versions_options, _run_versions,
            "List the dataset versions kaokore knows, with their image counts.", takes_dir=False),
    Command("info", "class balance and completeness of a downloaded tree (offline)", *_offline("info")),
    Command("preview", "draw a contact sheet of faces (one row per class, or a mosaic)", *_offline("preview")),
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only`, the other subcommands are listed but get no flags
    (a run needs its own command's flags, not the modules the others' come from)."""
    parser = Parser(
        prog="kaokore", description="Download, verify and inspect the KaoKore dataset.",
        epilog=exit_status_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"kaokore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        # The pre-wrapped texts (an exit-status table) keep their lines; the others wrap as usual.
        raw = {"formatter_class": argparse.RawDescriptionHelpFormatter} if command.epilog else {}
        p = sub.add_parser(command.name, help=command.help, description=command.description,
                           epilog=command.epilog, **raw)
        if only is not None and command.name != only:
            continue
        if command.takes_dir:
            add_dir_option(p)
        command.options(p)
        p.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The command is the first word that is not a flag: the top level has no flag that takes a value.
    named = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(only=named if named in {c.name for c in COMMANDS} else None).parse_args(argv)
    return safe_main(lambda: args.run(args))


def safe_main(run) -> int:
    """Run a command, turning expected errors into one line and an exit status."""
    # CI runners cancel with SIGTERM: treat it like Ctrl-C so state is saved.
    previous = _terminate_as_interrupt()
    try:
        return run()
    except KaokoreError as exc:
        print(f"kaokore: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("kaokore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `kaokore info | head`: the reader left early, which is not worth a traceback.
        # Point stdout at devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        # The disk or the folder failed under us (full, read-only, removed): one line, not a traceback.
        print(f"kaokore: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_as_interrupt():
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a test runner's thread)
        return None
