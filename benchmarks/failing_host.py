#!/usr/bin/env python3
"""What one failing host costs that host, and the run: requests, per image, rate, wall time.

One loopback host (tests/iiif_server.py) fails every image request in one way, or answers
every one wrongly (one placeholder JPEG for every face, 403, a redirect loop, an oversize
body, a gzip bomb); two healthy hosts serve the rest. `kaokore.download` runs with its
default options (threads 12, per-host 4, retries 5, timeout 30 unless --timeout). For each
kind, the table gives the requests the failing host received (for the proxy row: the
CONNECTs for it), per image of that host, their rate while it was being asked, the
connections it accepted, the run's wall time, the CPU the process used (the loopback
servers' threads included), the exit status, and what the run lost on the healthy
hosts. A "flaky+500" row puts a failing host next to a flaky one (every fifth first
request cut) and says what the flaky one lost.

    python benchmarks/failing_host.py                 # every kind, 1,184 images on the failing host
    python benchmarks/failing_host.py --kinds 500 cut --images 300
    python benchmarks/failing_host.py --slow          # also "503 with Retry-After: 5" (minutes)
    # the real 1.3 metadata, every fifth image (1,070 on codh.rois.ac.jp, which fails; 447 and
    # 420 on the two others), each upstream host played by a loopback host:
    python benchmarks/failing_host.py --real path/to/dataset_v1.3 --every 5 --timeout 5 --kinds wrong

Not a test: the figures depend on the machine. The request counts do not.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import resource
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
from kaokore import defaults  # noqa: E402
from kaokore.pipeline.session import host_key  # noqa: E402

METADATA = ("labels.csv", "labels.metadata.en.txt", "labels.metadata.ja.txt", "original_tags.txt", "urls.txt")

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
# Answers that are wrong rather than failed (issue 17): `--kinds wrong` runs these.
WRONG_KINDS = {
    "placeholder": (Fault.PLACEHOLDER, 0.0),
    "403": (Fault.S403, 0.0),
    "404": (Fault.S404, 0.0),
    "410": (Fault.S410, 0.0),
    "redirect-loop": (Fault.REDIRECT_LOOP, 0.0),
    "oversize": (Fault.HUGE_BODY, 0.0),
    "oversize-no-length": (Fault.HUGE_BODY_NO_LENGTH, 0.0),
    "gzip-bomb": (Fault.GZIP_BOMB, 0.0),
    "bad-gzip": (Fault.BAD_GZIP, 0.0),
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
    "placeholder": "200 and one and the same valid 256x256 JPEG",
    "403": "403",
    "404": "404",
    "410": "410",
    "redirect-loop": "a 302 to itself",
    "oversize": "an oversize body, with its Content-Length",
    "oversize-no-length": "an oversize body, no Content-Length",
    "gzip-bomb": "gzip inflating to 2 GiB",
    "bad-gzip": "Content-Encoding gzip, not gzip",
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
    connections: int = 0
    cpu: float = 0.0  # of the whole process, the loopback servers' threads included

    def line(self) -> str:
        rate = self.requests / self.seconds_asked if self.seconds_asked > 0 else float("nan")
        return (f"| {LABELS[self.kind]} | {self.requests:,} | {self.requests / self.images:.3f} | "
                f"{rate:.1f}/s over {self.seconds_asked:.1f} s | {self.connections:,} | {self.wall:.1f} s | "
                f"{self.cpu:.1f} s | {self.exit_status} | {self.failed_elsewhere} |")


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


def real_metadata(srv: FakeIIIF, version_dir: Path, folder: Path, every: int) -> int:
    """The version's five files, with every `every`-th image kept (the others' URL lines blank)
    and each upstream host played by a loopback one: the host with the most images by host 0
    (the failing one). Regions are folded into the fake's 2000x3000 pages, sizes kept as they
    are ("!200,200" is re-encoded, as from the real Keio server). Returns the images on host 0."""
    from iiif_server import PAGE_SIZE

    files = {name: (version_dir / name).read_bytes() for name in METADATA}
    lines = files["urls.txt"].decode("utf-8").splitlines()
    servers = {}
    for line in lines:
        if line.strip():
            servers[line.split("/")[2]] = servers.get(line.split("/")[2], 0) + 1
    order = {name: i for i, name in enumerate(sorted(servers, key=servers.get, reverse=True))}
    out, failing = [], 0
    for index, line in enumerate(lines):
        url = line.strip()
        if not url or index % every:
            out.append("")
            continue
        server, path = url.split("/")[2], url.split("/", 3)[3]
        identifier, region, size = path.rsplit("/", 4)[:3]
        match = re.fullmatch(r"(-?\d+),(-?\d+),(\d+),(\d+)", region)  # one Keio region starts at x = -6
        if match:
            x, y, w, h = map(int, match.groups())
            w, h = min(w, PAGE_SIZE[0] // 2), min(h, PAGE_SIZE[1] // 2)
            region = f"{x % (PAGE_SIZE[0] - w)},{y % (PAGE_SIZE[1] - h)},{w},{h}"
        host = order[server]
        failing += host == FAILING
        out.append(srv.url(host, f"{server}/{identifier}", region=region, size=size))
    files["urls.txt"] = ("\n".join(out) + "\n").encode("utf-8")
    write_files(folder, files)
    return failing


def tls_context(folder: Path):
    import trustme  # the proxy row needs https (CONNECT is only for https), hence a throwaway CA

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context, str(folder / "ca.pem")


def run(kind: str, fault: Fault | None, delay: float, failing_images: int, others: int, *, timeout: float,
        huge_body: int, real: Path | None = None, every: int = 1) -> Row:
    with tempfile.TemporaryDirectory(prefix="kaokore-failing-") as tmp:
        tmp = Path(tmp)
        context, ca = tls_context(tmp) if fault is None else (None, None)
        with FakeIIIF(hosts=3, ssl_context=context, huge_body_size=huge_body) as srv:
            if real is not None:
                failing_images = real_metadata(srv, real, tmp / "metadata", every)
            else:
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
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu_before = usage.ru_utime + usage.ru_stime
            started = time.monotonic()
            try:
                summary = kaokore.download(tmp / "data", metadata_dir=tmp / "metadata", verify=ca or True, stream=err,
                                           quiet=True, timeout=timeout)
            finally:
                for k, v in saved.items():
                    if v is None:
                        del os.environ[k]
                    else:
                        os.environ[k] = v
            wall = time.monotonic() - started
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu = usage.ru_utime + usage.ru_stime - cpu_before
            failing = host_key(srv.base_urls[FAILING])
            if fault is None:
                times = [t for (m, target), t in zip(srv.proxy_log, srv.proxy_times)
                         if m == "CONNECT" and target == failing]
            else:
                times = [t for (h, path), t in zip(srv.request_log, srv.request_times)
                         if h == FAILING and path.startswith("/iiif/")]
            connections = srv.connections_opened[FAILING]
        lost_elsewhere = sum(1 for f in summary.failures if host_key(f.url) != failing)
        reasons = {f.error for f in summary.failures if host_key(f.url) == failing}
        reason = max(reasons, key=lambda r: sum(f.error == r for f in summary.failures)) if reasons else ""
        return Row(kind, len(times), failing_images, (max(times) - min(times)) if times else 0.0, wall,
                   summary.exit_status, lost_elsewhere, reason, connections if fault is not None else 0, cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1184, help="images on the failing host (default 1184)")
    parser.add_argument("--others", type=int, default=150, help="images on each healthy host (default 150)")
    every_kind = {**KINDS, **WRONG_KINDS, **SLOW_KINDS}
    parser.add_argument("--kinds", nargs="+", choices=[*every_kind, "wrong"],
                        help="only these ('wrong': every wrong answer: placeholder, 403 ... bad-gzip)")
    parser.add_argument("--slow", action="store_true", help="also 503 with Retry-After: 5 (several minutes)")
    parser.add_argument("--timeout", type=float, default=defaults.TIMEOUT, help="--timeout of the download")
    parser.add_argument("--huge-mb", type=float, default=300.0, help="size of an oversize body in MB (default 300)")
    parser.add_argument("--real", type=Path, metavar="VERSION_DIR",
                        help="a folder with a version's five metadata files (e.g. dataset_v1.3) to use instead of "
                             "synthetic metadata; the upstream host with the most images is the failing one")
    parser.add_argument("--every", type=int, default=1, help="with --real, keep every N-th image (default 1: all)")
    args = parser.parse_args(argv)
    kinds = dict(KINDS, **WRONG_KINDS, **(SLOW_KINDS if args.slow else {}))
    if args.kinds:
        wanted = set(args.kinds) | (set(WRONG_KINDS) if "wrong" in args.kinds else set())
        kinds = {k: v for k, v in every_kind.items() if k in wanted}

    where = (f"{args.real}, every {args.every}th image" if args.real else
             f"{args.images} images on the failing host, {args.others} on each of two healthy ones")
    print(f"{where}; default options, --timeout {args.timeout:g}; oversize bodies {args.huge_mb:g} MB\n")
    print("| the host answers | requests to it | per image | rate while asked | connections | wall time | CPU | exit "
          "| lost elsewhere |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for kind, (fault, delay) in kinds.items():
        row = run(kind, fault, delay, args.images, args.others, timeout=args.timeout,
                  huge_body=int(args.huge_mb * 10**6), real=args.real, every=args.every)
        rows.append(row)
        print(row.line(), flush=True)
    print()
    for row in rows:
        print(f"{row.kind}: {row.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
