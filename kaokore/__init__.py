"""kaokore: obtain, verify and load the KaoKore dataset of faces in Japanese art.

    >>> import kaokore
    >>> summary = kaokore.download("data", dataset_version="1.3")
    >>> kaokore.verify("data").ok

Neither PyTorch nor TensorFlow is imported here: the loaders live in
`kaokore.torch` and `kaokore.tensorflow` and are imported on demand.
"""
from ._version import __version__
from .downloader import Interrupted, download
from .errors import KaokoreError
from .report import Summary
from .verifier import verify
from .versions import VERSIONS

__all__ = ["__version__", "download", "verify", "Summary", "Interrupted", "KaokoreError", "VERSIONS"]
