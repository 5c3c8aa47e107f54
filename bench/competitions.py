"""Each task type on genuine photos: the harness's pick vs. a plain scikit-learn baseline,
on held-out photos, in the competition's own metric.

The labelled training photos of ../shared/data/dogs-vs-cats-mini are laid out as five
catalog competitions' downloads, their labels derived from the photo (the genuine
cat/dog label, and transformations applied to it):

  binary      aerial-cactus-identification layout, ROC AUC: dog or cat
  multiclass  dog-breed-identification layout, log loss: {cat, dog} x {upright, upside
              down} (a photo turned 180 degrees is its own class)
  multilabel  planet layout, mean F2: tags "dog", "grey" (made grayscale), "flipped"
              (upside down), each drawn independently
  ordinal     aptos2019 layout (PNG), quadratic kappa: grade 0-4 = Gaussian blur radius
              0, 1, 2, 3.5, 6
  regression  petfinder layout, RMSE: value 10-100 = the brightness the photo was scaled to

For each, --hold-out (40%) of the photos become the test folder and the sample submission
(their labels kept aside); `harness submit` runs as a user runs it (MobileNet-0.25 ImageNet
features, a linear head, a dropout head and their mean blend, the pick by the harness's
selection rule), and its CSV is scored on the held-out labels. The baseline is
scikit-learn with its defaults on the same features: LogisticRegression (one per tag,
threshold 0.5, for tags; argmax for grades) or Ridge (values). Printed in one run: both
scores, the difference and its paired standard error (per-row losses where the metric has
them; 2,000 bootstrap resamples of the rows for kappa and RMSE).

    python bench/competitions.py                    # about 2 minutes on 2 cores
    python bench/competitions.py --photos 400 --tasks binary ordinal
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from sklearn.linear_model import LogisticRegression, Ridge

from competition.metrics import METRICS, row_auc_loss, row_log_loss
from features.store import feature_path, load_split
from harness.config import load_config
from harness.pipeline import submit
from tests.shared_assets import MOBILENET_WEIGHTS, mini_photos, shared_dir

BLUR = (0, 1, 2, 3.5, 6)
TAGS = ("dog", "flipped", "grey")


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _transformed(photos, task: str, rng):
    """(image, label) per photo: label as the competition's CSV writes it."""
    for path, is_dog in photos:
        image = Image.open(path).convert("RGB")
        if task == "binary":
            yield image, int(is_dog)
        elif task == "multiclass":
            flip = bool(rng.integers(2))
            yield (image.rotate(180) if flip else image), \
                f"{'dog' if is_dog else 'cat'}_{'down' if flip else 'up'}"
        elif task == "multilabel":
            flip, grey = bool(rng.integers(2)), bool(rng.integers(2))
            if flip:
                image = image.rotate(180)
            if grey:
                image = ImageOps.grayscale(image).convert("RGB")
            tags = [t for t, on in zip(TAGS, (is_dog, flip, grey)) if on]
            yield image, " ".join(tags)
        elif task == "ordinal":
            grade = int(rng.integers(5))
            yield image.filter(ImageFilter.GaussianBlur(BLUR[grade])), grade
        else:
            value = int(rng.integers(10, 101))
            yield ImageEnhance.Brightness(image).enhance(value / 100), value


# Per task: (catalog slug, image folder / id / file suffix, labels csv and columns,
# sample submission placeholder columns).
LAYOUTS = {
    "binary": ("aerial-cactus-identification", "train", "test", ".jpg", True),
    "multiclass": ("dog-breed-identification", "train", "test", ".jpg", False),
    "multilabel": ("planet-understanding-the-amazon-from-space", "train-jpg", "test-jpg",
                   ".jpg", False),
    "ordinal": ("aptos2019-blindness-detection", "train_images", "test_images", ".png",
                False),
    "regression": ("petfinder-pawpularity-score", "train", "test", ".jpg", False),
}


def build(task: str, photos, root: Path, hold_out: float, seed: int) -> tuple[str, dict]:
    """Write the task's data folder; returns (slug, {test id: label})."""
    from competition.spec import CATALOG

    slug, train_dir, test_dir, suffix, id_with_suffix = LAYOUTS[task]
    spec = CATALOG[slug]
    rng = np.random.default_rng(seed)
    is_test = rng.random(len(photos)) < hold_out
    train_rows, truth = [], {}
    for n, ((image, label), held) in enumerate(zip(_transformed(photos, task, rng), is_test)):
        name = f"{task}{n:05d}"
        _save(image, root / (test_dir if held else train_dir) / f"{name}{suffix}")
        image_id = f"{name}{suffix}" if id_with_suffix else name
        if held:
            truth[image_id] = label
        else:
            train_rows.append((image_id, label))
    for folder in spec.extra_test_dirs:  # Planet's second test folder: empty here
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids, labels = zip(*train_rows)
    csv_id = spec.labels_id_column
    pd.DataFrame({csv_id: ids, spec.label_column: labels}).to_csv(root / spec.labels_csv,
                                                                  index=False)
    sample = {spec.id_column: list(truth)}
    if task == "multiclass":
        sample.update({c: 0.25 for c in sorted(set(labels))})
    else:
        sample[spec.label_column] = {"binary": 0.5, "multilabel": "dog", "ordinal": 0,
                                     "regression": 50}[task]
    pd.DataFrame(sample).to_csv(root / spec.sample_submission, index=False)
    return slug, truth


def _config(root: Path, slug: str, weights: Path, linear: str) -> Path:
    text = f'''competition = "{slug}"
workspace = "{root / 'ws'}"
data_dir = "{root / 'data'}"
[features]
backbones = ["mobilenet_025"]
weights_dir = "{weights}"
[ensembles.mobilenet-{linear}]
backbones = ["mobilenet_025"]
head = "{linear}"
[ensembles.mobilenet-dropout]
backbones = ["mobilenet_025"]
head = "dropout"
[blends.mean]
members = ["mobilenet-{linear}", "mobilenet-dropout"]
method = "mean"
'''
    path = root / "harness.toml"
    path.write_text(text)
    return path


def _baseline(task: str, X: np.ndarray, y, X_test: np.ndarray):
    """scikit-learn with its defaults: the submitted values, in the metric's form."""
    if task == "regression":
        return Ridge().fit(X, y).predict(X_test)
    if task == "multilabel":
        return np.column_stack([LogisticRegression(max_iter=1000).fit(X, y[:, t])
                                .predict(X_test) for t in range(y.shape[1])])
    model = LogisticRegression(max_iter=1000).fit(X, y)
    if task == "ordinal":
        return model.predict(X_test)
    proba = model.predict_proba(X_test)
    return proba[:, 1] if task == "binary" else proba


def _targets(task: str, labels, classes):
    if task == "multilabel":
        return np.asarray([[int(t in str(v).split()) for t in classes] for v in labels])
    if task in ("binary", "ordinal", "regression"):
        return np.asarray(labels, dtype=np.float64 if task == "regression" else np.int64)
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index[v] for v in labels])


def _row_losses(task: str, y, submitted) -> np.ndarray | None:
    """Per-row losses whose mean moves with the metric (lower is better), or None."""
    if task == "binary":
        return row_auc_loss(y, submitted)
    if task == "multiclass":
        return row_log_loss(y, submitted)
    if task == "multilabel":
        rows = METRICS["mean_f2"].tag_rows((submitted & y).sum(1), submitted.sum(1), y.sum(1))
        return 1 - rows
    return None


def run_task(task: str, photos, scratch: Path, weights: Path, args) -> dict:
    root = scratch / task
    slug, truth = build(task, photos, root / "data", args.hold_out, args.seed)
    linear = "ridge" if task in ("ordinal", "regression") else "logreg"
    config = load_config(_config(root, slug, weights, linear))
    start = time.perf_counter()
    made = submit(config, progress=False)
    seconds = time.perf_counter() - start
    spec = config.spec
    table = pd.read_csv(made.paths[0], dtype={spec.id_column: str}, keep_default_na=False)
    classes = made.pick.classes
    metric = spec.scorer
    y_test = _targets(task, [truth[i] for i in table[spec.id_column]], classes)
    if task == "multiclass":
        ours = table[list(classes)].to_numpy(float)
    elif task == "multilabel":
        ours = _targets(task, table[spec.label_column], classes)
    else:
        ours = table[spec.label_column].to_numpy(float if task != "ordinal" else np.int64)
    train = load_split(feature_path(config.workspace.features_dir, "mobilenet_025", "none"),
                       "train")
    test = load_split(feature_path(config.workspace.features_dir, "mobilenet_025", "none"),
                      "test")
    position = {key: row for row, key in enumerate(test.ids)}
    X_test = test.features[[position[i] for i in table[spec.id_column]]]
    theirs = _baseline(task, train.features, train.labels, X_test)
    score = (metric.score(y_test, ours), metric.score(y_test, theirs))
    ours_rows, theirs_rows = _row_losses(task, y_test, ours), _row_losses(task, y_test, theirs)
    if ours_rows is not None:
        diff = ours_rows - theirs_rows
        se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
    else:  # kappa and RMSE do not split into rows: bootstrap the rows
        rng = np.random.default_rng(0)
        draws = [metric.score(y_test[r], ours[r]) - metric.score(y_test[r], theirs[r])
                 for r in (rng.integers(0, len(y_test), len(y_test)) for _ in range(2000))]
        se = float(np.std(draws, ddof=1))
    return {"task": task, "slug": slug, "metric": spec.metric, "train": len(train.ids),
            "held_out": len(y_test), "pick": made.pick.name, "cv": made.pick.cv_score,
            "harness": score[0], "baseline": score[1], "diff": score[0] - score[1],
            "se": se, "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=600,
                        help="genuine training photos used per task (cats and dogs)")
    parser.add_argument("--hold-out", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # Keras retracing notices
    shared = shared_dir()
    pool = mini_photos(args.photos)
    photos = [(path, int(label)) for path, label in zip(pool.paths, pool.labels)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-competitions-") as scratch:
        for task in args.tasks:
            rows.append(run_task(task, photos, Path(scratch), shared / MOBILENET_WEIGHTS.parent,
                                 args))
            print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format="%.4f"),
                  flush=True)
    print()
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.4f"))
    print("diff = harness - baseline in the metric (higher is better except log_loss, rmse);"
          " se: paired (per-row losses; bootstrap for kappa and RMSE)")


if __name__ == "__main__":
    main()
