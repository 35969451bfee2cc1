"""The defaults of a download, written once.

The command line, `kaokore.download`, `RetryPolicy` and the documentation
tables must agree; each reads its numbers from here rather than repeating them.
"""
from __future__ import annotations

DIR = "data"  # the README's quickstart is `kaokore download --dir data`; every command defaults to it
TIMEOUT = 30.0  # seconds, for connecting and for each read
THREADS = 12  # simultaneous downloads in total: 3 servers x PER_HOST, so no slot waits for a host
PER_HOST = 4  # why 4 and not more: docs/performance.md
RETRIES = 5  # retries per image for transient failures

# Upstream's download.py, which ours replaces flag for flag, used these.
UPSTREAM_DIR = "kaokore"
UPSTREAM_THREADS = 16
