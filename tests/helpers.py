"""Helpers the tests share: synthetic KaoKore metadata served by FakeIIIF, and small readers.

A plain module (pytest puts tests/ on sys.path, see pyproject.toml), so test files
import from here rather than from conftest, which holds only fixtures and hooks.
"""
from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from iiif_server import FakeIIIF
from synthetic import default_label, metadata_files, write_files

from kaokore.dataset.versions import METADATA_FILES, Version


@dataclass
class Synthetic:
    """A small dataset in the real files' shapes, served by a FakeIIIF."""

    files: dict[str, bytes]
    urls: dict[int, str]  # image index -> URL
    labels: dict[int, tuple[str, int, int]]  # image index -> (split, gender, status)
    meta_dir: Path
    extra: dict = field(default_factory=dict)

    def version(self, name: str = "1.0", folder: str = "dataset") -> Version:
        return pinned_version(name, folder, len(self.urls), self.files)

    def name(self, index: int) -> str:
        return f"{index:08d}.jpg"

    def rewrite(self, filename: str, data: bytes) -> None:
        self.files[filename] = data
        (self.meta_dir / filename).write_bytes(data)


def pinned_version(name: str, folder: str, images: int, files: dict[str, bytes]) -> Version:
    """A registry entry that pins exactly these metadata files, as versions.py pins upstream's."""
    digests = {n: hashlib.sha256(files[n]).hexdigest() for n in METADATA_FILES}
    return Version(name, folder, images, MappingProxyType(digests))


def make_synthetic(srv: FakeIIIF, root: Path, n: int = 24, *, blank: tuple[int, ...] = (5,),
                   unlabeled: tuple[int, ...] = (3, 7), labeled_blank: tuple[int, ...] = (),
                   size: str = "256,256", sizes: dict[int, str] | None = None) -> Synthetic:
    """n URL lines spread round-robin over the hosts; `blank` lines empty; `unlabeled` without a label row."""
    sizes = sizes or {}
    lines, urls, labels = [], {}, {}
    hosts = len(srv.base_urls)
    for i in range(n):
        if i in blank or i in labeled_blank:
            lines.append("")
        else:
            url = srv.url(i % hosts, f"book{i % hosts}/page{i // 5}.tif",
                          region=f"{10 * i},{20 + i},300,300", size=sizes.get(i, size))
            urls[i] = url
            lines.append(url)
        if i not in unlabeled and i not in blank:
            labels[i] = default_label(i)
    files = metadata_files(lines, labels)
    meta_dir = root / "metadata"
    write_files(meta_dir, files)
    for name, data in files.items():
        srv.set_file(f"/meta/dataset/{name}", data)
    return Synthetic(files, urls, labels, meta_dir)


def one_bad_page(srv: FakeIIIF, root: Path, page: str, fault, bad=range(40, 70), n: int = 120) -> Synthetic:
    """n faces on host 0, each from a page of its own but for those in `bad`, which are all cut
    from `page`, and every crop of `page` answers with `fault`."""
    synth = make_synthetic(srv, root, n=n, blank=(), unlabeled=())
    urls = {}
    for i in range(n):
        urls[i] = srv.url(0, page if i in bad else f"book0/page{i}.tif", region=f"{10 * i},{20 + i},300,300")
        if i in bad:
            srv.inject(urls[i], fault)
    synth.urls = urls
    synth.rewrite("urls.txt", "".join(f"{urls[i]}\n" for i in range(n)).encode())
    return synth


def _csv_rows(path: Path) -> list[dict]:
    """The rows of one of DIR's CSV reports; none when the file is absent (a run with nothing to report)."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def manifest(root: Path) -> dict[str, dict]:
    """DIR's manifest.csv, by image name."""
    return {row["image"]: row for row in _csv_rows(root / "manifest.csv")}


def failure_rows(root: Path) -> list[dict]:
    """DIR's failures.csv, in its order."""
    return _csv_rows(root / "failures.csv")


def failures(root: Path) -> dict[str, dict]:
    """DIR's failures.csv, by image name."""
    return {row["image"]: row for row in failure_rows(root)}


def failure_errors(root: Path) -> dict[str, str]:
    """What failures.csv says went wrong with each image."""
    return {row["image"]: row["error"] for row in failure_rows(root)}


def jpeg_info(path: Path) -> tuple[str, tuple[int, int], str]:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im.format, im.size, im.mode


def image_files(root: Path) -> dict[str, Path]:
    """Every image under DIR by file name (bookkeeping at the root is not an image)."""
    return {p.name: p for p in root.rglob("*.jpg") if p.parent != root}


def fingerprint_by_hand(root: Path) -> str:
    """The dataset fingerprint from its definition (the dataset card, kaokore/fingerprint.py), with
    hashlib and the files on disk: SHA-256 of the lines `<image sha256>  <image name>`, sorted by name."""
    lines = "".join(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}\n"
                    for name, path in sorted(image_files(root).items()))
    return "sha256:" + hashlib.sha256(lines.encode("utf-8")).hexdigest()


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from kaokore.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def encode(image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


# The skip reason of a test that needs PyTorch or TensorFlow; conftest.py lets exactly these skip
# under KAOKORE_TESTS_REQUIRE_ALL=but-frameworks (the fresh-Python check, which installs neither).
FRAMEWORK_ABSENT = "is not installed, so this framework test skips"


def framework(name: str):
    """Import torch or tensorflow, or skip the test saying why and where to read how to run it."""
    import pytest

    return pytest.importorskip(name, reason=f"{name} {FRAMEWORK_ABSENT} "
                                            "(README.md, Development: how to run the framework tests)")
