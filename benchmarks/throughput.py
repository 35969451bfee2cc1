#!/usr/bin/env python3
"""Throughput of `kaokore.download` against the ideal bound set by the servers.

Runs the loopback IIIF server (tests/iiif_server.py) with a chosen render time,
round trip and per-host capacity, downloads synthetic metadata through the
public API, and compares the wall time with the ideal makespan, the largest of

    max over hosts h of ceil(n_h / per_host) * (server_time + rtt)   our politeness
    max over hosts h of ceil(n_h / capacity) * server_time + rtt     the server's workers
    ceil(n / threads) * (server_time + rtt)                          our threads

(in the target configuration, just the issue's first line).  It counts only what
the servers force: the first TCP handshake, the client's CPU, idle workers,
progress and bookkeeping are all waste on top.

Every run uses two fresh processes (multiprocessing "spawn"): one for the server,
one for the client, which calls `kaokore.download(...)`.  So the client's CPU
time and peak RSS are the client's alone, and one run's memory high-water mark
does not leak into the next.

    python benchmarks/throughput.py                 # the target configuration; checks the targets
    python benchmarks/throughput.py --floor         # plus a bare http.client reference client
    python benchmarks/throughput.py --whole-process # `kaokore download` vs a bare requests client, start to exit
    python benchmarks/throughput.py --sweep         # vary --per-host and --threads
    python benchmarks/throughput.py --repeat 3 --json-out bench.json

Not a timed test: the suite runs it once, tiny, to prove it works
(tests/test_benchmark.py).  The figures depend on the machine and on whatever
else runs on it.  The table says how noisy a run was: "other CPU s" is CPU that
other processes used meanwhile, "calib ms" the CPU of a fixed workload just
before the run, "file create ms" what creating one file costs where the images
go (by default tmpfs, so that the disk's state is left out; see --workdir).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS_DIR))  # the test server and the synthetic metadata live with the tests
sys.path.insert(0, str(TESTS_DIR.parent / "benchmarks"))  # the tables, also when this file is loaded by path
from tables import markdown_table  # noqa: E402

from synthetic import default_label, metadata_files, write_files  # noqa: E402

# The target configuration and targets (issue 6).
TARGET_CONFIG = dict(hosts=3, server_time=0.100, rtt=0.050, capacity=4, per_host=4, threads=12)
TARGET_EFFICIENCY = 0.90
TARGET_CPU_MS_PASS = 2.0
TARGET_CPU_MS_CONVERTED = 10.0
TARGET_RSS_MB = 150.0
TARGET_RSS_IMAGES = 10_000
TARGET_WHOLE_PROCESS_RATIO = 1.03  # issue 21: `kaokore download`, start to exit, against the bare client
ROOT = TESTS_DIR.parent

# IIIF size parameters: the server answers "256,256" with a 256x256 RGB JPEG,
# which kaokore keeps byte for byte; "!200,200" gives 200x200, which it must
# resize and re-encode.
MODES = {"pass": "256,256", "converted": "!200,200"}


@dataclass(frozen=True)
class RunSpec:
    label: str
    mode: str  # key of MODES
    images: int
    hosts: int
    server_time: float
    rtt: float
    capacity: int | None
    threads: int
    per_host: int
    progress: str  # "tty" (tqdm bar), "plain" (a line every 5 s, as in CI logs) or "quiet"
    client: str = "kaokore"  # or "floor": bare keep-alive http.client, no processing (see _floor_main)
    host_weights: tuple[int, ...] | None = None  # share of the images per host; None: equal

    def ideal(self, per_host_counts: list[int]) -> float:
        """The makespan the servers allow: the largest of three lower bounds.

        - our own politeness: at most per_host requests in flight to a host, and
          each takes at least server_time + rtt;
        - the server's workers: at most `capacity` renders at once, server_time
          each (the round trip does not occupy a worker);
        - our threads: at most `threads` requests in flight in all.

        With per_host <= capacity and threads >= hosts x per_host (the target
        configuration) this is the issue's max_h ceil(n_h / per_host) x (server_time + rtt).
        """
        per_request = self.server_time + self.rtt
        bounds = [math.ceil(sum(per_host_counts) / self.threads) * per_request]
        for n in per_host_counts:
            if n:
                bounds.append(math.ceil(n / self.per_host) * per_request)
                if self.capacity:
                    bounds.append(math.ceil(n / self.capacity) * self.server_time + self.rtt)
        return max(bounds)

    def is_target_config(self) -> bool:
        return self.host_weights is None and all(getattr(self, k) == v for k, v in TARGET_CONFIG.items())


@dataclass
class RunResult:
    spec: RunSpec
    downloaded: int = 0
    failed: int = 0
    converted: int = 0
    wall_s: float = 0.0
    images_per_s: float = 0.0
    ideal_s: float = 0.0
    efficiency: float = 0.0
    connections: int = 0
    connections_per_host: list[int] = field(default_factory=list)
    peak_concurrency_per_host: list[int] = field(default_factory=list)
    requests: int = 0
    client_cpu_s: float = 0.0
    client_user_s: float = 0.0
    client_sys_s: float = 0.0
    client_cpu_ms_per_image: float = 0.0
    client_peak_rss_mb: float = 0.0
    client_rss_before_mb: float = 0.0
    server_cpu_s: float = 0.0
    calibration_ms: float = 0.0  # CPU of a fixed workload in the client just before the run (calibrate)
    file_create_ms: float = 0.0  # CPU to create one file in the download folder (probe_file_creation)
    other_cpu_s: float | None = None  # CPU used by other processes on the machine during the run
    repeats_wall_s: list[float] = field(default_factory=list)
    repeats_cpu_ms_per_image: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["spec"] = asdict(self.spec)
        return doc


# --------------------------------------------------------------------------
# Server process
# --------------------------------------------------------------------------


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_split() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _server_main(conn, tests_dir: str, hosts: int, server_time: float, rtt: float, capacity: int | None) -> None:
    sys.path.insert(0, tests_dir)
    from iiif_server import FakeIIIF

    with FakeIIIF(hosts=hosts, server_time=server_time, rtt=rtt, capacity=capacity) as srv:
        conn.send(srv.base_urls)
        while True:
            command, *args = conn.recv()
            if command == "urls":
                conn.send([srv.url(*a) for a in args[0]])
            elif command == "reset":
                srv.reset_stats()
                conn.send(_cpu_seconds())
            elif command == "stats":
                peak = srv.peak_concurrency
                conns = srv.connections_opened
                conn.send({
                    "peak": [peak[i] for i in range(hosts)],
                    "connections": [conns[i] for i in range(hosts)],
                    "requests": srv.requests(),
                    "cpu": _cpu_seconds(),
                })
            elif command == "stop":
                break
    conn.send("stopped")


class ServerProcess:
    """A FakeIIIF in its own process, driven over a pipe."""

    def __init__(self, ctx, *, hosts: int, server_time: float, rtt: float, capacity: int | None):
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_server_main, args=(child, str(TESTS_DIR), hosts, server_time, rtt, capacity),
                                 name="throughput-server", daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(60):
            self.close()
            raise RuntimeError("the test server did not start within 60 s")
        self.base_urls = self._conn.recv()

    def call(self, *message):
        self._conn.send(message)
        return self._conn.recv()

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("stop",))
                if self._conn.poll(15):
                    self._conn.recv()
            except (OSError, EOFError):
                pass
            self._proc.join(15)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------
# Synthetic metadata
# --------------------------------------------------------------------------


def host_sequence(images: int, hosts: int, weights: tuple[int, ...] | None = None) -> list[int]:
    """The host of each image: shares proportional to `weights` (equal by default),
    each host's images spread evenly over the list, as in a real urls.txt."""
    weights = tuple(weights or (1,) * hosts)
    total = sum(weights)
    counts = [images * w // total for w in weights]
    by_remainder = sorted(range(hosts), key=lambda h: (-(images * weights[h] % total), h))
    for h in by_remainder[: images - sum(counts)]:
        counts[h] += 1
    return [h for _, h in sorted(((j + 0.5) / c, h) for h, c in enumerate(counts) for j in range(c))]


def url_requests(images: int, hosts: int, size: str, weights: tuple[int, ...] | None = None) -> list[tuple]:
    """Arguments for FakeIIIF.url, every identifier distinct (so every request is a
    fresh render, as on the real servers)."""
    return [(h, f"bench/host{h}/page{i:06d}.tif", f"{(i * 37) % 1600},{(i * 53) % 2600},300,300", size)
            for i, h in enumerate(host_sequence(images, hosts, weights))]


def write_metadata(folder: Path, urls: list[str]) -> dict[str, str]:
    """The five metadata files for `urls` (all labelled); returns their SHA-256s."""
    files = metadata_files(urls, {i: default_label(i) for i in range(len(urls))})
    write_files(folder, files)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


# --------------------------------------------------------------------------
# Client process
# --------------------------------------------------------------------------


class _FakeTTY(io.StringIO):
    """Makes kaokore draw its tqdm bar, as on a terminal, into memory."""

    def isatty(self) -> bool:
        return True


def _status_mb(field_name: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_mb() -> float:
    return _status_mb("VmRSS") or 0.0


def _peak_rss_mb() -> float:
    """This process's high-water RSS.  VmHWM rather than ru_maxrss: Linux carries
    ru_maxrss over from the parent across fork+exec, VmHWM belongs to this image."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _client_main(conn, spec_doc: dict, meta_dir: str, out_dir: str, digests: dict, profile_to: str | None) -> None:
    # Loopback traffic must never go through a developer's proxy.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    from types import MappingProxyType

    import kaokore
    from kaokore.dataset.versions import Version

    spec = RunSpec(**spec_doc)
    version = Version("bench", "dataset", spec.images, MappingProxyType(digests))
    stream = _FakeTTY() if spec.progress == "tty" else io.StringIO()
    profiler = None
    if profile_to:
        from pyinstrument import Profiler  # a dev tool: pip install pyinstrument

        profiler = Profiler(interval=0.001, async_mode="disabled")
    calibration = calibrate()
    conn.send("ready")
    conn.recv()  # "go"
    rss_before = _rss_mb()
    user0, sys0 = _cpu_split()
    t0 = time.perf_counter()
    if profiler:
        profiler.start()
    summary = kaokore.download(
        out_dir, dataset_version=version, layout="split", threads=spec.threads, per_host=spec.per_host,
        metadata_dir=meta_dir, quiet=spec.progress == "quiet", stream=stream,
    )
    if profiler:
        profiler.stop()
    wall = time.perf_counter() - t0
    user1, sys1 = _cpu_split()
    if profiler:
        Path(profile_to).write_text(profiler.output_text(unicode=True, color=False, show_all=False))
    conn.send({
        "downloaded": summary.downloaded, "failed": summary.failed, "converted": summary.converted,
        "wall": wall, "user": user1 - user0, "sys": sys1 - sys0, "rss_before_mb": rss_before,
        "calibration_ms": calibration,
        "peak_rss_mb": _peak_rss_mb(),
        "failures": [f"{f.image}: {f.error}" for f in summary.failures[:5]],
    })


def _floor_main(conn, spec_doc: dict, meta_dir: str, out_dir: str, digests: dict, profile_to: str | None) -> None:
    """The reference client: per_host keep-alive http.client connections to each
    host (whatever --threads says), each just reading bodies: no decoding, no
    files, no bookkeeping.  What it loses against the ideal is the harness's and
    the test server's own overhead (rendering, thread wake-ups, other load),
    which no client can win back; the gap between it and kaokore is what
    kaokore adds."""
    import http.client
    import threading
    from urllib.parse import urlsplit

    spec = RunSpec(**spec_doc)
    urls = [u for u in (Path(meta_dir) / "urls.txt").read_text().splitlines() if u]
    by_host: dict[str, list[str]] = {}
    for url in urls:
        parts = urlsplit(url)
        by_host.setdefault(parts.netloc, []).append(parts.path)
    lock = threading.Lock()
    done = [0]

    def worker(netloc: str, paths: list[str]) -> None:
        connection = http.client.HTTPConnection(netloc, timeout=30)
        while True:
            with lock:
                if not paths:
                    break
                path = paths.pop()
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            if response.status == 200 and body:
                with lock:
                    done[0] += 1
        connection.close()

    calibration = calibrate()
    conn.send("ready")
    conn.recv()
    rss_before = _rss_mb()
    user0, sys0 = _cpu_split()
    t0 = time.perf_counter()
    workers = [threading.Thread(target=worker, args=item) for item in by_host.items() for _ in range(spec.per_host)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    user1, sys1 = _cpu_split()
    conn.send({
        "downloaded": done[0], "failed": len(urls) - done[0], "converted": 0, "wall": wall,
        "user": user1 - user0, "sys": sys1 - sys0, "rss_before_mb": rss_before, "calibration_ms": calibration,
        "peak_rss_mb": _peak_rss_mb(),
        "failures": [],
    })


def calibrate() -> float:
    """CPU ms of a fixed single-threaded workload (Python bytecode, hashing, a JPEG
    decode): when it is high, the machine (or the VM's host) was slow at that
    moment and every CPU figure of the run is inflated alike."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (120, 80, 40)).save(buf, "JPEG")
    data = buf.getvalue()
    start = time.thread_time()
    total = 0
    for i in range(300_000):
        total += i % 7
    for _ in range(150):
        hashlib.sha256(data * 8).digest()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    return 1000 * (time.thread_time() - start)


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux), to spot other load."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def probe_file_creation(folder: Path, files: int = 200) -> float:
    """Kernel+user CPU ms to create one small file the way kaokore stores an image
    (temporary name, write, rename).  On ext4 with heavy create/delete churn (test
    suites, earlier runs) inode allocation alone can cost ~0.5-1 ms per file; this
    makes that visible instead of blaming the client.  The files are left in place
    (deleting them now would make the next creations slower still)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = bytes(12_000)
    cpu0 = _cpu_seconds()
    for i in range(files):
        tmp = folder / f".probe{i}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, folder / f"probe{i}.jpg")
    return 1000 * (_cpu_seconds() - cpu0) / files


def run_once(ctx, spec: RunSpec, workdir: Path, profile_to: str | None = None) -> RunResult:
    with ServerProcess(ctx, hosts=spec.hosts, server_time=spec.server_time, rtt=spec.rtt,
                       capacity=spec.capacity) as server:
        requests = url_requests(spec.images, spec.hosts, MODES[spec.mode], spec.host_weights)
        urls = server.call("urls", requests)
        # Left in place until all runs are done: see probe_file_creation.
        run_dir = Path(tempfile.mkdtemp(prefix=f"{spec.label}-", dir=workdir))
        fs_ms = probe_file_creation(run_dir / "probe")
        digests = write_metadata(run_dir / "metadata", urls)
        conn, child = ctx.Pipe()
        client = ctx.Process(target=_floor_main if spec.client == "floor" else _client_main, name="throughput-client",
                             args=(child, asdict(spec), str(run_dir / "metadata"), str(run_dir / "data"),
                                   digests, profile_to))
        client.start()
        child.close()
        try:
            conn.recv()  # "ready": imports done, nothing timed yet
            server_cpu0 = server.call("reset")
            busy0 = _machine_busy_seconds()
            conn.send("go")
            got = conn.recv()
        except EOFError:
            client.join()
            raise RuntimeError(f"client process died (exit code {client.exitcode})") from None
        busy1 = _machine_busy_seconds()
        got["cpu"] = got["user"] + got["sys"]
        client.join(30)
        stats = server.call("stats")

    per_host_counts = [sum(1 for r in requests if r[0] == h) for h in range(spec.hosts)]
    result = RunResult(spec=spec)
    result.downloaded, result.failed, result.converted = got["downloaded"], got["failed"], got["converted"]
    result.wall_s = got["wall"]
    result.images_per_s = got["downloaded"] / got["wall"] if got["wall"] > 0 else 0.0
    result.ideal_s = spec.ideal(per_host_counts)
    result.efficiency = result.ideal_s / got["wall"] if got["wall"] > 0 else 0.0  # 0 when ideal is 0
    result.connections_per_host = stats["connections"]
    result.connections = sum(stats["connections"])
    result.peak_concurrency_per_host = stats["peak"]
    result.requests = stats["requests"]
    result.client_cpu_s = got["cpu"]
    result.client_user_s, result.client_sys_s = got["user"], got["sys"]
    result.client_cpu_ms_per_image = 1000 * got["cpu"] / max(spec.images, 1)
    result.client_peak_rss_mb = got["peak_rss_mb"]
    result.client_rss_before_mb = got["rss_before_mb"]
    result.server_cpu_s = stats["cpu"] - server_cpu0
    result.file_create_ms = fs_ms
    result.calibration_ms = got["calibration_ms"]
    if busy0 is not None and busy1 is not None:
        result.other_cpu_s = max(0.0, (busy1 - busy0) - got["cpu"] - result.server_cpu_s)
    if got["failures"]:
        print(f"  {spec.label}: {got['failed']} failed, e.g. {got['failures'][0]}", file=sys.stderr)
    return result


def run(ctx, spec: RunSpec, workdir: Path, repeat: int, profile_dir: Path | None) -> RunResult:
    """`repeat` runs of `spec`; the one with the median wall time is reported (all its
    figures, so they stay consistent), with every run's wall and CPU alongside."""
    results = []
    for i in range(repeat):
        profile_to = str(profile_dir / f"{spec.label}-{i}.txt") if profile_dir else None
        results.append(run_once(ctx, spec, workdir, profile_to))
        last = results[-1]
        eff = f" (efficiency {last.efficiency:.3f})" if last.ideal_s else ""
        print(f"  {spec.label}: {last.wall_s:.2f}s{eff}, {last.client_cpu_ms_per_image:.2f} ms CPU per image",
              file=sys.stderr)
    results.sort(key=lambda r: r.wall_s)
    chosen = results[(len(results) - 1) // 2]
    chosen.repeats_wall_s = [round(r.wall_s, 3) for r in results]
    chosen.repeats_cpu_ms_per_image = [round(r.client_cpu_ms_per_image, 3) for r in results]
    return chosen


# --------------------------------------------------------------------------
# Whole processes: `kaokore download` against a bare requests client
# --------------------------------------------------------------------------


def bare_client(urls_file: str, per_host: int) -> int:
    """The reference client of the whole-process comparison, run as its own process: `per_host`
    keep-alive `requests` sessions per host, each fetching its share of urls.txt and storing
    nothing. Its wall time from start to exit is what any requests-based client pays: the
    interpreter, `import requests`, the servers' time, and no bookkeeping at all."""
    import threading
    from collections import defaultdict
    from urllib.parse import urlsplit

    import requests

    by_host: dict[str, list[str]] = defaultdict(list)
    for url in Path(urls_file).read_text().split("\n"):
        if url.strip():
            by_host[urlsplit(url).netloc].append(url.strip())
    done, lock = [0], threading.Lock()

    def worker(urls: list[str]) -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if not urls:
                        return
                    url = urls.pop()
                response = session.get(url, timeout=30)
                if response.status_code == 200 and response.content:
                    with lock:
                        done[0] += 1

    workers = [threading.Thread(target=worker, args=(urls,)) for urls in by_host.values() for _ in range(per_host)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    total = sum(1 for url in Path(urls_file).read_text().split("\n") if url.strip())
    print(json.dumps({"downloaded": done[0], "failed": total - done[0]}))
    return 0 if done[0] == total else 1


@dataclass
class WholeProcess:
    """Pairs of whole-process runs on the same servers: kaokore's CLI, then the bare client (or the other way)."""

    spec: RunSpec
    kaokore_wall_s: list[float] = field(default_factory=list)
    bare_wall_s: list[float] = field(default_factory=list)
    kaokore_cpu_s: list[float] = field(default_factory=list)
    bare_cpu_s: list[float] = field(default_factory=list)
    kaokore_rss_mb: list[float] = field(default_factory=list)
    bare_rss_mb: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(self, name))

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["spec"] = asdict(self.spec)
        doc["ratio_median"] = self.median("ratios")
        return doc


def run_whole_process(ctx, spec: RunSpec, workdir: Path, repeat: int) -> WholeProcess:
    """`repeat` pairs, each on a fresh server with URLs of its own (so every request is a fresh
    render), the order alternating so that neither client always runs first."""
    from commands import Launcher, bytecode  # the launcher keeps each child's peak RSS its own

    result = WholeProcess(spec=spec)
    env = dict(os.environ, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    bytecode(env, workdir)  # kaokore's modules compiled once, as installed, like requests' own
    launcher = Launcher()
    try:
        for n in range(repeat):
            walls = {}
            with ServerProcess(ctx, hosts=spec.hosts, server_time=spec.server_time, rtt=spec.rtt,
                               capacity=spec.capacity) as server:
                run_dir = Path(tempfile.mkdtemp(prefix=f"whole-{n}-", dir=workdir))
                order = ("kaokore", "bare") if n % 2 == 0 else ("bare", "kaokore")
                for client in order:
                    asked = [(h, f"{client}{n}/{ident}", region, size) for h, ident, region, size in
                             url_requests(spec.images, spec.hosts, MODES[spec.mode], spec.host_weights)]
                    urls = server.call("urls", asked)
                    meta = run_dir / f"{client}-metadata"
                    write_metadata(meta, urls)
                    if client == "kaokore":
                        argv = [sys.executable, "-m", "kaokore", "download", "--dir", str(run_dir / "data"),
                                "--metadata-dir", str(meta), "--threads", str(spec.threads),
                                "--per-host", str(spec.per_host), "--quiet"]
                    else:
                        argv = [sys.executable, str(Path(__file__).resolve()), "--bare-client", str(meta / "urls.txt"),
                                "--per-host", str(spec.per_host)]
                    launcher.start(argv, env, run_dir / f"{client}.log")
                    got = launcher.wait()
                    if got["status"] != 0:
                        raise RuntimeError(f"{client} exited with {got['status']}: "
                                           f"{(run_dir / f'{client}.log').read_text()[-1000:]}")
                    walls[client] = got["end"] - got["start"]
                    getattr(result, f"{client}_wall_s").append(round(walls[client], 3))
                    getattr(result, f"{client}_cpu_s").append(round(got["user"] + got["sys"], 3))
                    getattr(result, f"{client}_rss_mb").append(round(got["maxrss_kb"] / 1024, 1))
            result.ratios.append(round(walls["kaokore"] / walls["bare"], 4))
            print(f"  whole process {n + 1}/{repeat}: kaokore {walls['kaokore']:.2f} s, bare {walls['bare']:.2f} s, "
                  f"ratio {result.ratios[-1]:.3f}", file=sys.stderr)
    finally:
        launcher.close()
    return result


def format_whole_process(w: WholeProcess) -> str:
    rows = [("client (whole process, start to exit)", "wall s", "CPU s", "peak RSS MB", "runs (wall s)"),
            ("kaokore download (the command line)", f"{w.median('kaokore_wall_s'):.2f}",
             f"{w.median('kaokore_cpu_s'):.2f}", f"{w.median('kaokore_rss_mb'):.0f}",
             " ".join(f"{v:.2f}" for v in w.kaokore_wall_s)),
            (f"bare requests client ({w.spec.per_host} sessions per host, stores nothing)",
             f"{w.median('bare_wall_s'):.2f}", f"{w.median('bare_cpu_s'):.2f}", f"{w.median('bare_rss_mb'):.0f}",
             " ".join(f"{v:.2f}" for v in w.bare_wall_s))]
    lines = markdown_table(rows, left=(0, 4))
    lines.append(f"ratio kaokore / bare, pair by pair: {' '.join(f'{r:.3f}' for r in w.ratios)} "
                 f"(median {w.median('ratios'):.3f})")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


COLUMNS = (
    ("run", "{r.spec.label}"),
    ("mode", "{r.spec.mode}"),
    ("images", "{r.spec.images}"),
    ("thr", "{r.spec.threads}"),
    ("per-host", "{r.spec.per_host}"),
    ("srv/rtt ms", "{srv_rtt}"),
    ("ok", "{r.downloaded}"),
    ("wall s", "{r.wall_s:.2f}"),
    ("img/s", "{r.images_per_s:.1f}"),
    ("ideal s", "{ideal}"),
    ("eff", "{eff}"),
    ("conns", "{r.connections}"),
    ("peak/host", "{peak}"),
    ("reqs", "{r.requests}"),
    ("CPU ms/img", "{r.client_cpu_ms_per_image:.2f}"),
    ("of which sys", "{sys_ms:.2f}"),
    ("peak RSS MB", "{r.client_peak_rss_mb:.0f}"),
    ("file create ms", "{r.file_create_ms:.2f}"),
    ("calib ms", "{r.calibration_ms:.0f}"),
    ("srv CPU s", "{r.server_cpu_s:.1f}"),
    ("other CPU s", "{other}"),
)


def format_table(results: list[RunResult]) -> str:
    rows = [[name for name, _ in COLUMNS]]
    for r in results:
        values = dict(
            r=r, srv_rtt=f"{r.spec.server_time * 1000:g}/{r.spec.rtt * 1000:g}",
            peak="/".join(map(str, r.peak_concurrency_per_host)),
            ideal=f"{r.ideal_s:.2f}" if r.ideal_s else "-",
            eff=f"{r.efficiency:.3f}" if r.ideal_s else "-",
            sys_ms=1000 * r.client_sys_s / max(r.spec.images, 1),
            other="-" if r.other_cpu_s is None else f"{r.other_cpu_s:.1f}",
        )
        rows.append([fmt.format(**values) for _, fmt in COLUMNS])
    return "\n".join(markdown_table(rows, left=(0, 1)))


def check_whole_process(w: WholeProcess) -> dict:
    ratio = w.median("ratios")
    return {"target": "whole process vs bare client", "run": "whole", "value": round(ratio, 4),
            "limit": TARGET_WHOLE_PROCESS_RATIO, "met": ratio <= TARGET_WHOLE_PROCESS_RATIO,
            "indicative_only": not w.spec.is_target_config() or w.spec.images < 900, "unit": ""}


def check_targets(results: list[RunResult]) -> list[dict]:
    checks = []

    def add(name: str, r: RunResult, value: float, limit: float, ok: bool, unit: str = "") -> None:
        if r.spec.label == "rss":  # the memory run is meant to have no server time and no rtt
            indicative = (r.spec.images < TARGET_RSS_IMAGES or not replace(
                r.spec, server_time=TARGET_CONFIG["server_time"], rtt=TARGET_CONFIG["rtt"]).is_target_config())
        else:
            indicative = not r.spec.is_target_config() or r.spec.images < 900
        checks.append({"target": name, "run": r.spec.label, "value": round(value, 4), "limit": limit,
                       "met": ok, "indicative_only": indicative, "unit": unit})

    for r in results:
        complete = r.downloaded == r.spec.images and r.failed == 0
        checks.append({"target": "all images downloaded", "run": r.spec.label, "value": r.downloaded,
                       "limit": r.spec.images, "met": complete, "indicative_only": False, "unit": ""})
        if r.spec.client == "floor":
            continue
        add("connections <= threads + hosts", r, r.connections, r.spec.threads + r.spec.hosts,
            r.connections <= r.spec.threads + r.spec.hosts)
        if r.spec.label == "rss":
            add("peak RSS", r, r.client_peak_rss_mb, TARGET_RSS_MB, r.client_peak_rss_mb <= TARGET_RSS_MB, " MB")
            continue
        add("efficiency", r, r.efficiency, TARGET_EFFICIENCY, r.efficiency >= TARGET_EFFICIENCY)
        limit = TARGET_CPU_MS_PASS if r.spec.mode == "pass" else TARGET_CPU_MS_CONVERTED
        add(f"CPU per {r.spec.mode} image", r, r.client_cpu_ms_per_image, limit,
            r.client_cpu_ms_per_image <= limit, " ms")
    return checks


def _num(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def format_checks(checks: list[dict]) -> str:
    lines = []
    for c in checks:
        verdict = "MET" if c["met"] else "NOT MET"
        relation = ">=" if c["target"] == "efficiency" else ("==" if c["target"] == "all images downloaded" else "<=")
        note = "  (indicative: not the target configuration/size)" if c["indicative_only"] else ""
        lines.append(f"  [{verdict:7}] {c['run']:<10} {c['target']}: {_num(c['value'])}{c['unit']} "
                     f"({relation} {_num(c['limit'])}{c['unit']}){note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def default_workdir(specs: list[RunSpec]) -> Path | None:
    """tmpfs when it has room: then the CPU figures are the client's own work and not
    the state of a disk (on a busy ext4, allocating the inode of each new file can
    cost more CPU than everything else kaokore does for the image).  None: the
    system's temporary folder."""
    shm = Path("/dev/shm")
    needed = 64 * 2**20 + sum(s.images for s in specs) * 64 * 1024
    try:
        stat = os.statvfs(shm)
    except OSError:
        return None
    if os.access(shm, os.W_OK) and stat.f_bavail * stat.f_frsize > needed:
        return shm
    return None


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers separated by commas")
    return values


def _capacity(text: str) -> int | None:
    return None if text.lower() in ("none", "0", "unlimited") else int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images", type=int, default=1000, help="images per timed run")
    p.add_argument("--hosts", type=int, default=TARGET_CONFIG["hosts"], help="IIIF servers, images spread evenly")
    p.add_argument("--server-time", type=float, default=TARGET_CONFIG["server_time"],
                   help="seconds each image render occupies a server slot")
    p.add_argument("--rtt", type=float, default=TARGET_CONFIG["rtt"],
                   help="round trip in seconds, charged per request and once per new connection")
    p.add_argument("--capacity", type=_capacity, default=TARGET_CONFIG["capacity"],
                   help="concurrent renders each server allows ('none': unlimited)")
    p.add_argument("--host-weights", type=_int_list,
                   help="uneven hosts, e.g. 6,3,1: the share of the images each host serves (sets --hosts)")
    p.add_argument("--threads", type=int, default=TARGET_CONFIG["threads"], help="kaokore's --threads")
    p.add_argument("--per-host", type=int, default=TARGET_CONFIG["per_host"], help="kaokore's --per-host")
    p.add_argument("--modes", default="pass,converted",
                   help="timed runs: 'pass' (256,256: kept byte for byte) and/or 'converted' (!200,200: re-encoded)")
    p.add_argument("--floor", action="store_true",
                   help="also time a bare http.client reference client (no decoding, no files): "
                        "what the test server and this machine allow any client")
    p.add_argument("--whole-process", action="store_true",
                   help="instead: time `kaokore download` and a bare requests client (per-host keep-alive sessions, "
                        "storing nothing) as whole processes, start to exit, in --repeat pairs; the target is "
                        f"a ratio <= {TARGET_WHOLE_PROCESS_RATIO}")
    p.add_argument("--bare-client", metavar="URLS", help=argparse.SUPPRESS)  # the bare client's own process
    p.add_argument("--rss-images", type=int, default=TARGET_RSS_IMAGES,
                   help="images of the memory run (server time and rtt 0); 0 skips it")
    p.add_argument("--progress", choices=("tty", "plain", "quiet"), default="tty",
                   help="what the client reports progress to: a tqdm bar (as on a terminal), plain lines, nothing")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per configuration; the one with the median wall time is reported")
    p.add_argument("--sweep", action="store_true",
                   help="instead: vary --per-host and --threads (pass-through images) and tabulate")
    p.add_argument("--sweep-per-host", type=_int_list, default=[1, 2, 4, 6, 8], help="--per-host values of --sweep")
    p.add_argument("--sweep-threads", type=_int_list, default=[6, 12, 24], help="--threads values of --sweep")
    p.add_argument("--json-out", type=Path, help="also write every figure as JSON here")
    p.add_argument("--profile-dir", type=Path,
                   help="write a pyinstrument profile of each client run's main thread here (start-up, "
                        "planning, bookkeeping; pip install pyinstrument). For the workers use "
                        "py-spy record --subprocesses -- python benchmarks/throughput.py ...")
    p.add_argument("--workdir", type=Path,
                   help="where the runs download to (default: /dev/shm when it has room, so that the "
                        "figures are the client's and not the disk's; else the temporary folder)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    args = p.parse_args(argv)
    if args.host_weights:
        args.hosts = len(args.host_weights)
        args.host_weights = tuple(args.host_weights)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in args.modes:
        if mode not in MODES:
            p.error(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    if args.images < 1 or args.hosts < 1 or args.threads < 1 or args.per_host < 1 or args.repeat < 1:
        p.error("--images, --hosts, --threads, --per-host and --repeat must be at least 1")
    return args


def build_specs(args: argparse.Namespace) -> list[RunSpec]:
    base = RunSpec(label="", mode="pass", images=args.images, hosts=args.hosts, server_time=args.server_time,
                   rtt=args.rtt, capacity=args.capacity, threads=args.threads, per_host=args.per_host,
                   progress=args.progress, host_weights=args.host_weights)
    if args.sweep:
        return [replace(base, label=f"sweep-p{p}-t{t}", per_host=p, threads=t)
                for p in args.sweep_per_host for t in args.sweep_threads]
    specs = [replace(base, label=mode, mode=mode) for mode in args.modes]
    if args.floor:
        specs.insert(0, replace(base, label="floor", client="floor"))
    if args.rss_images:
        specs.append(replace(base, label="rss", images=args.rss_images, server_time=0.0, rtt=0.0))
    return specs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_client:
        return bare_client(args.bare_client, args.per_host)
    ctx = mp.get_context("spawn")
    if args.whole_process:
        return main_whole_process(args, ctx, argv)
    specs = build_specs(args)
    if args.profile_dir:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir_parent = args.workdir or default_workdir(specs)
    print(f"kaokore throughput benchmark: {len(specs)} configuration(s) x {args.repeat}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"downloading under {workdir_parent or tempfile.gettempdir()}", file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory(prefix="kaokore-bench-", dir=workdir_parent) as workdir:
        for spec in specs:
            results.append(run(ctx, spec, Path(workdir), args.repeat, args.profile_dir))

    command = "python benchmarks/throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"\n$ {command.strip()}\n")
    print(format_table(results))
    checks = [] if args.sweep else check_targets(results)
    if checks:
        print("\nTargets (issue 6; target configuration: 3 hosts, 100 ms server time, 50 ms rtt, "
              "capacity 4, per-host 4, 12 threads, ~1,000 images; RSS for 10,000 images at 0/0):")
        print(format_checks(checks))
    if args.json_out:
        import kaokore

        doc = {
            "command": command.strip(),
            "workdir": str(workdir_parent or tempfile.gettempdir()),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "kaokore": kaokore.__version__,
            "runs": [r.to_json() for r in results],
            "targets": checks,
        }
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(doc, indent=2) + "\n")
    missed = [c for c in checks if not c["met"] and not c["indicative_only"]]
    return 1 if args.strict and missed else 0


def main_whole_process(args: argparse.Namespace, ctx, argv: list[str] | None) -> int:
    spec = RunSpec(label="whole", mode=args.modes[0], images=args.images, hosts=args.hosts,
                   server_time=args.server_time, rtt=args.rtt, capacity=args.capacity, threads=args.threads,
                   per_host=args.per_host, progress="quiet", host_weights=args.host_weights)
    workdir_parent = args.workdir or default_workdir([spec])
    print(f"kaokore whole-process benchmark: {args.repeat} pair(s); {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="kaokore-bench-", dir=workdir_parent) as workdir:
        whole = run_whole_process(ctx, spec, Path(workdir), args.repeat)
    command = "python benchmarks/throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"\n$ {command.strip()}\n")
    print(format_whole_process(whole))
    checks = [check_whole_process(whole)]
    print("\nTargets (issue 21; target configuration: 3 hosts, 100 ms server time, 50 ms rtt, capacity 4, "
          "per-host 4, 12 threads, ~1,000 images):")
    print(format_checks(checks))
    if args.json_out:
        import kaokore

        doc = {"command": command.strip(), "kaokore": kaokore.__version__,
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()},
               "whole_process": whole.to_json(), "targets": checks}
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(doc, indent=2) + "\n")
    return 1 if args.strict and not checks[0]["met"] and not checks[0]["indicative_only"] else 0


if __name__ == "__main__":
    sys.exit(main())
