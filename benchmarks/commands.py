#!/usr/bin/env python3
"""What kaokore's own work around the fetch costs, on a complete tree of 9,683 images.

Figures, each for the whole process (a fresh interpreter, from its start to its exit):

    first request    a fresh download, metadata already local (--metadata-dir): from the
                     start to the first image request the loopback server receives
    end of run       a download completing the tree (48 images were missing): from the
                     last response the server sent to the exit (manifest, description, summary)
    no-op rerun      `kaokore download` again on the complete tree (no request)
    verify           `kaokore verify`
    verify --deep    `kaokore verify --deep` (when this kaokore has it)
    info             `kaokore info`

and a reference: the interpreter starting and importing kaokore's command line.

The tree is built here, quickly: metadata of the same size and shape as 1.3's
(tests/synthetic.py; or the real files with --metadata-dir, their URLs rewritten
to the loopback servers), a distinct 256x256 RGB JPEG per image, written
directly with its manifest row, then one untimed `kaokore download` run
finishes it (kaokore.json, the metadata copies, the description) and one
`kaokore verify` must call it intact. --dir measures the offline figures on an
existing tree instead (the two loopback figures then use a tree built from its
metadata files).

The commands run as an installed kaokore does, with its modules compiled once
(kept in the work folder, whatever PYTHONDONTWRITEBYTECODE says). Each is
started by a small launcher process, so that its peak RSS is its own (Linux
counts a parent's memory high-water mark into a child it vfork+execs). The
servers (tests/iiif_server.py, FakeIIIF) run in this process and note when each
image request arrived and each response was sent, and the child's CPU time
(/proc, 10 ms resolution) at those moments.

    python benchmarks/commands.py                          # synthetic 9,683-image tree, 3 runs each
    python benchmarks/commands.py --metadata-dir ../shared/upstream-kaokore/dataset_v1.3 --repeat 5
    python benchmarks/commands.py --dir data               # an existing tree
    python benchmarks/commands.py --profile-dir prof       # plus one cProfile run of each command

A benchmark, not a timed test: the suite runs it once, tiny (tests/test_benchmark.py).
The figures depend on the machine and on what else runs on it; each is the
median of --repeat runs, and the first line says how loaded the machine was.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = ROOT / "tests"
sys.path.insert(0, str(TESTS_DIR))  # the test server and the synthetic metadata live with the tests
sys.path.insert(0, str(ROOT))  # this checkout's kaokore, whatever is installed
sys.path.insert(0, str(ROOT / "benchmarks"))  # the tables, also when this file is loaded by path
from tables import markdown_table  # noqa: E402

from iiif_server import FakeIIIF  # noqa: E402
from synthetic import default_label, metadata_files, write_files  # noqa: E402

IMAGES_1_3 = 9_683
# 1.3's three servers and their shares: codh.rois.ac.jp 5,351, keio 2,233 (its URLs ask for
# !200,200, so those images are re-encoded), kyoto 2,099. 425 images have no labels.csv row.
HOST_SHARES = (5_351, 2_233, 2_099)
HOST_SIZES = ("256,256", "!200,200", "256,256")
UNLABELED_EVERY = 23  # 9,683 // 23 = 421 unlabeled, about 1.3's 425
MISSING = 48  # images the end-of-run download fetches into the tree
BASES = 64  # distinct scan data; every image is one of these with its own JPEG comment

# (key, what, target wall seconds); the targets for this 2-core machine and 9,683 images.
FIGURES = (
    ("first_request", "first request (fresh download, metadata local)", 0.2),
    ("end_of_run", "end of run (last response to exit)", 0.3),
    ("rerun", "no-op rerun", 1.5),
    ("verify", "verify", 2.0),
    ("verify_deep", "verify --deep", 6.0),
    ("info", "info", 0.5),
    ("import", "python + import kaokore.cli (reference)", None),
)
RSS_LIMIT_MB = 100.0  # "no higher than today (about 100 MB for 1.3)"

LAUNCHER = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    with open(job["log"], "ab") as log:
        start = time.monotonic()
        child = subprocess.Popen(job["argv"], env=job["env"], cwd=job["cwd"], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT)
        print(json.dumps({"pid": child.pid}), flush=True)
        _, status, usage = os.wait4(child.pid, 0)
        end = time.monotonic()
    print(json.dumps({"start": start, "end": end, "user": usage.ru_utime, "sys": usage.ru_stime,
                      "maxrss_kb": usage.ru_maxrss, "status": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class Launcher:
    """A small process that starts each command and reports its pid, then its times and rusage."""

    def __init__(self):
        self._proc = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, bufsize=1)

    def start(self, argv: list[str], env: dict, log: Path) -> int:
        # In this checkout: `python -m kaokore` imports the kaokore of its working directory first.
        self._proc.stdin.write(json.dumps({"argv": argv, "env": env, "log": str(log), "cwd": str(ROOT)}) + "\n")
        self._proc.stdin.flush()
        return json.loads(self._proc.stdout.readline())["pid"]

    def wait(self) -> dict:
        return json.loads(self._proc.stdout.readline())

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait(30)


def _proc_cpu(pid: int) -> float | None:
    """The process's user + system CPU seconds so far, all its threads (dead ones too)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (it is a zombie once it exited, until the launcher reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _proc_hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class WatchedIIIF(FakeIIIF):
    """FakeIIIF that notes, per image request, when it arrived and when its response was sent,
    with the watched process's CPU time at those moments."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.watch_pid: int | None = None
        self.arrivals: list[tuple[float, float | None, float | None]] = []  # (time, cpu s, VmHWM MB)
        self.responses: list[tuple[float, float | None]] = []  # (time sent, cpu s)
        self.first_arrival = threading.Event()
        self._watch_lock = threading.Lock()

    def watch(self, pid: int | None) -> None:
        """Note the CPU time of process `pid` from now on (None: of none)."""
        with self._watch_lock:
            self.watch_pid = pid

    def clear(self) -> None:
        with self._watch_lock:
            self.arrivals, self.responses = [], []
            self.first_arrival.clear()
        self.reset_stats()

    def _serve(self, handler, host: int) -> None:
        image = handler.path.startswith("/iiif/")
        if image:
            now, pid = time.monotonic(), self.watch_pid
            sample = (now, _proc_cpu(pid), _proc_hwm_mb(pid)) if pid else (now, None, None)
            with self._watch_lock:
                self.arrivals.append(sample)
            self.first_arrival.set()
        super()._serve(handler, host)
        if image:
            now, pid = time.monotonic(), self.watch_pid
            with self._watch_lock:
                self.responses.append((now, _proc_cpu(pid) if pid else None))


# ---- the tree --------------------------------------------------------------------------------

def synthetic_files(images: int, srv: FakeIIIF) -> dict[str, bytes]:
    """Metadata in 1.3's shape: three hosts with 1.3's shares, keio's !200,200 URLs, unlabeled images."""
    total = sum(HOST_SHARES)
    counts = [images * s // total for s in HOST_SHARES]
    counts[0] += images - sum(counts)
    # Each host's images spread over the list, as in a real urls.txt.
    order = sorted(((j + 0.5) / c, h) for h, c in enumerate(counts) for j in range(c))
    urls, labels = [], {}
    for i, (_, h) in enumerate(order):
        urls.append(srv.url(h, f"bench/host{h}/page{i // 8:05d}.tif",
                            region=f"{(i * 37) % 1600},{(i * 53) % 2600},300,300", size=HOST_SIZES[h]))
        if i % UNLABELED_EVERY != UNLABELED_EVERY - 1:
            labels[i] = default_label(i)
    return metadata_files(urls, labels)


def loopback_files(files: dict[str, bytes], srv: FakeIIIF) -> dict[str, bytes]:
    """Real metadata with each URL sent to a loopback host (one per real host, busiest first),
    its region moved onto FakeIIIF's page; the other files unchanged."""
    lines = files["urls.txt"].decode("utf-8-sig").split("\n")
    hosts: dict[str, int] = {}
    for line in lines:
        if line.strip():
            netloc = urlsplit(line.strip()).netloc
            hosts[netloc] = hosts.get(netloc, 0) + 1
    index = {netloc: i % len(srv.base_urls) for i, netloc in enumerate(sorted(hosts, key=lambda n: -hosts[n]))}
    out = []
    for line in lines:
        url = line.strip()
        if not url:
            out.append(line)
            continue
        parts = urlsplit(url)
        segments = [s for s in parts.path.split("/") if s]
        identifier = "/".join(s for s in segments[:-4] if s != "iiif")
        region, size = segments[-4], segments[-3]
        try:
            x, y, w, h = (abs(int(float(v))) for v in region.removeprefix("pct:").split(","))
            region = f"{x % 1800},{y % 2800},{max(w, 1)},{max(h, 1)}"
        except ValueError:
            region = "0,0,300,300"
        out.append(srv.url(index[parts.netloc], identifier, region=region, size=size))
    return {**files, "urls.txt": "\n".join(out).encode()}


def base_images(count: int = BASES) -> list[bytes]:
    """Distinct 256x256 RGB JPEGs with real texture (about 20 KB each, as face crops are)."""
    from PIL import Image, ImageFilter

    bases = []
    for i in range(count):
        noise = Image.effect_noise((256, 256), 40 + i).convert("RGB")
        gradient = Image.linear_gradient("L").rotate(i * 37 % 360).convert("RGB")
        tint = Image.new("RGB", (256, 256), ((i * 71) % 256, (i * 113) % 256, (i * 29) % 256))
        image = Image.blend(Image.blend(noise.filter(ImageFilter.GaussianBlur(1.2)), gradient, 0.4), tint, 0.3)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        bases.append(buf.getvalue())
    return bases


def with_comment(jpeg: bytes, text: str) -> bytes:
    """`jpeg` with a COM segment right after SOI: other bytes, the same pixels."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def build_tree(root: Path, meta_dir: Path) -> int:
    """Every image of the metadata in `meta_dir` under `root` (split layout), with its manifest
    row; returns the number of images. kaokore itself then finishes the tree (see main)."""
    from kaokore.dataset import metadata as md
    from kaokore.dataset.layout import image_path
    from kaokore.storage.manifest import write_manifest
    from kaokore.storage.records import ManifestRow

    files = md.read_local(meta_dir)
    meta = md.parse(files, pinned=False)
    bases = base_images()
    rows = []
    folders = set()
    for item in meta.downloadable:
        rel = image_path(item, "split", meta.classes)
        folder = rel.rpartition("/")[0]
        if folder not in folders:
            (root / folder).mkdir(parents=True, exist_ok=True)
            folders.add(folder)
        data = with_comment(bases[item.index % len(bases)], f"kaokore benchmark {item.index}")
        (root / rel).write_bytes(data)
        converted = "!200,200" in item.url
        rows.append(ManifestRow(item.name, rel, item.url, md.sha256(data), len(data), 200 if converted else 256,
                                200 if converted else 256, "RGB", converted, "split"))
    write_manifest(root, rows)
    return len(rows)


# ---- measuring -------------------------------------------------------------------------------

@dataclass
class Sample:
    wall: float
    cpu: float | None
    rss_mb: float | None
    status: int = 0
    requests: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class Figure:
    key: str
    what: str
    target_s: float | None
    samples: list[Sample] = field(default_factory=list)
    note: str = ""

    def median(self, attr: str) -> float | None:
        values = [getattr(s, attr) for s in self.samples if getattr(s, attr) is not None]
        return statistics.median(values) if values else None

    def to_json(self) -> dict:
        doc = asdict(self)
        doc.update(wall_s=self.median("wall"), cpu_s=self.median("cpu"), rss_mb=self.median("rss_mb"))
        return doc


class Bench:
    def __init__(self, srv: WatchedIIIF, work: Path, env: dict):
        self.srv, self.work, self.env = srv, work, env
        self.launcher = Launcher()
        self.runs = 0

    def kaokore(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "kaokore", *args]

    def run(self, argv: list[str], *, kill_after_first_request: bool = False) -> tuple[dict, int]:
        """Run `argv` to its end (or kill it once its first image request arrived); its times and rusage."""
        self.runs += 1
        log = self.work / "logs" / f"{self.runs:03d}.log"
        log.parent.mkdir(exist_ok=True)
        self.srv.clear()
        pid = self.launcher.start(argv, self.env, log)
        self.srv.watch(pid)
        if kill_after_first_request:
            while not self.srv.first_arrival.wait(0.02) and _alive(pid):
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        result = self.launcher.wait()
        self.srv.watch(None)
        result["log"] = str(log)
        if result["status"] != 0 and not kill_after_first_request:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(argv[2:])} exited with {result['status']}:\n{tail}")
        return result, self.srv.requests()

    def whole(self, argv: list[str]) -> Sample:
        result, requests = self.run(argv)
        return Sample(result["end"] - result["start"], result["user"] + result["sys"],
                      result["maxrss_kb"] / 1024, result["status"], requests)

    def close(self) -> None:
        self.launcher.close()


def measure_first_request(bench: Bench, meta_dir: Path, version: str) -> Sample:
    """A fresh download of every image, killed once the server has its first image request."""
    scratch = bench.work / "fresh"
    shutil.rmtree(scratch, ignore_errors=True)
    result, _ = bench.run(bench.kaokore("download", "--dir", str(scratch), "--metadata-dir", str(meta_dir),
                                        "--dataset_version", version, "--quiet"), kill_after_first_request=True)
    arrivals = bench.srv.arrivals
    shutil.rmtree(scratch, ignore_errors=True)
    if not arrivals:
        raise RuntimeError(f"the fresh download made no image request (see {result['log']})")
    at, cpu, hwm = arrivals[0]
    return Sample(at - result["start"], cpu, hwm, 0, len(arrivals))


def measure_end_of_run(bench: Bench, tree: Path, meta_dir: Path, images: list[str], missing: int,
                       round_: int = 0) -> Sample:
    """Delete `missing` images of the complete tree, then a download fetches them back. Each round
    takes other images, so that the tree changes each time (the server's bytes replace the built ones)
    and the run has its whole description to remake, as a run that fetched something has."""
    step = max(len(images) // missing, 1)
    chosen = images[round_ % step:: step][:missing]
    for rel in chosen:
        (tree / rel).unlink()
    result, requests = bench.run(bench.kaokore("download", "--dir", str(tree), "--metadata-dir", str(meta_dir),
                                               "--quiet"))
    responses, arrivals = bench.srv.responses, bench.srv.arrivals
    if requests != len(chosen) or len(responses) != len(chosen):
        raise RuntimeError(f"expected {len(chosen)} image requests, the server saw {requests}")
    last, cpu_then = max(responses)
    total_cpu = result["user"] + result["sys"]
    return Sample(result["end"] - last, None if cpu_then is None else max(total_cpu - cpu_then, 0.0),
                  result["maxrss_kb"] / 1024, result["status"], requests,
                  extra={"first_request_resuming_s": arrivals[0][0] - result["start"],
                         "whole_run_s": result["end"] - result["start"]})


def has_deep(bench: Bench) -> bool:
    out = subprocess.run(bench.kaokore("verify", "--help"), env=bench.env, cwd=ROOT, capture_output=True, text=True)
    return "--deep" in out.stdout


def image_rels(tree: Path) -> list[str]:
    from kaokore.storage.manifest import read_manifest

    return sorted(row.path for row in read_manifest(tree).values())


def profile(bench: Bench, argv: list[str], out: Path) -> str:
    """One cProfile run of `argv` (a kaokore command line); its top functions by own time."""
    import pstats

    prof = out.with_suffix(".prof")
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), *argv[1:]], env=bench.env, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    text = io.StringIO()
    stats = pstats.Stats(str(prof), stream=text)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    out.with_suffix(".txt").write_text(text.getvalue())
    return str(out.with_suffix(".txt"))


# ---- report ----------------------------------------------------------------------------------

def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def verdicts(figures: list[Figure], indicative: bool) -> list[dict]:
    checks = []
    for f in figures:
        if not f.samples:
            continue
        wall, rss = f.median("wall"), f.median("rss_mb")
        if f.target_s is not None:
            checks.append({"figure": f.key, "target": f"{f.what}: wall <= {f.target_s:g} s", "value": wall,
                           "limit": f.target_s, "met": wall <= f.target_s, "indicative_only": indicative})
        if f.key != "import" and rss is not None:
            checks.append({"figure": f.key, "target": f"{f.what}: peak RSS <= {RSS_LIMIT_MB:g} MB", "value": rss,
                           "limit": RSS_LIMIT_MB, "met": rss <= RSS_LIMIT_MB, "indicative_only": indicative})
    return checks


def format_table(figures: list[Figure]) -> str:
    rows = [("figure", "wall s", "CPU s", "peak RSS MB", "target s", "runs (wall s)")]
    for f in figures:
        if not f.samples:
            rows.append((f.what, "-", "-", "-", _fmt(f.target_s, "g"), f.note or "not measured"))
            continue
        rows.append((f.what, _fmt(f.median("wall"), ".3f"), _fmt(f.median("cpu"), ".2f"),
                     _fmt(f.median("rss_mb"), ".0f"), _fmt(f.target_s, "g"),
                     " ".join(f"{s.wall:.3f}" for s in f.samples)))
    return "\n".join(markdown_table(rows, left=(0, 5)))


def format_checks(checks: list[dict]) -> str:
    lines = []
    for c in checks:
        verdict = "MET" if c["met"] else "NOT MET"
        note = "  (indicative: not 9,683 images)" if c["indicative_only"] else ""
        lines.append(f"  [{verdict:7}] {c['target']}: {c['value']:.3f}{note}")
    return "\n".join(lines)


def _busy_seconds() -> float | None:
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# ---- command line ----------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images", type=int, default=IMAGES_1_3, help="images of the synthetic tree")
    p.add_argument("--metadata-dir", type=Path,
                   help="real metadata files to build the tree from (their URLs rewritten to loopback)")
    p.add_argument("--dir", type=Path, help="measure the offline figures on this existing tree instead")
    p.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is reported")
    p.add_argument("--workdir", type=Path, help="where the tree is built (default: the system's temporary folder)")
    p.add_argument("--only", help="comma-separated figures to measure (default: all): "
                                  + ", ".join(k for k, _, _ in FIGURES))
    p.add_argument("--profile-dir", type=Path, help="also write one cProfile run of each command here")
    p.add_argument("--keep", action="store_true", help="keep the built tree (its path is printed)")
    p.add_argument("--json-out", type=Path, help="also write every figure as JSON here")
    args = p.parse_args(argv)
    if args.images < 8 or args.repeat < 1:
        p.error("--images must be at least 8 and --repeat at least 1")
    keys = {k for k, _, _ in FIGURES}
    args.only = set(args.only.split(",")) if args.only else keys
    if args.only - keys:
        p.error(f"unknown figure(s) {', '.join(sorted(args.only - keys))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"  # loopback never goes through a proxy
    if args.workdir is not None:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)  # --workdir /tmp/new-folder is a request, not an error
    work = Path(tempfile.mkdtemp(prefix="kaokore-commands-", dir=args.workdir))
    bytecode(env, work)
    print(f"kaokore command benchmark: {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; working in {work}", file=sys.stderr)
    figures = {k: Figure(k, what, target) for k, what, target in FIGURES}
    busy0, t0 = _busy_seconds(), time.monotonic()
    srv = WatchedIIIF(hosts=3)
    bench = Bench(srv, work, env)
    profiles = {}
    try:
        meta_dir = work / "metadata"
        if args.dir is not None or args.metadata_dir is not None:
            from kaokore.dataset.metadata import read_local

            source = read_local(args.metadata_dir or args.dir)
            files = loopback_files(source, srv)
        else:
            files = synthetic_files(args.images, srv)
        write_files(meta_dir, files)
        tree = work / "tree"
        started = time.monotonic()
        count = build_tree(tree, meta_dir)
        # kaokore finishes the tree: kaokore.json, the metadata copies, attributes.csv, the card...
        bench.whole(bench.kaokore("download", "--dir", str(tree), "--metadata-dir", str(meta_dir),
                                  "--dataset_version", "1.3", "--quiet"))
        check = bench.whole(bench.kaokore("verify", "--dir", str(tree)))
        print(f"built a tree of {count:,} images in {time.monotonic() - started:.1f} s; "
              f"`kaokore verify` calls it intact (exit status {check.status})", file=sys.stderr)
        images = image_rels(tree)
        offline = args.dir or tree
        rerun_args = ["download", "--dir", str(offline), "--quiet"]
        if args.dir is None:
            rerun_args += ["--metadata-dir", str(meta_dir)]
        elif _state(args.dir).get("metadata_pinned") is False:
            rerun_args += ["--metadata-dir", str(args.dir)]  # its own copies: no pin to fetch them by
        commands = {
            "rerun": bench.kaokore(*rerun_args),
            "verify": bench.kaokore("verify", "--dir", str(offline)),
            "verify_deep": bench.kaokore("verify", "--deep", "--dir", str(offline)),
            "info": bench.kaokore("info", "--dir", str(offline)),
            "import": [sys.executable, "-c", "import kaokore.cli"],
        }
        deep = has_deep(bench)
        if not deep:
            figures["verify_deep"].note = "this kaokore has no --deep (plain verify decodes every image)"
        for round_ in range(args.repeat):
            # Interleaved, so that a slow minute of the machine spreads over every figure.
            if "first_request" in args.only:
                figures["first_request"].samples.append(measure_first_request(bench, meta_dir, "1.3"))
            if "end_of_run" in args.only:
                missing = min(MISSING, count // 4)
                figures["end_of_run"].samples.append(
                    measure_end_of_run(bench, tree, meta_dir, images, missing, round_))
            for key, argv_ in commands.items():
                if key not in args.only or (key == "verify_deep" and not deep):
                    continue
                sample = bench.whole(argv_)
                if key == "rerun" and args.dir is None and sample.requests:
                    raise RuntimeError(f"the no-op rerun made {sample.requests} requests")
                figures[key].samples.append(sample)
        if args.profile_dir:
            args.profile_dir.mkdir(parents=True, exist_ok=True)
            profiled = dict(commands, first_request=bench.kaokore(
                "download", "--dir", str(work / "fresh-profile"), "--metadata-dir", str(meta_dir),
                "--dataset_version", "1.3", "--quiet", "--limit", "1"),
                end_of_run=bench.kaokore("download", "--dir", str(tree), "--metadata-dir", str(meta_dir), "--quiet"))
            profiled.pop("import")
            if not deep:
                profiled.pop("verify_deep")
            for key, argv_ in profiled.items():
                if key in args.only:
                    if key == "end_of_run":  # the whole run: the part after its last response is at the end
                        step = max(len(images) // MISSING, 1)
                        for rel in images[(args.repeat + 1) % step:: step][:MISSING]:
                            (tree / rel).unlink()
                    profiles[key] = profile(bench, argv_, args.profile_dir / key)
    finally:
        bench.close()
        srv.stop()
    busy1, t1 = _busy_seconds(), time.monotonic()

    ordered = [figures[k] for k, _, _ in FIGURES]
    indicative = args.dir is None and args.metadata_dir is None and args.images != IMAGES_1_3
    checks = verdicts(ordered, indicative)
    command = "python benchmarks/commands.py " + " ".join(sys.argv[1:] if argv is None else argv)
    load = (f"machine busy {100 * (busy1 - busy0) / (t1 - t0) / (os.cpu_count() or 1):.0f}% of "
            f"{os.cpu_count()} CPUs meanwhile" if busy0 is not None else "")
    print(f"\n$ {command.strip()}\n{count:,} images; {args.repeat} run(s) each, medians; {load}\n")
    print(format_table(ordered))
    eor = figures["end_of_run"].samples
    if eor:
        print(f"\n(end of run: the download of {eor[0].requests} images took "
              f"{statistics.median(s.extra['whole_run_s'] for s in eor):.2f} s in all; its first request came "
              f"{statistics.median(s.extra['first_request_resuming_s'] for s in eor):.2f} s after the start, "
              "having checked every image already there)")
    print("\nTargets (issue 21; 2 cores, 9,683 images):")
    print(format_checks(checks))
    for key, path in profiles.items():
        print(f"profile of {key}: {path}")
    if args.json_out:
        import kaokore

        doc = {
            "command": command.strip(), "images": count, "repeat": args.repeat, "workdir": str(work),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "busy_cpu_s": None if busy0 is None else busy1 - busy0,
                        "elapsed_s": t1 - t0},
            "kaokore": kaokore.__version__,
            "figures": [f.to_json() for f in ordered],
            "targets": checks,
        }
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(doc, indent=2) + "\n")
    if args.keep:
        print(f"\nthe tree: {work / 'tree'} (metadata: {work / 'metadata'})")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def bytecode(env: dict, work: Path) -> None:
    """Let the commands keep kaokore's compiled modules, in `work`: an installed kaokore has them
    (pip compiles them), and compiling ~30 modules again on every start costs ~50 ms of CPU that
    no user pays. PYTHONDONTWRITEBYTECODE would otherwise have every run compile them."""
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")


def _state(root: Path) -> dict:
    try:
        return json.loads((root / "kaokore.json").read_text())
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    sys.exit(main())
