"""The commands that error messages suggest, so that each one names the right DIR and would run.

Upstream's default --dir, `kaokore`, is this project's source package in a clone:
`kaokore download` refuses it, so no message may suggest downloading into it.
"""
from __future__ import annotations

import os
import shlex
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


def command(name: str, root: str | os.PathLike) -> str:
    """`kaokore NAME --dir ROOT` in backquotes, ROOT quoted for a POSIX shell when it needs it."""
    return f"`kaokore {name} --dir {shlex.quote(str(root))}`"


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
