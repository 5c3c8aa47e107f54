"""What fine-tuning from cached maps costs, and whether float16 maps lose anything.

On the cached `xception` GAP features and `xception_maps` maps of a config (make features
CONFIG=bench/dogs-vs-cats-mini-finetune.toml first), printed in one run:

  disk      the maps file's bytes per 1,000 images, and for the 37,500 images of Dogs vs.
            Cats Redux (25,000 train + 12,500 test);
  float16   the frozen top applied to the stored float16 maps against the stored float32
            GAP features (largest difference relative to the features' scale), and the
            held-out log loss of LogisticRegression() on each (same split, paired se per
            photo): float16 is harmless when the two agree within the paired se;
  time      one finetune fit (the head's defaults) on one fold's training rows of a
            5-fold split, in all and per epoch of the top (the phase-2 seconds over its
            epochs), and the fold's time extrapolated to a Redux fold (20,000 rows).

    python bench/finetune.py                  # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split

from competition.metrics import METRICS
from ensembles.finetune import FinetuneHead, maps_source
from features.backbones import get_backbone
from features.store import feature_path, load_split
from harness.config import load_config

REDUX_IMAGES = 25_000 + 12_500
REDUX_FOLD_ROWS = 20_000


def _lr_rows(X: np.ndarray, y: np.ndarray, fit: np.ndarray, held: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter=100: the default
        model = LogisticRegression().fit(X[fit], y[fit])
    return METRICS["log_loss"].row_loss(y[held], model.predict_proba(X[held]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path,
                        default=ROOT / "bench" / "dogs-vs-cats-mini-finetune.toml")
    parser.add_argument("--backbone", default="xception")
    args = parser.parse_args()
    config = load_config(args.config)
    features_dir = config.workspace.features_dir
    maps_name = f"{args.backbone}_maps"
    maps_path = feature_path(features_dir, maps_name)
    gap = load_split(feature_path(features_dir, args.backbone), "train")
    maps = load_split(maps_path, "train")
    assert list(gap.ids) == list(maps.ids), "the two files hold different images"
    images = len(maps.ids) + len(load_split(maps_path, "test").ids)
    spec = get_backbone(maps_name)

    per_1000 = maps_path.stat().st_size / images * 1000
    print(f"disk: {maps_path.name} {maps_path.stat().st_size / 2**20:.0f} MiB for {images} "
          f"images ({list(spec.map_shape)} {spec.storage_dtype}): {per_1000 / 2**20:.0f} MiB "
          f"per 1,000 images, {per_1000 * REDUX_IMAGES / 1000 / 2**30:.1f} GiB for Redux's "
          f"{REDUX_IMAGES:,}")

    source = maps_source(features_dir, (maps_name,), "none", ensemble="bench")
    base = get_backbone(args.backbone)
    top = base.top(base.build(source["weights"]))
    start = time.perf_counter()
    through = np.concatenate([
        np.asarray(top(maps.features[i:i + 64].astype(np.float32).reshape(-1, *spec.map_shape),
                       training=False)) for i in range(0, len(maps.ids), 64)])
    top_seconds = time.perf_counter() - start
    scale = float(np.abs(gap.features).max())
    worst = float(np.abs(through - gap.features).max()) / scale
    y = gap.labels
    fit, held = train_test_split(np.arange(len(y)), test_size=0.4, stratify=y, random_state=0)
    stored, from_maps = _lr_rows(gap.features, y, fit, held), _lr_rows(through, y, fit, held)
    diff = from_maps - stored
    print(f"float16: top(float16 maps) vs float32 GAP features: largest difference "
          f"{worst:.2e} of their scale; LogisticRegression() held-out log loss on "
          f"{len(held)} photos {stored.mean():.4f} (GAP features) vs {from_maps.mean():.4f} "
          f"(from the maps), difference {diff.mean():+.4f} (paired se "
          f"{diff.std(ddof=1) / np.sqrt(len(diff)):.4f}); the frozen top ran at "
          f"{len(maps.ids) / top_seconds:.0f} maps/s")

    train_rows, _ = next(StratifiedKFold(5, shuffle=True, random_state=0).split(y, y))
    head = FinetuneHead(**source)
    start = time.perf_counter()
    head.fit(maps.features, y[train_rows], rows=train_rows)
    seconds = time.perf_counter() - start
    epochs = head.n_epochs_
    fit_rows = round(len(train_rows) * (1 - head.validation_split))
    per_epoch = head.phase2_seconds_ / max(1, epochs)
    print(f"time: one fold ({len(train_rows)} rows, {fit_rows} fitted): {seconds:.0f} s in "
          f"all, {epochs} epochs of the top at {per_epoch:.0f} s each; held-out loss "
          f"{head.phase1_loss_:.4f} after the head, {head.best_loss_:.4f} after the top")
    rate = REDUX_FOLD_ROWS / len(train_rows)
    print(f"extrapolated to a Redux fold ({REDUX_FOLD_ROWS:,} rows, same epochs): "
          f"{seconds * rate / 60:.0f} min per fold on this machine "
          f"({seconds * rate * 6 / 3600:.1f} h for 5 folds and the refit)")


if __name__ == "__main__":
    main()
