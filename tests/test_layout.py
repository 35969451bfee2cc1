"""kaokore.dataset.layout: where each image goes, in every layout, as pure functions (no server, no files)."""
from __future__ import annotations

import pytest

from kaokore.dataset.layout import (
    DEFAULT_LAYOUT,
    FLAT_FOLDER,
    LAYOUTS,
    SPLITS,
    UNLABELED,
    any_layout_folders,
    candidate_paths,
    check_layout,
    folder,
    image_path,
    layout_folders,
)
from kaokore.dataset.metadata import Item
from kaokore.errors import UsageError

CLASSES = {"gender": ("male", "female"), "status": ("noble", "warrior", "incarnation", "commoner")}
LABELLED = Item(1234, "https://example.org/a.jpg", split="dev", gender=1, status=2)
UNLABELLED = Item(7, "https://example.org/b.jpg")  # a URL line with no row in labels.csv

# (layout, labelled image's path, unlabelled image's path)
EXPECTED = [
    ("split", "dev/00001234.jpg", "unlabeled/00000007.jpg"),
    ("flat", "images_256/00001234.jpg", "images_256/00000007.jpg"),
    ("gender", "dev/female/00001234.jpg", "unlabeled/00000007.jpg"),
    ("status", "dev/incarnation/00001234.jpg", "unlabeled/00000007.jpg"),
]


def test_the_layouts_and_the_default():
    assert LAYOUTS == ("split", "flat", "gender", "status")
    assert DEFAULT_LAYOUT == "split" and FLAT_FOLDER == "images_256" and UNLABELED == "unlabeled"
    assert tuple(SPLITS) == ("train", "dev", "test")
    assert {layout for layout, _, _ in EXPECTED} == set(LAYOUTS)


@pytest.mark.parametrize("layout, labelled, unlabelled", EXPECTED)
def test_image_path_in_every_layout(layout, labelled, unlabelled):
    assert image_path(LABELLED, layout, CLASSES) == labelled
    assert image_path(UNLABELLED, layout, CLASSES) == unlabelled
    assert folder(LABELLED, layout, CLASSES) == labelled.rsplit("/", 1)[0]
    assert folder(UNLABELLED, layout, CLASSES) == unlabelled.rsplit("/", 1)[0]


@pytest.mark.parametrize("category", ["gender", "status"])
def test_class_folders_follow_the_label_numbers_of_labels_metadata(category):
    for label, name in enumerate(CLASSES[category]):
        item = Item(1, "u", split="train", **{"gender": 0, "status": 0, category: label})
        assert folder(item, category, CLASSES) == f"train/{name}"
    # The class names come from the metadata, not from a list in the code.
    renamed = {**CLASSES, "status": ("a", "b", "c", "d")}
    assert image_path(LABELLED, "status", renamed) == "dev/c/00001234.jpg"


@pytest.mark.parametrize("split", SPLITS)
def test_every_split_gets_its_own_folder(split):
    item = Item(0, "u", split=split, gender=0, status=0)
    assert image_path(item, "split", CLASSES) == f"{split}/00000000.jpg"
    assert image_path(item, "gender", CLASSES) == f"{split}/male/00000000.jpg"
    assert image_path(item, "flat", CLASSES) == "images_256/00000000.jpg"


def test_layout_folders_lists_every_folder_a_layout_can_use():
    assert layout_folders("flat", CLASSES) == ["images_256"]
    assert layout_folders("split", CLASSES) == ["train", "dev", "test", "unlabeled"]
    assert layout_folders("gender", CLASSES) == [
        "train/male", "train/female", "dev/male", "dev/female", "test/male", "test/female", "unlabeled"]
    status = layout_folders("status", CLASSES)
    assert len(status) == 3 * 4 + 1 and status[-1] == "unlabeled" and "test/commoner" in status


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_image_path_lies_in_one_of_its_layouts_folders(layout):
    folders = set(layout_folders(layout, CLASSES))
    items = [UNLABELLED] + [Item(i, "u", split=s, gender=i % 2, status=i % 4)
                            for i, s in enumerate(SPLITS * 4)]
    for item in items:
        assert image_path(item, layout, CLASSES).rsplit("/", 1)[0] in folders


def test_any_layout_folders_is_the_union_of_every_layouts_folders():
    union = any_layout_folders(CLASSES)
    assert union == {f for layout in LAYOUTS for f in layout_folders(layout, CLASSES)}
    assert {"images_256", "train", "unlabeled", "dev/female", "test/noble"} <= union


def test_candidate_paths_lists_each_place_once_in_layout_order():
    assert candidate_paths(LABELLED, CLASSES) == [
        "dev/00001234.jpg", "images_256/00001234.jpg", "dev/female/00001234.jpg", "dev/incarnation/00001234.jpg"]
    # Every labelled layout puts an unlabelled image in unlabeled/: listed once, not three times.
    assert candidate_paths(UNLABELLED, CLASSES) == ["unlabeled/00000007.jpg", "images_256/00000007.jpg"]
    assert candidate_paths(LABELLED, CLASSES, layouts=["status"]) == ["dev/incarnation/00001234.jpg"]


def test_check_layout_accepts_the_layouts_and_names_them_when_refusing():
    for layout in LAYOUTS:
        assert check_layout(layout) == layout
    with pytest.raises(UsageError, match="unknown layout 'folders'.*split, flat, gender, status"):
        check_layout("folders")


def test_the_functions_are_pure():
    """Same answers twice, and the inputs are left alone: no state, no filesystem."""
    classes = {k: tuple(v) for k, v in CLASSES.items()}
    first = [image_path(LABELLED, layout, classes) for layout in LAYOUTS]
    assert first == [image_path(LABELLED, layout, classes) for layout in LAYOUTS]
    assert classes == CLASSES and LABELLED == Item(1234, "https://example.org/a.jpg", "dev", 1, 2)
