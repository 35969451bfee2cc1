"""kaokore: obtain, verify and load the KaoKore dataset of faces in Japanese art.

    >>> import kaokore
    >>> summary = kaokore.download("data", dataset_version="1.3")
    >>> kaokore.verify("data").ok

Neither PyTorch nor TensorFlow is imported here: the loaders live in
`kaokore.torch` and `kaokore.tensorflow` and are imported on demand.
Diagnostics are logged under the "kaokore" logger, silent until the application
configures logging.
"""
import logging

from ._version import __version__
from .downloader import Interrupted, RunStopped, download
from .errors import ChecksumError, DirectoryError, KaokoreError, MetadataError, NetworkError, UsageError
from .fetch import Failure, RetryPolicy
from .report import Summary
from .verifier import Problem, VerifyReport, verify
from .versions import VERSIONS, Version

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
