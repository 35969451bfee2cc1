"""examples/train_baseline.py: its model is a real ResNet-18, and it runs end to end on a tiny tree."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import framework, make_synthetic
from iiif_server import FakeIIIF
from synthetic import CLASSES_EN

import kaokore

torch = framework("torch")

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "examples" / "train_baseline.py"


@pytest.fixture(scope="module")
def baseline():
    spec = importlib.util.spec_from_file_location("train_baseline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("baseline")
    with FakeIIIF(hosts=2) as srv:
        synth = make_synthetic(srv, base, n=40)
        kaokore.download(base / "data", metadata_dir=synth.meta_dir, layout="status", quiet=True)
    return base / "data"


@pytest.fixture(scope="module")
def learnable(tmp_path_factory) -> Path:
    """An upstream-style tree (labels and images_256/ only) whose gender shows in the colour of the image."""
    from PIL import Image

    root = tmp_path_factory.mktemp("learnable")
    (root / "images_256").mkdir()
    (root / "labels.metadata.en.txt").write_bytes(CLASSES_EN)
    rows = ["image,gender,status,set"]
    for i in range(48):
        split, gender = ("train", "train", "dev", "test")[i % 4], (i // 4) % 2
        tint = Image.new("RGB", (256, 256), (170, 70, 70) if gender == 0 else (70, 70, 170))
        noise = Image.effect_noise((256, 256), 64).convert("RGB")
        Image.blend(tint, noise, 0.4).save(root / "images_256" / f"{i:08d}.jpg", quality=90)
        rows.append(f"{i:08d}.jpg,{gender},{i % 4},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def train(tree: Path, out: Path, *args: str,
          pythonpath: Path | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(tree), "--device", "cpu", "--out", str(out), *args],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads((out / "results.json").read_text())


def test_defaults_are_resnet18_at_256(baseline):
    args = baseline.parse_args([])
    assert (args.arch, args.image_size, args.category, args.root) == ("resnet18", 256, "gender", "data")


def test_plain_torch_resnet18_is_torchvisions_architecture(baseline):
    model, backend = baseline.build_model("resnet18", 2, backend="torch")
    assert backend == "torch"
    # torchvision's resnet18 has 11,689,512 parameters with its 1000-class head; ours with a 2-class head:
    assert sum(p.numel() for p in model.parameters()) == 11_689_512 - 512 * 1000 - 1000 + 512 * 2 + 2
    keys = model.state_dict().keys()
    for key in ("conv1.weight", "bn1.running_mean", "layer1.1.conv2.weight", "layer2.0.downsample.0.weight",
                "layer4.1.bn2.num_batches_tracked", "fc.bias"):
        assert key in keys
    assert len(keys) == 122  # as torchvision's resnet18().state_dict()
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 2)


def test_smoke_default_resnet18_one_epoch(tree, tmp_path):
    """The default model on CPU, one epoch, small images: the whole pipeline, dev selection and test."""
    result, results = train(tree, tmp_path / "run", "--category", "status", "--backend", "torch",
                            "--epochs", "1", "--batch-size", "8", "--image-size", "64", "--num-workers", "2")
    assert (results["arch"], results["backend"], results["best_epoch"]) == ("resnet18", "torch", 1)
    assert results["classes"] == ["noble", "warrior", "incarnation", "commoner"]
    # The accuracy is the test set's, scored once per image: the confusion matrix counts every test
    # image of the tree exactly once, and its diagonal is what the accuracy says.
    confusion = results["test"]["confusion"]
    test_images = (tree / "labels.csv").read_text().count(",test\n")
    assert len(confusion) == 4 and all(len(row) == 4 for row in confusion)
    assert sum(map(sum, confusion)) == test_images == 8
    assert results["test"]["accuracy"] == pytest.approx(sum(confusion[i][i] for i in range(4)) / test_images)
    assert "test accuracy" in result.stdout and "upstream's README reports 82.16%" in result.stdout
    checkpoint = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["classes"] == results["classes"]


def test_it_learns_and_tests_the_best_dev_checkpoint(learnable, tmp_path):
    _, results = train(learnable, tmp_path / "run", "--arch", "tiny", "--epochs", "3", "--batch-size", "4",
                       "--image-size", "32", "--num-workers", "0", "--class-weights")
    dev = [epoch["dev_accuracy"] for epoch in results["history"]]
    assert len(dev) == 3
    assert results["best_epoch"] == dev.index(max(dev)) + 1 and results["dev_accuracy"] == max(dev)
    checkpoint = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert checkpoint["epoch"] == results["best_epoch"]
    assert results["test"]["accuracy"] == 1.0, results["test"]  # red vs blue: anything less is a bug


def broken_torchvision(where: Path) -> Path:
    """A torchvision that is installed but fails on import, as one built for another torch does."""
    (where / "torchvision").mkdir(parents=True)
    (where / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    return where


def test_a_torchvision_that_cannot_load_is_noted_and_replaced(learnable, tmp_path):
    site = broken_torchvision(tmp_path / "site")
    result, results = train(learnable, tmp_path / "run", "--epochs", "1", "--batch-size", "8", "--image-size", "32",
                            "--num-workers", "0", pythonpath=site)
    assert (results["arch"], results["backend"]) == ("resnet18", "torch")
    assert [line for line in result.stderr.splitlines() if "torchvision" in line] == [
        "note: torchvision cannot be imported (RuntimeError: operator torchvision::nms does not exist); "
        "using the plain-PyTorch resnet18 defined here"]
    assert "Traceback" not in result.stderr


def test_asking_for_a_torchvision_that_cannot_load_is_a_one_line_error(learnable, tmp_path):
    site = broken_torchvision(tmp_path / "site")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(learnable), "--backend", "torchvision", "--device", "cpu",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(site)})
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and "cannot be imported (RuntimeError" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_missing_tree_is_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--root", str(tmp_path / "nowhere"), "--device", "cpu"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "download the dataset first" in result.stderr
    assert "Traceback" not in result.stderr
