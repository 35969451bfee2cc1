"""Unit tests of planning: what is kept, moved, adopted, deleted and fetched, with no server.

Files are made on disk by hand; the URLs point nowhere, since planning makes no request.
"""
from __future__ import annotations

import hashlib
import io

from PIL import Image

from synthetic import default_label, metadata_files

from kaokore.dataset import metadata as md
from kaokore.dataset.layout import image_path
from kaokore.pipeline.plan import make_plan, select
from kaokore.storage.directory import inspect
from kaokore.storage.manifest import write_manifest
from kaokore.storage.records import ManifestRow

N = 8


def meta() -> md.Metadata:
    urls = [f"http://127.0.0.1:9/iiif/b/p{i}.tif/0,0,300,300/256,256/0/default.jpg" for i in range(N)]
    urls[5] = ""  # no URL upstream
    labels = {i: default_label(i) for i in range(N) if i != 3}
    return md.parse(metadata_files(urls, labels), pinned=True)


def jpeg(colour=(200, 30, 30), size=(256, 256), mode="RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 120).save(out, format="JPEG")
    return out.getvalue()


def put(root, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def row_for(m: md.Metadata, index: int, data: bytes, layout: str) -> ManifestRow:
    item = next(i for i in m.items if i.index == index)
    return ManifestRow(item.name, image_path(item, layout, m.classes), item.url, hashlib.sha256(data).hexdigest(),
                       len(data), 256, 256, "RGB", False, layout)


def test_an_empty_dir_fetches_every_selected_image_with_a_url(tmp_path):
    m = meta()
    plan = make_plan(inspect(tmp_path), m, "split", select(m.items))
    assert [item.index for item, _ in plan.fetch] == [0, 1, 2, 3, 4, 6, 7]
    assert plan.unavailable == 1 and plan.total == 7  # 5 is labelled but has no URL: nothing to fetch
    assert dict((i.index, rel) for i, rel in plan.fetch)[3] == "unlabeled/00000003.jpg"


def test_files_matching_their_rows_are_kept_and_moved_to_the_new_layout(tmp_path):
    m = meta()
    data = jpeg()
    put(tmp_path, "train/00000000.jpg", data)
    write_manifest(tmp_path, [row_for(m, 0, data, "split")])
    plan = make_plan(inspect(tmp_path), m, "gender", select(m.items))
    assert (tmp_path / "train/male/00000000.jpg").read_bytes() == data
    assert plan.relocated == 1 and plan.already_present == 1 and plan.rows["00000000.jpg"].layout == "gender"
    assert "00000000.jpg" not in {i.name for i, _ in plan.fetch}


def test_a_file_not_matching_its_row_is_deleted_and_fetched(tmp_path):
    m = meta()
    put(tmp_path, "train/00000000.jpg", jpeg((0, 0, 255)))
    write_manifest(tmp_path, [row_for(m, 0, jpeg(), "split")])
    plan = make_plan(inspect(tmp_path), m, "split", select(m.items), adopt=True)
    assert plan.damaged == ["00000000.jpg"] and not (tmp_path / "train/00000000.jpg").exists()
    assert "00000000.jpg" in {i.name for i, _ in plan.fetch}


def test_a_file_with_no_row_is_kept_only_when_the_version_is_known(tmp_path):
    m = meta()
    data = jpeg()
    put(tmp_path, "train/00000001.jpg", data)
    unknown = make_plan(inspect(tmp_path), m, "split", select(m.items), adopt=False)
    assert unknown.damaged == ["00000001.jpg"] and not (tmp_path / "train/00000001.jpg").exists()

    put(tmp_path, "train/00000001.jpg", data)
    known = make_plan(inspect(tmp_path), m, "split", select(m.items), adopt=True)
    row = known.rows["00000001.jpg"]
    assert known.adopted == 1 and row.origin == "adopted" and row.converted is False
    assert (tmp_path / "train/00000001.jpg").read_bytes() == data


def test_an_adopted_200px_or_gray_file_is_normalized_in_place(tmp_path):
    m = meta()
    put(tmp_path, "images_256/00000002.jpg", jpeg(size=(200, 200)))
    put(tmp_path, "images_256/00000004.jpg", jpeg(mode="L"))
    gray_rgb = io.BytesIO()
    Image.new("RGB", (256, 256), (90, 90, 90)).save(gray_rgb, format="JPEG")  # upstream's gray -> RGB
    put(tmp_path, "images_256/00000006.jpg", gray_rgb.getvalue())
    put(tmp_path, "images_256/00000007.jpg", b"<html>not an image</html>")
    plan = make_plan(inspect(tmp_path), m, "flat", select(m.items), adopt=True)
    assert plan.adopted == 3 and plan.adopted_converted == 3 and plan.damaged == ["00000007.jpg"]
    for name in ("00000002.jpg", "00000004.jpg", "00000006.jpg"):
        with Image.open(tmp_path / "images_256" / name) as im:
            assert (im.format, im.size, im.mode) == ("JPEG", (256, 256), "RGB")
        assert plan.rows[name].converted is True
    assert plan.rows["00000002.jpg"].source_width == 200
    assert plan.rows["00000004.jpg"].source_mode == "L" and plan.rows["00000006.jpg"].source_mode == "L"
    assert not (tmp_path / "images_256/00000007.jpg").exists()


def test_a_changed_url_makes_the_file_another_image(tmp_path):
    m = meta()
    data = jpeg()
    put(tmp_path, "train/00000000.jpg", data)
    old = row_for(m, 0, data, "split")
    write_manifest(tmp_path, [ManifestRow(*[*old.__dict__.values()][:2], "http://127.0.0.1:9/old.jpg",
                                          *[*old.__dict__.values()][3:])])
    plan = make_plan(inspect(tmp_path), m, "split", select(m.items), adopt=True)
    assert plan.damaged == ["00000000.jpg"] and not (tmp_path / "train/00000000.jpg").exists()


def test_a_limited_selection_plans_only_its_images_but_keeps_every_good_row(tmp_path):
    m = meta()
    data = jpeg()
    put(tmp_path, "test/00000007.jpg", data)
    write_manifest(tmp_path, [row_for(m, 7, data, "split")])
    plan = make_plan(inspect(tmp_path), m, "split", select(m.items, limit=2))
    assert [i.index for i, _ in plan.fetch] == [0, 1] and "00000007.jpg" in plan.rows and plan.total == 2


def test_a_damaged_file_that_cannot_be_deleted_is_left_to_the_fetch_not_a_crash(tmp_path, monkeypatch):
    import errno

    import pytest

    import kaokore.pipeline.plan as plan_module
    from kaokore.storage.store import StoreError

    m = meta()
    put(tmp_path, "train/00000000.jpg", jpeg((0, 0, 255)))
    write_manifest(tmp_path, [row_for(m, 0, jpeg(), "split")])

    def immutable(root, rel):
        raise PermissionError(errno.EPERM, "Operation not permitted", rel)

    monkeypatch.setattr(plan_module, "remove_file", immutable)
    plan = make_plan(inspect(tmp_path), m, "split", select(m.items), adopt=True)
    assert plan.damaged == ["00000000.jpg"] and "00000000.jpg" in {i.name for i, _ in plan.fetch}

    def full(root, rel):
        raise OSError(errno.EROFS, "Read-only file system", rel)

    monkeypatch.setattr(plan_module, "remove_file", full)
    with pytest.raises(StoreError, match="Read-only"):
        make_plan(inspect(tmp_path), m, "split", select(m.items), adopt=True)


def test_a_200px_file_that_cannot_be_rewritten_in_place_is_fetched_not_a_stopped_run(tmp_path, monkeypatch):
    import kaokore.pipeline.plan as plan_module
    from kaokore.storage.store import PathError

    m = meta()
    put(tmp_path, "images_256/00000002.jpg", jpeg(size=(200, 200)))

    def squatted(path, rel, data):
        raise PathError(f"cannot write {rel}: Is a directory")

    monkeypatch.setattr(plan_module, "write_image", squatted)
    plan = make_plan(inspect(tmp_path), m, "flat", select(m.items), adopt=True)
    assert plan.adopted == 0 and plan.damaged == ["00000002.jpg"]
    assert "00000002.jpg" in {i.name for i, _ in plan.fetch}
