"""Benchmark: float32 vs bfloat16 extraction with genuine ImageNet weights on genuine photos.

`--precision bfloat16` is opt-in because it changes the features. This measures, in one
run, what it buys and what it costs on the machine at hand:
  - extraction speed of each precision (each in its own fresh process, train images only),
  - how far the bfloat16 features are from the float32 ones,
  - cross-validated log loss and accuracy of the harness's logistic-regression head
    (standardised, C = 1, the same stratified folds) on each.

    python bench/precision.py                       # Xception, the 1,200 train photos of the mini set
    python bench/precision.py --backbone mobilenet_025 --n 400

Needs ../shared (the photos and the weights); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from tests.shared_assets import MINI_DATA, MOBILENET_WEIGHTS, shared_root

DATA = shared_root() / MINI_DATA
WEIGHTS = shared_root() / MOBILENET_WEIGHTS.parent
PRECISIONS = ("float32", "bfloat16")


def train_images(n: int):
    from competition.images import list_train_images
    from competition.spec import get_spec

    train = list_train_images(get_spec("dogs-vs-cats-redux-kernels-edition"), DATA)
    if n and n < len(train):
        # Every k-th image keeps both classes and the natural order.
        train = train.subset(np.linspace(0, len(train) - 1, n).round().astype(int))
    return train


def extract(precision: str, backbone: str, n: int, out: Path) -> dict:
    """Child process: extract train features at `precision` into `out`; report timings."""
    from competition.images import ImageList
    from competition.spec import get_spec
    from features.extract import extract_features
    from features.settings import FeaturesConfig
    from features.weights import resolve_weights

    train = train_images(n)
    test = ImageList("test", (), (), None, train.classes)
    choice = resolve_weights(backbone, FeaturesConfig(weights_dir=WEIGHTS),
                             get_spec("dogs-vs-cats-redux-kernels-edition"))
    weights = {backbone: choice}
    report = extract_features(train, test, [(backbone, "none")], weights, out,
                              precision=precision, progress=False)
    result = report.result(backbone)
    return {"seconds": report.seconds, "build": report.build_seconds,
            "model_seconds": result.seconds, "images_per_s": result.images_per_s,
            "images": result.images, "skipped": len(result.skipped)}


def cv_scores(features: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> tuple:
    from ensembles.cv import accuracy, cross_validate, log_loss
    from ensembles.heads import LogisticHead

    output = cross_validate(LogisticHead(C=1.0), features, labels, folds, 2, progress=False)
    return (log_loss(labels, output.oof), accuracy(labels, output.oof),
            float(np.std(output.fold_log_loss)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="xception")
    parser.add_argument("--n", type=int, default=0, help="train photos (0: all)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--child", choices=PRECISIONS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.ERROR)
    if args.child:
        print(json.dumps(extract(args.child, args.backbone, args.n, Path(args.out))))
        return
    if not DATA.is_dir() or not WEIGHTS.is_dir():
        sys.exit(f"bench/precision.py needs {DATA} and {WEIGHTS} (set HARNESS_SHARED)")

    from ensembles.cv import make_folds
    from features.runtime import cpu_has_bf16
    from features.store import feature_path, load_split

    runs, matrices = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for precision in PRECISIONS:
            out = Path(scratch) / precision
            cmd = [sys.executable, __file__, "--child", precision, "--backbone", args.backbone,
                   "--n", str(args.n), "--out", str(out)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[precision] = json.loads(done.stdout.strip().splitlines()[-1])
            matrices[precision] = load_split(feature_path(out, args.backbone), "train")
    exact, half = matrices["float32"], matrices["bfloat16"]
    assert list(exact.ids) == list(half.ids)
    labels = np.asarray(exact.labels)
    folds = make_folds(np.asarray(exact.ids), labels, args.folds, seed=0)

    print(f"bench/precision.py: {args.backbone}, {len(labels)} genuine train photos from "
          f"{DATA}, weights from {WEIGHTS}; CPU bfloat16 native: {cpu_has_bf16()}")
    print(f"{'precision':10s} {'wall s':>8s} {'model s':>8s} {'img/s':>7s} "
          f"{'CV log loss':>12s} {'fold std':>9s} {'accuracy':>9s}")
    scores = {}
    for precision in PRECISIONS:
        run, matrix = runs[precision], matrices[precision]
        scores[precision] = cv_scores(np.asarray(matrix.features), labels, folds)
        loss, acc, std = scores[precision]
        print(f"{precision:10s} {run['seconds']:8.1f} {run['model_seconds']:8.1f} "
              f"{run['images_per_s']:7.2f} {loss:12.4f} {std:9.4f} {acc:9.4f}")
    a, b = np.asarray(exact.features), np.asarray(half.features)
    relative = np.abs(a - b).max(axis=1) / np.abs(a).max(axis=1)
    correlation = np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)])
    speed = runs["bfloat16"]["images_per_s"] / runs["float32"]["images_per_s"]
    print(f"bfloat16 / float32 model throughput: {speed:.2f}x; features: max |diff| / row max "
          f"median {np.median(relative):.4f}, worst {relative.max():.4f}; mean per-row "
          f"correlation {correlation:.6f}")
    print(f"CV log loss change: {scores['bfloat16'][0] - scores['float32'][0]:+.4f} "
          f"(fold std {scores['float32'][2]:.4f})")


if __name__ == "__main__":
    main()
