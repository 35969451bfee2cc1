#!/usr/bin/env python3
"""A baseline classifier for KaoKore: train on train, select on dev, report test.

    pip install 'kaokore[torch]'
    kaokore download --dir data
    python examples/train_baseline.py --root data --category status --device cuda

The default model is ResNet-18 at 256x256, defined below in plain PyTorch so
torchvision is not needed; when torchvision is installed its own ResNet is used
instead (same architecture, same parameter names, so checkpoints load in
either); a torchvision that is installed but cannot be imported is noted and
skipped. The checkpoint with the best dev accuracy is kept and evaluated once
on test; OUT/results.json records every epoch and the final numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Subset

from kaokore.storage.manifest import read_state
from kaokore.torch import KaoKore, to_tensor

ARCHS = ("resnet18", "resnet34", "tiny")  # tiny: a two-layer CNN for smoke tests, not for results
# Upstream's README table (github.com/rois-codh/kaokore), test accuracy on dataset version 1.0.
UPSTREAM = {("resnet18", "gender"): 92.98, ("resnet18", "status"): 82.16,
            ("resnet34", "gender"): 93.55, ("resnet34", "status"): 84.82}
# ImageNet statistics: what pretrained torchvision weights expect, and harmless from scratch.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# -- Models --------------------------------------------------------------------------------------
# Attribute names follow torchvision's ResNet exactly, so state dicts are interchangeable.


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, inplanes = (64, 128, 256, 512), 64
        for i, (width, count) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(inplanes, width, stride)] + [BasicBlock(width, width) for _ in range(count - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            inplanes = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tiny(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def build_model(arch: str, num_classes: int, backend: str = "auto", pretrained: bool = False) -> tuple[nn.Module, str]:
    """The model, and which implementation it is ("torch" or "torchvision")."""
    if arch == "tiny":
        if pretrained:
            raise SystemExit("error: --pretrained has no weights for --arch tiny")
        return tiny(num_classes), "torch"
    if backend != "torch":
        try:
            import torchvision.models
        except Exception as exc:
            # A torchvision built for another torch fails on import in many ways (OSError for a
            # missing library, RuntimeError for a missing operator, ...), not only ImportError.
            absent = isinstance(exc, ImportError) and exc.name == "torchvision"
            why = "is not installed" if absent else f"cannot be imported ({_one_line(exc)})"
            if backend == "torchvision" or pretrained:
                raise SystemExit(f"error: --backend torchvision and --pretrained need torchvision, "
                                 f"which {why}") from None
            if not absent:
                print(f"note: torchvision {why}; using the plain-PyTorch {arch} defined here", file=sys.stderr)
        else:
            if pretrained:  # ImageNet weights, then a new head for our classes
                model = getattr(torchvision.models, arch)(weights="DEFAULT")
                model.fc = nn.Linear(model.fc.in_features, num_classes)
            else:
                model = getattr(torchvision.models, arch)(num_classes=num_classes)
            return model, "torchvision"
    if pretrained:
        raise SystemExit("error: --pretrained needs torchvision (--backend auto or torchvision)")
    blocks = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}[arch]
    return ResNet(blocks, num_classes), "torch"


# -- Data --------------------------------------------------------------------------------------
# Transforms are module-level classes holding plain numbers, so DataLoader workers can unpickle them.


@dataclass(frozen=True)
class EvalTransform:
    size: int

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        return normalize(to_tensor(image))


@dataclass(frozen=True)
class TrainTransform:
    """Random resized crop (70-100% of the area, aspect 3:4 to 4:3) and horizontal flip."""

    size: int
    min_scale: float = 0.7

    def __call__(self, image: Image.Image) -> torch.Tensor:
        # `random` is seeded per DataLoader worker by PyTorch, and in the main process by --seed.
        width, height = image.size
        area = width * height * random.uniform(self.min_scale, 1.0)
        aspect = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = min(width, round(math.sqrt(area * aspect)))
        h = min(height, round(math.sqrt(area / aspect)))
        left, top = random.randint(0, width - w), random.randint(0, height - h)
        image = image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
        if random.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return normalize(to_tensor(image))


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def make_split(args, split: str, transform) -> KaoKore | Subset:
    ds = KaoKore(args.root, split=split, category=args.category, transform=transform)
    if args.limit is not None and args.limit < len(ds):
        # The first N by image number: for trying the pipeline, not for numbers to report.
        return Subset(ds, range(args.limit))
    return ds


def targets_of(ds) -> list[int]:
    return [ds.dataset.targets[i] for i in ds.indices] if isinstance(ds, Subset) else ds.targets


# -- Training and evaluation -------------------------------------------------------------------


@dataclass
class Scores:
    loss: float
    accuracy: float  # what upstream reports
    balanced_accuracy: float  # mean per-class recall: honest on the imbalanced status classes
    per_class: list[float | None]  # recall per class; None for a class absent from the split
    confusion: list[list[int]]  # rows: true class, columns: predicted

    @classmethod
    def from_predictions(cls, loss: float, true: torch.Tensor, pred: torch.Tensor, num_classes: int) -> Scores:
        confusion = torch.bincount(true * num_classes + pred, minlength=num_classes ** 2).view(num_classes, -1)
        support = confusion.sum(1)
        per_class = [(confusion[c, c] / support[c]).item() if support[c] else None for c in range(num_classes)]
        present = [r for r in per_class if r is not None]
        accuracy = (true == pred).float().mean().item() if len(true) else 0.0
        return cls(loss, accuracy, sum(present) / max(len(present), 1), per_class,
                   confusion.tolist())


def train_epoch(model, loader, criterion, optimizer, scheduler, scaler, device, amp: bool) -> tuple[float, float]:
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp):
            logits = model(images)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    return total_loss / max(seen, 1), correct / max(seen, 1)


@torch.no_grad()
def evaluate(model, loader, criterion, device, num_classes: int, amp: bool) -> Scores:
    model.eval()
    total_loss, trues, preds = 0.0, [], []
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp):
            logits = model(images)
        total_loss += criterion(logits.float(), labels).item() * len(labels)
        trues.append(labels.cpu())
        preds.append(logits.argmax(1).cpu())
    true = torch.cat(trues) if trues else torch.zeros(0, dtype=torch.long)
    pred = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    return Scores.from_predictions(total_loss / max(len(true), 1), true, pred, num_classes)


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def class_weights(targets: list[int], num_classes: int) -> torch.Tensor:
    """Inverse class frequency, scaled so a balanced split gets weight 1 everywhere."""
    counts = torch.bincount(torch.tensor(targets), minlength=num_classes).float().clamp(min=1)
    return counts.sum() / (num_classes * counts)


def run(args) -> dict:
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    amp = args.amp and device.type == "cuda"
    if args.download:
        KaoKore(args.root, download=True)

    train_set = make_split(args, "train", TrainTransform(args.image_size))
    dev_set = make_split(args, "dev", EvalTransform(args.image_size))
    test_set = make_split(args, "test", EvalTransform(args.image_size))
    classes = (train_set.dataset if isinstance(train_set, Subset) else train_set).classes
    num_classes = len(classes)
    loader = dict(batch_size=args.batch_size, num_workers=args.num_workers, pin_memory=device.type == "cuda",
                  persistent_workers=args.num_workers > 0)
    train_loader = DataLoader(train_set, shuffle=True, drop_last=len(train_set) > args.batch_size, **loader)
    dev_loader = DataLoader(dev_set, **loader)
    test_loader = DataLoader(test_set, **loader)

    model, backend = build_model(args.arch, num_classes, args.backend, args.pretrained)
    model.to(device)
    weights = class_weights(targets_of(train_set), num_classes).to(device) if args.class_weights else None
    criterion = nn.CrossEntropyLoss(weight=weights)
    eval_criterion = nn.CrossEntropyLoss()  # dev/test loss stays comparable whatever the training weights
    lr = args.lr if args.lr is not None else {"sgd": 0.05, "adamw": 1e-3}[args.optimizer]
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                                    weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=args.weight_decay)
    steps = max(args.epochs * len(train_loader), 1)
    warmup = min(len(train_loader), steps // 10)  # one epoch of linear warm-up, then cosine to zero
    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    out = Path(args.out or f"runs/kaokore-{args.category}-{args.arch}")
    out.mkdir(parents=True, exist_ok=True)
    version = read_state(Path(args.root)).get("dataset_version", "unknown")
    print(f"KaoKore {version} {args.category} {classes}: train {len(train_set)}, dev {len(dev_set)}, "
          f"test {len(test_set)}; {args.arch} ({backend}) at {args.image_size}px on {device}", flush=True)

    history, best, best_epoch = [], -1.0, 0
    for epoch in range(1, args.epochs + 1):
        started = time.monotonic()
        train_loss, train_acc = train_epoch(model, train_loader, criterion, optimizer, scheduler, scaler, device, amp)
        dev = evaluate(model, dev_loader, eval_criterion, device, num_classes, amp)
        improved = dev.accuracy > best
        if improved:
            best, best_epoch = dev.accuracy, epoch
            torch.save({"model": model.state_dict(), "arch": args.arch, "backend": backend, "classes": classes,
                        "category": args.category, "image_size": args.image_size, "mean": MEAN, "std": STD,
                        "epoch": epoch, "dev_accuracy": dev.accuracy, "args": vars(args)}, out / "best.pt")
        history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                        "dev_loss": dev.loss, "dev_accuracy": dev.accuracy,
                        "dev_balanced_accuracy": dev.balanced_accuracy, "seconds": time.monotonic() - started})
        print(f"epoch {epoch}/{args.epochs}: train loss {train_loss:.4f} acc {100 * train_acc:.2f}% | "
              f"dev loss {dev.loss:.4f} acc {100 * dev.accuracy:.2f}% balanced {100 * dev.balanced_accuracy:.2f}%"
              f"{' *' if improved else ''} ({time.monotonic() - started:.0f}s)", flush=True)

    checkpoint = torch.load(out / "best.pt", map_location=device, weights_only=True)
    model.load_state_dict(checkpoint["model"])
    test = evaluate(model, test_loader, eval_criterion, device, num_classes, amp)
    results = {"dataset_version": version, "category": args.category, "classes": classes, "arch": args.arch,
               "backend": backend, "image_size": args.image_size, "best_epoch": best_epoch,
               "dev_accuracy": best, "test": vars(test), "history": history, "args": vars(args)}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    print(f"best dev accuracy {100 * best:.2f}% at epoch {best_epoch}; "
          f"test accuracy {100 * test.accuracy:.2f}% (balanced {100 * test.balanced_accuracy:.2f}%)")
    for name, recall in zip(classes, test.per_class):
        print(f"  {name:12s} {'-' if recall is None else f'{100 * recall:.2f}%'}")
    upstream = UPSTREAM.get((args.arch, args.category))
    if upstream is not None:
        print(f"upstream's README reports {upstream:.2f}% for {args.arch} on {args.category} (dataset 1.0)")
    print(f"checkpoint and results in {out}")
    return results


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", default="data", help="directory written by `kaokore download`")
    p.add_argument("--category", choices=("gender", "status"), default="gender")
    p.add_argument("--arch", choices=ARCHS, default="resnet18")
    p.add_argument("--backend", choices=("auto", "torch", "torchvision"), default="auto",
                   help="auto: torchvision's model when installed, else the plain-PyTorch one here")
    p.add_argument("--pretrained", action="store_true", help="start from torchvision's ImageNet weights")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 0.05 sgd, 0.001 adamw)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--class-weights", action="store_true", help="weight the loss by inverse class frequency")
    p.add_argument("--image-size", type=int, default=256, help="side the 256x256 images are resized to")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps, ...")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--num-workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of each split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--download", action="store_true", help="download (or complete) the dataset into --root first")
    p.add_argument("--out", default=None,
                   help="where best.pt and results.json go (default: runs/kaokore-CATEGORY-ARCH)")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "image_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    return args


def main(argv=None) -> int:
    from kaokore.errors import KaokoreError

    args = parse_args(argv)
    try:
        run(args)
    except KaokoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
