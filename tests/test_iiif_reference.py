"""Integration against an IIIF server nobody on this project wrote: the IIIF Image API
reference implementation (`iiif` on PyPI, its `iiif_testserver.py`, Pillow manipulator).

It runs on loopback over a folder of generated source pages, and `kaokore download`
fetches crops in the URL shapes KaoKore's urls.txt uses (`256,`, `256,256`,
`!200,200`). Whatever that server renders must land on disk as 256x256 RGB JPEGs,
and what is already one must be stored byte for byte.
"""
from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from PIL import Image, ImageDraw

from helpers import image_files, jpeg_info, run_cli
from synthetic import default_label, metadata_files, write_files

from kaokore.errors import EXIT_OK

pytest.importorskip("iiif", reason="the IIIF reference implementation (`iiif`, test extra) is not installed")
pytest.importorskip("flask", reason="`iiif`'s test server needs Flask")

API_PREFIX = "2.1_pil"  # iiif_testserver: one prefix per API version and manipulator
PAGE_SIZE = (1200, 1600)
# Identifier -> (mode, file format); the server finds `{identifier}.{jpg,png,tif}` in --image-dir.
SOURCES = {
    "scroll-rgb": ("RGB", "JPEG"),
    "album-gray": ("L", "PNG"),
    "book-rgb": ("RGB", "TIFF"),
    "print-gray": ("L", "JPEG"),
}
SIZES = ("256,", "256,256", "!200,200")
STARTUP_DEADLINE = 30.0
PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    for name in PROXY_ENV:  # the server is on loopback; a CI proxy must not be asked for it
        monkeypatch.delenv(name, raising=False)


def find_testserver() -> Path | None:
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        script = folder / "iiif_testserver.py"
        if script.is_file():
            return script
    return None


def make_page(mode: str, seed: int) -> Image.Image:
    """A page with detail everywhere, so neighbouring crops differ."""
    width, height = PAGE_SIZE
    page = Image.merge("RGB", (
        Image.linear_gradient("L").resize(PAGE_SIZE),
        Image.linear_gradient("L").rotate(90).resize(PAGE_SIZE),
        Image.effect_noise(PAGE_SIZE, 40 + seed).point(lambda v: (v + 37 * seed) % 256),
    ))
    draw = ImageDraw.Draw(page)
    for i in range(0, width, 97):
        draw.ellipse((i, (i * 7 + seed * 131) % height, i + 80, (i * 7 + seed * 131) % height + 110),
                     fill=((i * 3) % 256, (seed * 60) % 256, (255 - i) % 256))
    return page.convert(mode)


@dataclass
class ReferenceServer:
    base: str  # http://127.0.0.1:PORT/2.1_pil
    log_path: Path

    def url(self, identifier: str, region: str, size: str) -> str:
        return f"{self.base}/{identifier}/{region}/{size}/0/default.jpg"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(script: Path, image_dir: Path, workdir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}/{API_PREFIX}"
    # cwd: the script writes iiif_testserver.pid and reads iiif_testserver.cfg there.
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), "--host", "127.0.0.1", "--port", str(port),
             "--image-dir", str(image_dir), "--api-versions", "2.1", "--manipulators", "pil"],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    return proc, base


def _wait_ready(proc: subprocess.Popen, probe: str) -> bool:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if requests.get(probe, timeout=2, proxies={"http": None}).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def reference_server(tmp_path_factory):
    script = find_testserver()
    if script is None:
        pytest.skip(f"iiif_testserver.py (from `iiif`) not found next to {sys.executable}")
    workdir = tmp_path_factory.mktemp("iiif-reference")
    image_dir = workdir / "images"
    image_dir.mkdir()
    suffix = {"JPEG": "jpg", "PNG": "png", "TIFF": "tif"}
    for seed, (identifier, (mode, fmt)) in enumerate(SOURCES.items(), start=1):
        make_page(mode, seed).save(image_dir / f"{identifier}.{suffix[fmt]}", fmt)
    log_path = workdir / "server.log"
    probe_id = next(iter(SOURCES))
    for _ in range(3):
        proc, base = _start(script, image_dir, workdir, log_path)
        try:
            if _wait_ready(proc, f"{base}/{probe_id}/info.json"):
                yield ReferenceServer(base, log_path)
                return
            if proc.poll() is None:
                break  # alive but not answering: another try would not do better
            # Exited: most likely another process took the free port first; try another.
        finally:
            _stop(proc)
    pytest.fail(f"iiif_testserver.py did not come up within {STARTUP_DEADLINE:g}s:\n"
                + log_path.read_text(errors="replace")[-4000:])


@pytest.fixture
def ref(reference_server):
    """The server, with its log shown only when a test fails (it warns about being a dev server)."""
    yield reference_server
    print(f"--- iiif_testserver.py log ---\n{reference_server.log()[-8000:]}")


@dataclass
class Case:
    index: int
    identifier: str
    region: str
    size: str
    url: str

    @property
    def name(self) -> str:
        return f"{self.index:08d}.jpg"

    @property
    def rgb_source(self) -> bool:
        return SOURCES[self.identifier][0] == "RGB"


def write_metadata(folder: Path, urls: list[str | None]) -> dict[int, tuple[str, int, int]]:
    """The five metadata files, in upstream's shapes, for these URL lines (every image labelled)."""
    labels = {i: default_label(i) for i, url in enumerate(urls) if url}
    write_files(folder, metadata_files(urls, labels))
    return labels


def make_cases(server: ReferenceServer) -> list[Case]:
    """Every source in every size shape, on square face-sized regions all over the page,
    plus one `256,` crop of a tall region (the server then answers 256x384)."""
    cases = []
    for n, (identifier, size) in enumerate((i, s) for i in SOURCES for s in SIZES):
        x, y = 37 + 61 * n, 53 + 97 * n
        region = f"{x},{y},{300 + 10 * n},{300 + 10 * n}"
        cases.append(Case(n, identifier, region, size, server.url(identifier, region, size)))
    tall = (len(cases), "scroll-rgb", "400,500,200,300", "256,")
    cases.append(Case(*tall, server.url(*tall[1:])))
    return cases


def test_reference_server_crops_become_256_rgb_jpegs(ref, tmp_path, capsys):
    cases = make_cases(ref)
    write_metadata(tmp_path / "metadata", [c.url for c in cases])
    out = tmp_path / "data"
    code, _, err = run_cli(capsys, "download", "--dir", str(out), "--metadata-dir", str(tmp_path / "metadata"),
                           "--layout", "flat", "--threads", "4", "--quiet")
    assert code == EXIT_OK, err
    files = image_files(out)
    assert sorted(files) == sorted(c.name for c in cases)
    for path in files.values():
        assert jpeg_info(path) == ("JPEG", (256, 256), "RGB"), path
    with open(out / "manifest.csv", newline="", encoding="utf-8") as f:
        manifest = {row["image"]: row for row in csv.DictReader(f)}

    kept = []
    for case in cases:
        row = manifest[case.name]
        source = (int(row["source_width"]), int(row["source_height"]))
        if case.size == "!200,200":
            assert (row["converted"], source) == ("true", (200, 200)), row
        elif case.region == "400,500,200,300":
            assert (row["converted"], source) == ("true", (256, 384)), row
        else:
            assert source == (256, 256), row
        if not case.rgb_source:
            # The server keeps grayscale pages grayscale; kaokore makes them RGB.
            assert (row["source_mode"], row["converted"]) == ("L", "true"), row
        elif case.size in ("256,", "256,256") and source == (256, 256):
            # Already a 256x256 RGB JPEG: stored exactly as the server sent it.
            assert row["converted"] == "false", row
            served = requests.get(case.url, timeout=30)
            assert served.status_code == 200
            assert files[case.name].read_bytes() == served.content, case
            kept.append(case.size)
    # `256,` and `256,256` of both RGB pages were compared byte for byte.
    assert sorted(kept) == ["256,", "256,", "256,256", "256,256"]
