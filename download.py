#!/usr/bin/env python3
"""Drop-in replacement for upstream KaoKore's download.py.

Same flags and defaults as upstream (--dir kaokore, --dataset_version 1.0,
--force, --threads, --ssl_unverified_context) and the same tree, DIR/images_256/,
but with timeouts, retries, politeness, atomic writes, 256x256 RGB images and an
honest exit status. It needs the kaokore package: `pip install .` in this clone.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run from a clone without installing

from kaokore import defaults  # noqa: E402
from kaokore.cli import Parser, add_download_options, download_kwargs, run_download, safe_main  # noqa: E402


def main(argv=None) -> int:
    parser = Parser(description="Download the KaoKore Dataset.")
    # upstream's defaults: --dir kaokore and 16 threads; the per-host limit keeps the servers safe whatever it is
    add_download_options(parser, threads_default=defaults.UPSTREAM_THREADS, dir_default=defaults.UPSTREAM_DIR,
                         layout=False)
    args = parser.parse_args(argv)
    return safe_main(lambda: run_download(download_kwargs(args), args.json))


if __name__ == "__main__":
    sys.exit(main())
