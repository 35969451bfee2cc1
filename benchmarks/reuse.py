#!/usr/bin/env python3
"""What --reuse saves: a complete tree of one version, then another version with and without it.

The real metadata of two versions (a clone of upstream's repository), each upstream image server
played by a loopback one (tests/iiif_server.py). Every URL is rewritten the same way whichever
version lists it, so two versions' spellings of one face stay one IIIF request and different
faces stay different: the server becomes a loopback host, its name goes into the identifier, a
region is cut where the real page would cut it (a negative offset) and then folded onto the
fake's 2000x3000 pages keeping its shape, and the size is kept as spelled (1.3's Keio
``!200,200`` included). The table gives, for each download, the image requests the servers
received, what `kaokore versions --overlap` predicts, the wall time and the summary line.

    python benchmarks/reuse.py --upstream path/to/kaokore-clone            # 1.0, then 1.3
    python benchmarks/reuse.py --upstream path/to/kaokore-clone --have 1.1 --want 1.2
    # servers as docs/performance.md models them: 100 ms render, 50 ms round trip, 4 workers each
    python benchmarks/reuse.py --upstream path/to/kaokore-clone --server-time 0.1 --rtt 0.05 --capacity 4

Not a test: the times depend on the machine. The request counts do not.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS_DIR))  # the test server lives with the tests

from iiif_server import PAGE_SIZE, FakeIIIF  # noqa: E402

import kaokore  # noqa: E402
from kaokore.dataset.versions import METADATA_FILES, VERSIONS  # noqa: E402
from kaokore.offline.overlap import overlaps  # noqa: E402

_REGION = re.compile(r"(-?\d+),(-?\d+),(\d+),(\d+)")
SIDE = 1000  # the largest region side on the fake's pages


def fold_region(region: str) -> str:
    """The region on the fake's pages: cut at a negative edge as the real server cuts it, scaled
    to fit keeping its shape (a square stays square, any other shape stays that shape), placed
    by its offsets modulo the room left on the page."""
    match = _REGION.fullmatch(region)
    if match is None:
        return region
    x, y, w, h = map(int, match.groups())
    if x < 0:
        x, w = 0, w + x
    if y < 0:
        y, h = 0, h + y
    if max(w, h) > SIDE:
        w, h = max(1, w * SIDE // max(w, h)), max(1, h * SIDE // max(w, h))
    return f"{x % (PAGE_SIZE[0] - w)},{y % (PAGE_SIZE[1] - h)},{w},{h}"


def rewrite(url: str, hosts: dict[str, int], srv: FakeIIIF) -> str:
    server, path = url.split("/")[2], url.split("/", 3)[3]
    identifier, region, size, _, _ = path.rsplit("/", 4)
    return srv.url(hosts[server], f"{server}/{identifier}", region=fold_region(region), size=size)


def write_version(srv: FakeIIIF, upstream: Path, name: str, hosts: dict[str, int], out: Path) -> bytes:
    version = VERSIONS[name]
    out.mkdir(parents=True)
    for filename in METADATA_FILES:
        (out / filename).write_bytes((upstream / version.folder / filename).read_bytes())
    lines = (upstream / version.folder / "urls.txt").read_text(encoding="utf-8").splitlines()
    urls = "".join((rewrite(line.strip(), hosts, srv) if line.strip() else "") + "\n" for line in lines)
    (out / "urls.txt").write_text(urls, encoding="utf-8")
    return urls.encode()


def image_requests(srv: FakeIIIF) -> int:
    return sum(1 for _, path in srv.request_log if path.startswith("/iiif/"))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.lstat().st_mtime_ns, p.lstat().st_size) for p in root.rglob("*")}


def run(srv: FakeIIIF, root: Path, name: str, meta: Path, reuse: list[Path]) -> tuple[int, float, str, bool]:
    srv.reset_stats()
    started = time.monotonic()
    summary = kaokore.download(root, dataset_version=name, metadata_dir=meta, reuse=reuse, quiet=True)
    wall = time.monotonic() - started
    return image_requests(srv), wall, summary.line(), kaokore.verify(root).ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", type=Path, required=True, help="a clone of upstream's repository")
    parser.add_argument("--have", default="1.0", choices=list(VERSIONS), help="the version downloaded first")
    parser.add_argument("--want", default="1.3", choices=list(VERSIONS), help="the version downloaded next")
    parser.add_argument("--workdir", type=Path, help="keep the trees here (default: a temporary folder)")
    parser.add_argument("--server-time", type=float, default=0.0,
                        help="seconds each image takes to render (docs/performance.md's model: 0.1)")
    parser.add_argument("--rtt", type=float, default=0.0, help="round trip in seconds (the model: 0.05)")
    parser.add_argument("--capacity", type=int, help="render workers per server (the model: 4)")
    args = parser.parse_args(argv)

    pinned = overlaps({v: (args.upstream / VERSIONS[v].folder / "urls.txt").read_bytes()
                       for v in (args.have, args.want)})[0]
    with (tempfile.TemporaryDirectory(prefix="kaokore-reuse-") as tmp,
          FakeIIIF(hosts=3, server_time=args.server_time, rtt=args.rtt, capacity=args.capacity) as srv):
        work = args.workdir or Path(tmp)
        servers = set()
        for v in (args.have, args.want):
            for line in (args.upstream / VERSIONS[v].folder / "urls.txt").read_text(encoding="utf-8").splitlines():
                if line.strip():
                    servers.add(line.split("/")[2])
        hosts = {server: i for i, server in enumerate(sorted(servers))}
        urls = {v: write_version(srv, args.upstream, v, hosts, work / f"meta-{v}") for v in (args.have, args.want)}
        folded = overlaps(urls)[0]
        print(f"pinned metadata: {pinned.have} -> {pinned.want} shares {pinned.shared:,} requests; a download of "
              f"{pinned.want} fetches {pinned.fetches:,}, {pinned.with_reuse:,} with --reuse "
              f"(rewritten to loopback: {folded.shared:,} / {folded.fetches:,} / {folded.with_reuse:,})")
        print(f"loopback hosts: {', '.join(f'{s} = {srv.base_urls[i]}' for s, i in hosts.items())}; "
              f"render {args.server_time:g} s, round trip {args.rtt:g} s, capacity {args.capacity or 'unbounded'}\n")
        have = work / f"data-{args.have}"
        rows = [(f"{args.have}, empty DIR", *run(srv, have, args.have, work / f"meta-{args.have}", []),
                 VERSIONS[args.have].images)]
        before = snapshot(have)
        rows.append((f"{args.want} --reuse data-{args.have}",
                     *run(srv, work / f"data-{args.want}-reuse", args.want, work / f"meta-{args.want}", [have]),
                     folded.with_reuse))
        unchanged = snapshot(have) == before
        rows.append((f"{args.want}, empty DIR, no --reuse",
                     *run(srv, work / f"data-{args.want}", args.want, work / f"meta-{args.want}", []),
                     folded.fetches))
    print("| download | image requests | predicted | wall time | verify | summary |")
    print("|---|---:|---:|---:|---|---|")
    for label, requests, wall, line, ok, predicted in rows:
        print(f"| {label} | {requests:,} | {predicted:,} | {wall:.1f} s | {'intact' if ok else 'NOT intact'} "
              f"| {line} |")
    print(f"\ndata-{args.have} unchanged by the --reuse run (every name, size and mtime): {unchanged}")
    same = rows[1][1] == folded.with_reuse and rows[2][1] == folded.fetches
    return 0 if same and unchanged and all(r[4] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
