"""The commands that error messages suggest, so that each one names the right DIR and would run.

Upstream's default --dir, `kaokore`, is this project's source package in a clone:
`kaokore download` refuses it, so no message may suggest downloading into it.
"""
from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path

from . import defaults


def looks_like_source(root: str | os.PathLike) -> bool:
    """Whether `root` is a Python package or project rather than a dataset directory.

    Parameters
    ----------
    root : str or os.PathLike
        The directory given as --dir.

    Returns
    -------
    bool
        True when it holds an ``__init__.py`` or a ``pyproject.toml``.
    """
    root = Path(root)
    return (root / "__init__.py").exists() or (root / "pyproject.toml").exists()


def command(name: str, root: str | os.PathLike, *args: str | os.PathLike) -> str:
    """`kaokore NAME --dir ROOT ARGS...` in backquotes, each word quoted for a POSIX shell when it needs it."""
    return f"`kaokore {name} {' '.join(shlex.quote(str(word)) for word in ('--dir', root, *args))}`"


def download_first(root: str | os.PathLike) -> str:
    """What to do about a DIR with no dataset in it: the download that fills it, or, for a
    source tree that download would refuse, a pointer to the DIR the dataset is in.

    Parameters
    ----------
    root : str or os.PathLike
        The directory given as --dir.

    Returns
    -------
    str
        A clause to end a one-line error with.
    """
    if looks_like_source(root):
        return (f"it looks like source code, not a dataset; pass the --dir the dataset was downloaded into "
                f"({command('download', defaults.DIR)} puts it in {defaults.DIR})")
    return f"run {command('download', root)} first"


def beside(root: str | os.PathLike, version: str, usable: Callable[[Path], bool]) -> Path:
    """A directory next to `root` for another version: ``data`` -> ``data-1.3``, or ``data-1.3-2``
    and so on while `usable` says a candidate cannot take that version (it holds another)."""
    base = Path(root)
    if base.name in ("", ".", ".."):
        base = Path(os.path.abspath(root))
    if not base.name:  # the file system's root
        base = Path(os.path.abspath(defaults.DIR))
    for n in range(1, 100):
        candidate = base.with_name(f"{base.name}-{version}" + (f"-{n}" if n > 1 else ""))
        if usable(candidate):
            return candidate
    return base.with_name(f"{base.name}-{version}-new")


def reuse_command(new_dir: str | os.PathLike, version: str, other: str | os.PathLike) -> str:
    """The download of `version` into `new_dir` that reuses the images of the tree `other`, in backquotes."""
    return command("download", new_dir, "--dataset_version", version, "--reuse", other)
