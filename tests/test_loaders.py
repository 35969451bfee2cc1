"""The PyTorch and TensorFlow loaders on real trees written by `kaokore download` from loopback hosts.

Each layout is downloaded once per module; variants without a manifest (and an
upstream-style tree) are copies of those. The frameworks are optional: their
tests skip when one is absent, the import-hygiene tests run always.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from helpers import framework, make_synthetic
from iiif_server import FakeIIIF

import kaokore
from kaokore.errors import KaokoreError

LAYOUTS = ("split", "flat", "gender", "status")
SPLITS = ("train", "dev", "test")
CATEGORIES = ("gender", "status")
CLASSES = {"gender": ["male", "female"], "status": ["noble", "warrior", "incarnation", "commoner"]}
N = 40  # train has 19 labelled images: enough for a batch of 16
REPO = Path(__file__).resolve().parent.parent

# Three kinds of tree per layout: as downloaded; without manifest.csv and kaokore.json (the
# layout is found on disk); and for "flat", upstream's own shape (only labels and images_256/).
VARIANTS = [(layout, "manifest") for layout in LAYOUTS] + [(layout, "disk") for layout in LAYOUTS] + [
    ("flat", "upstream")]


@dataclass
class Trees:
    dirs: dict[tuple[str, str], Path]
    labels: dict[int, tuple[str, int, int]]  # image index -> (split, gender, status)
    images: dict[int, bytes]  # image index -> the JPEG bytes the server sent (kept as they are)
    meta_dir: Path
    srv: FakeIIIF

    def expected(self, split: str, category: str) -> list[tuple[str, int]]:
        column = 1 if category == "gender" else 2
        return [(f"{i:08d}.jpg", row[column]) for i, row in sorted(self.labels.items()) if row[0] == split]


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> Trees:
    base = tmp_path_factory.mktemp("loaders")
    with FakeIIIF(hosts=2) as srv:
        synth = make_synthetic(srv, base, n=N)
        images = {i: srv.expected_bytes(url) for i, url in synth.urls.items()}
        dirs = {}
        for layout in LAYOUTS:
            out = base / layout
            summary = kaokore.download(out, metadata_dir=synth.meta_dir, layout=layout, quiet=True)
            assert summary.complete
            dirs[layout, "manifest"] = out
            bare = base / f"{layout}-no-manifest"
            shutil.copytree(out, bare)
            (bare / "manifest.csv").unlink()
            (bare / "kaokore.json").unlink()
            dirs[layout, "disk"] = bare
        upstream = base / "upstream"
        upstream.mkdir()
        shutil.copytree(base / "flat" / "images_256", upstream / "images_256")
        for name in ("labels.csv", "labels.metadata.en.txt"):
            shutil.copy(base / "flat" / name, upstream / name)
        dirs["flat", "upstream"] = upstream
        yield Trees(dirs, synth.labels, images, synth.meta_dir, srv)


def names(samples) -> list[str]:
    return [Path(path).name for path, _ in samples]


# -- PyTorch -----------------------------------------------------------------------------------


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("layout,kind", VARIANTS)
def test_torch_every_layout_split_and_category(trees, layout, kind, split, category):
    framework("torch")
    from kaokore.torch import KaoKore

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete tree warns about nothing
        ds = KaoKore(trees.dirs[layout, kind], split=split, category=category)
    expected = trees.expected(split, category)
    assert len(ds) == len(expected) > 0
    assert list(zip(names(ds.samples), ds.targets)) == expected
    assert ds.classes == CLASSES[category]
    assert ds.class_to_idx == {c: i for i, c in enumerate(CLASSES[category])}
    for i, (name, label) in enumerate(expected):
        image, target = ds[i]
        assert (type(target), target) == (int, label)
        assert (image.mode, image.size) == ("RGB", (256, 256))
        reference = Image.open(io.BytesIO(trees.images[int(name[:8])])).convert("RGB")
        assert image.tobytes() == reference.tobytes(), f"{name} is not the image the server sent"


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_torch_dataloader_workers(trees, context):
    torch = framework("torch")
    from kaokore.torch import KaoKore, to_tensor

    ds = KaoKore(trees.dirs["gender", "manifest"], split="train", transform=to_tensor)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2, multiprocessing_context=context)
    images, labels = next(iter(loader))
    assert images.shape == (16, 3, 256, 256) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0
    assert labels.dtype == torch.int64 and labels.tolist() == ds.targets[:16]
    assert torch.equal(images[3], ds[3][0])


def test_torch_transforms_pickling_and_repr(trees):
    framework("torch")
    import pickle

    from kaokore.torch import KaoKore

    ds = KaoKore(trees.dirs["status", "manifest"], split="dev", category="status",
                 transform=lambda im: im.size, target_transform=lambda t: CLASSES["status"][t])
    assert ds[0] == ((256, 256), CLASSES["status"][ds.targets[0]])
    plain = KaoKore(trees.dirs["status", "manifest"], split="dev", category="status")
    clone = pickle.loads(pickle.dumps(plain))
    assert clone.samples == plain.samples and clone[0][0].tobytes() == plain[0][0].tobytes()
    text = repr(plain)
    assert "Number of datapoints: " + str(len(plain)) in text and "Split: dev" in text

    from kaokore.torch import to_tensor

    image = plain[0][0]
    tensor = to_tensor(image)
    assert tensor.shape == (3, 256, 256) and tensor.is_contiguous()
    for x, y in ((0, 0), (17, 200), (255, 255)):
        assert [round(v * 255) for v in tensor[:, y, x].tolist()] == list(image.getpixel((x, y)))


def test_torch_missing_images_are_counted_and_reported_once(tmp_path):
    framework("torch")
    from kaokore.torch import KaoKore, MissingImagesWarning

    with FakeIIIF(hosts=1) as srv:
        # Image 9 (train) has a label but no URL upstream; 0 and 4 are deleted after the download.
        synth = make_synthetic(srv, tmp_path, n=16, labeled_blank=(9,))
        kaokore.download(tmp_path / "data", metadata_dir=synth.meta_dir, layout="gender", quiet=True)
    for index in (0, 4):
        next((tmp_path / "data").rglob(f"{index:08d}.jpg")).unlink()
    train = sorted(i for i, (split, *_) in synth.labels.items() if split == "train")
    assert 9 in train
    with pytest.warns(MissingImagesWarning) as caught:
        ds = KaoKore(tmp_path / "data", split="train")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert f"3 of {len(train)} labelled train images are missing" in message
    assert "2 not downloaded (00000000.jpg, 00000004.jpg;" in message
    assert "1 with no URL in urls.txt" in message
    assert caught[0].filename == __file__  # points at the caller's line
    assert len(ds) == len(train) - 3
    assert sorted(ds.missing) == ["00000000.jpg", "00000004.jpg", "00000009.jpg"]
    assert all(ds[i][0].size == (256, 256) for i in range(len(ds)))


def test_torch_download_true_fetches_then_keeps_the_trees_layout(trees, tmp_path):
    framework("torch")
    from kaokore.torch import KaoKore

    root = tmp_path / "fresh"
    ds = KaoKore(root, split="test", category="status", download=True, layout="status",
                 metadata_dir=trees.meta_dir, quiet=True)
    assert list(zip(names(ds.samples), ds.targets)) == trees.expected("test", "status")
    assert all(Path(p).parent.parent.name == "test" for p, _ in ds.samples)
    # A second download=True without layout= must not move the tree to the default "split" layout.
    again = KaoKore(root, split="test", category="status", download=True, metadata_dir=trees.meta_dir, quiet=True)
    assert again.samples == ds.samples


def test_torch_errors_are_one_line_kaokore_errors(trees, tmp_path):
    framework("torch")
    from kaokore.torch import KaoKore

    root = trees.dirs["split", "manifest"]
    with pytest.raises(KaokoreError, match="unknown split 'validation'"):
        KaoKore(root, split="validation")
    with pytest.raises(KaokoreError, match="unknown category 'age'"):
        KaoKore(root, category="age")
    with pytest.raises(KaokoreError, match="is not a directory; download the dataset first"):
        KaoKore(tmp_path / "nowhere")
    with pytest.raises(KaokoreError, match=r"labels\.metadata\.en\.txt: missing; a tree written by"):
        KaoKore(tmp_path)
    with pytest.raises(TypeError, match="without download=True"):
        KaoKore(root, layout="gender")
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("labels.csv", "labels.metadata.en.txt", "urls.txt"):
        shutil.copy(root / name, empty / name)
    with pytest.raises(KaokoreError, match="none of the .* labelled train images"):
        KaoKore(empty)


# -- TensorFlow --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf():
    tf = framework("tensorflow")
    try:  # two cores: keep TensorFlow from starting a thread pool per core and then some
        tf.config.threading.set_inter_op_parallelism_threads(2)
        tf.config.threading.set_intra_op_parallelism_threads(2)
    except RuntimeError:
        pass  # already initialised by an earlier test
    return tf


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("layout,kind", VARIANTS)
def test_tensorflow_every_layout_split_and_category(trees, tf, layout, kind, split, category):
    import numpy as np

    import kaokore.tensorflow

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = kaokore.tensorflow.load(trees.dirs[layout, kind], split=split, category=category)
    expected = trees.expected(split, category)
    assert ds.element_spec == (tf.TensorSpec((256, 256, 3), tf.uint8), tf.TensorSpec((), tf.int64))
    assert int(ds.cardinality()) == len(ds) == len(expected) > 0
    assert ds.class_names == CLASSES[category]
    assert [Path(p).name for p in ds.file_paths] == [name for name, _ in expected]
    got = list(ds.as_numpy_iterator())
    assert [int(label) for _, label in got] == [label for _, label in expected]
    for (image, _), (name, _) in zip(got, expected):
        reference = Image.open(io.BytesIO(trees.images[int(name[:8])])).convert("RGB")
        # The same pixels as Pillow (and so as the PyTorch loader), not merely close ones.
        assert np.array_equal(image, np.asarray(reference)), f"{name} is not the image the server sent"


def test_tensorflow_batches_and_reports_missing(trees, tf, tmp_path):
    import kaokore.tensorflow
    from kaokore.tensorflow import MissingImagesWarning

    root = tmp_path / "partial"
    shutil.copytree(trees.dirs["split", "manifest"], root)
    first = trees.expected("train", "gender")[0][0]
    (root / "train" / first).unlink()
    with pytest.warns(MissingImagesWarning, match="1 not downloaded") as caught:
        ds = kaokore.tensorflow.load(root, split="train")
    assert len(caught) == 1
    assert len(ds) == len(trees.expected("train", "gender")) - 1
    images, labels = next(iter(ds.batch(16)))
    assert images.shape == (16, 256, 256, 3) and images.dtype == tf.uint8 and labels.dtype == tf.int64


# -- Import hygiene: runs with or without the frameworks ---------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_import_kaokore_imports_neither_framework():
    result = run_python(
        "import sys, kaokore, kaokore.tensorflow\n"
        "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules, sorted(sys.modules)\n")
    assert result.returncode == 0, result.stderr


def test_kaokore_torch_does_not_import_tensorflow():
    framework("torch")
    result = run_python("import sys, kaokore.torch\nassert 'tensorflow' not in sys.modules\n")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("framework,call,extra", [
    ("torch", "import kaokore.torch", "kaokore[torch]"),
    ("tensorflow", "import kaokore.tensorflow as t; t.load('.')", "kaokore[tensorflow]"),
])
def test_without_the_framework_the_message_names_the_extra(framework, call, extra):
    # sys.modules[name] = None makes `import name` fail as if it were not installed.
    result = run_python(
        f"import sys; sys.modules[{framework!r}] = None\n"
        "from kaokore.errors import KaokoreError\n"
        f"try:\n    {call}\n"
        "except ImportError as exc:\n"
        "    assert isinstance(exc, KaokoreError)\n"
        "    print(exc)\n")
    assert result.returncode == 0, result.stderr
    message = result.stdout.strip()
    assert "\n" not in message and f"pip install '{extra}'" in message
