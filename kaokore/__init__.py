"""kaokore: obtain, verify and load the KaoKore dataset of faces in Japanese art.

    >>> import kaokore
    >>> summary = kaokore.download("data", dataset_version="1.3")
    >>> kaokore.verify("data").ok

Neither PyTorch nor TensorFlow is imported here: the loaders live in
`kaokore.torch` and `kaokore.tensorflow` and are imported on demand.
Diagnostics are logged under the "kaokore" logger, silent until the application
configures logging.
"""
import importlib
import logging
from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:
    from .dataset.versions import VERSIONS, Version
    from .errors import (
        ChecksumError,
        DirectoryError,
        Interrupted,
        KaokoreError,
        MetadataError,
        NetworkError,
        RunStopped,
        UsageError,
    )
    from .offline.verifier import Problem, VerifyReport, verify
    from .pipeline.records import Failure, RetryPolicy
    from .pipeline.report import Summary
    from .pipeline.run import download

# Each public name and the module it lives in, imported on first use: `kaokore verify` and
# `kaokore info` then never load the HTTP stack (requests, urllib3), a tenth of a second.
_HOMES = {
    "download": "pipeline.run",
    "ChecksumError": "errors", "DirectoryError": "errors", "KaokoreError": "errors", "MetadataError": "errors",
    "NetworkError": "errors", "UsageError": "errors", "Interrupted": "errors", "RunStopped": "errors",
    "Failure": "pipeline.records", "RetryPolicy": "pipeline.records",
    "Summary": "pipeline.report",
    "Problem": "offline.verifier", "VerifyReport": "offline.verifier", "verify": "offline.verifier",
    "VERSIONS": "dataset.versions", "Version": "dataset.versions",
}
# The stages, as attributes of the package (kaokore.pipeline.fetch...), imported on first use too.
_SUBMODULES = frozenset({"dataset", "description", "offline", "pipeline", "storage", "errors", "defaults", "hints"})


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES, *_SUBMODULES})


logging.getLogger("kaokore").addHandler(logging.NullHandler())

__all__ = [
    "__version__",
    # the two commands, as functions
    "download", "verify",
    # what they return
    "Summary", "Failure", "VerifyReport", "Problem",
    # what they take
    "RetryPolicy", "Version", "VERSIONS",
    # what they raise
    "KaokoreError", "UsageError", "MetadataError", "ChecksumError", "DirectoryError", "NetworkError",
    "RunStopped", "Interrupted",
]
