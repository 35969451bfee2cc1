#!/usr/bin/env python3
"""What one failing host costs that host, and the run: requests, per image, rate, wall time.

One loopback host (tests/iiif_server.py) fails every image request in one way; two
healthy hosts serve the rest. `kaokore.download` runs with its default options
(threads 12, per-host 4, retries 5, timeout 30). For each way of failing, the table
gives the requests the failing host received (for the proxy row: the CONNECTs for it),
per image of that host, their rate while it was being asked, and the run's wall time.
A last row puts a failing host next to a flaky one (every fifth first request cut) and
says what the flaky one lost.

    python benchmarks/failing_host.py                 # every kind, 1,184 images on the failing host
    python benchmarks/failing_host.py --kinds 500 cut --images 300
    python benchmarks/failing_host.py --slow          # also "503 with Retry-After: 5" (minutes)

Not a test: the figures depend on the machine. The request counts do not.
"""
from __future__ import annotations

import argparse
import io
import os
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS_DIR))  # the test server and the synthetic metadata live with the tests

from iiif_server import FakeIIIF, Fault  # noqa: E402
from synthetic import default_label, metadata_files, write_files  # noqa: E402

import kaokore  # noqa: E402
from kaokore.session import host_key  # noqa: E402

FAILING, FLAKY = 0, 1
# name -> (fault, delay before answering); "proxy" is a proxy refusing the tunnel with 502.
KINDS = {
    "cut": (Fault.CUT, 0.0),
    "500": (Fault.S500, 0.0),
    "502": (Fault.S502, 0.0),
    "504": (Fault.S504, 0.0),
    "html-200": (Fault.HTML200, 0.0),
    "empty-200": (Fault.EMPTY200, 0.0),
    "500-after-100ms": (Fault.S500, 0.1),
    "proxy-502": (None, 0.0),
    "flaky+500": (Fault.S500, 0.0),
}
SLOW_KINDS = {"503-retry-after-5": (Fault.S503_RETRY_AFTER, 0.0)}
LABELS = {
    "cut": "connections cut after the request",
    "500": "500",
    "502": "502",
    "504": "504",
    "html-200": "200 with an HTML page",
    "empty-200": "200, empty",
    "500-after-100ms": "500 after 100 ms",
    "proxy-502": "a proxy answering 502 to CONNECT",
    "flaky+500": "500, next to a 20%-flaky host",
    "503-retry-after-5": "503 with Retry-After: 5",
}


@dataclass
class Row:
    kind: str
    requests: int
    images: int
    seconds_asked: float
    wall: float
    exit_status: int
    failed_elsewhere: int
    reason: str

    def line(self) -> str:
        rate = self.requests / self.seconds_asked if self.seconds_asked > 0 else float("nan")
        return (f"| {LABELS[self.kind]} | {self.requests:,} | {self.requests / self.images:.3f} | "
                f"{rate:.1f}/s over {self.seconds_asked:.1f} s | {self.wall:.1f} s | {self.exit_status} | "
                f"{self.failed_elsewhere} |")


def make_metadata(srv: FakeIIIF, folder: Path, failing_images: int, others: int) -> dict[int, str]:
    """`failing_images` URLs on host 0 and `others` on each other host, every identifier distinct."""
    urls, lines, labels = {}, [], {}
    plan = [FAILING] * failing_images + [h for h in range(1, len(srv.base_urls)) for _ in range(others)]
    for i, host in enumerate(plan):
        urls[i] = srv.url(host, f"book{host}/page{i}.tif", region="100,200,300,300")
        lines.append(urls[i])
        labels[i] = default_label(i)
    write_files(folder, metadata_files(lines, labels))
    return urls


def tls_context(folder: Path):
    import trustme  # the proxy row needs https (CONNECT is only for https), hence a throwaway CA

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context, str(folder / "ca.pem")


def run(kind: str, fault: Fault | None, delay: float, failing_images: int, others: int) -> Row:
    with tempfile.TemporaryDirectory(prefix="kaokore-failing-") as tmp:
        tmp = Path(tmp)
        context, ca = tls_context(tmp) if fault is None else (None, None)
        with FakeIIIF(hosts=3, ssl_context=context) as srv:
            make_metadata(srv, tmp / "metadata", failing_images, others)
            env = {}
            if fault is None:
                srv.refuse_tunnels(FAILING)
                env = {"HTTPS_PROXY": srv.proxy_url, "NO_PROXY": "", "no_proxy": ""}
            else:
                srv.fail_host(FAILING, fault, delay=delay)
            if kind.startswith("flaky"):
                srv.flaky_host(FLAKY, Fault.CUT, every=5)
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            err = io.StringIO()
            started = time.monotonic()
            try:
                summary = kaokore.download(tmp / "data", metadata_dir=tmp / "metadata", verify=ca or True, stream=err,
                                           quiet=True)
            finally:
                for k, v in saved.items():
                    if v is None:
                        del os.environ[k]
                    else:
                        os.environ[k] = v
            wall = time.monotonic() - started
            failing = host_key(srv.base_urls[FAILING])
            if fault is None:
                times = [t for (m, target), t in zip(srv.proxy_log, srv.proxy_times)
                         if m == "CONNECT" and target == failing]
            else:
                times = [t for (h, path), t in zip(srv.request_log, srv.request_times)
                         if h == FAILING and path.startswith("/iiif/")]
        lost_elsewhere = sum(1 for f in summary.failures if host_key(f.url) != failing)
        reasons = {f.error for f in summary.failures if host_key(f.url) == failing}
        reason = max(reasons, key=lambda r: sum(f.error == r for f in summary.failures)) if reasons else ""
        return Row(kind, len(times), failing_images, (max(times) - min(times)) if times else 0.0, wall,
                   summary.exit_status, lost_elsewhere, reason)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1184, help="images on the failing host (default 1184)")
    parser.add_argument("--others", type=int, default=150, help="images on each healthy host (default 150)")
    parser.add_argument("--kinds", nargs="+", choices=[*KINDS, *SLOW_KINDS], help="only these")
    parser.add_argument("--slow", action="store_true", help="also 503 with Retry-After: 5 (several minutes)")
    args = parser.parse_args(argv)
    kinds = dict(KINDS, **(SLOW_KINDS if args.slow else {}))
    if args.kinds:
        kinds = {k: v for k, v in {**KINDS, **SLOW_KINDS}.items() if k in args.kinds}

    print(f"{args.images} images on the failing host, {args.others} on each of two healthy ones; default options\n")
    print("| the host answers | requests to it | per image | rate while asked | wall time | exit | lost elsewhere |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for kind, (fault, delay) in kinds.items():
        row = run(kind, fault, delay, args.images, args.others)
        rows.append(row)
        print(row.line(), flush=True)
    print()
    for row in rows:
        print(f"{row.kind}: {row.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
