"""The honest yardstick: how the harness's chosen submission does on photos it never saw.

Cross-validated scores on a small, clean training set reward overconfident models that a
Kaggle test set punishes. This bench holds photos out instead. For each of --splits seeded
stratified splits of a competition's *labelled training* photos into a fitting part
(--fit-share, 60%) and a held-out part (40%):

  1. the cached feature files are cut into a scratch workspace whose train split is the
     fitting part and whose test split is the held-out part (labels kept aside);
  2. the harness's whole selection runs there exactly as `make submit` runs it:
     `ensembles.run.run_ensembles` (every configured ensemble and blend, their CV, C and
     clip choices) and `ensembles.select.choose_submission` (the pick);
  3. the held-out part scores every result's submitted (clipped) test predictions, the
     chosen one under every selection rule, and a fixed baseline: scikit-learn's
     `LogisticRegression()` with its defaults on the raw concatenated features of the
     config's backbones, no clipping.

Printed, in one run: mean held-out log loss and standard error (over splits) of each,
the paired difference chosen - baseline, each result's mean CV estimate and its gap to
held-out (the mean |CV - held-out| per split, and the mean signed gap: CV's bias), the
noise floor of that gap (what the held-out sample alone adds to |CV - held-out|), and the
Spearman correlation of the CV ranking with the held-out ranking (per split, and of the
mean scores over splits). `--cv-repeats R` also scores every result on R-1 more sets of
folds (other [cv] seeds; a repeated stratified k-fold) and prints the same gap, ranking
and lowest-CV pick for the R-repeat CV mean, so both are measured on the same splits.
It reuses the cached feature files; nothing is extracted.

    python bench/quality.py --config bench/dogs-vs-cats-mini.toml      # genuine photos
    python bench/quality.py --config harness.toml --splits 3           # the demo, quick
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit

from base.workspace import Workspace
from competition.metrics import METRICS
from ensembles import cv
from ensembles.run import configured_ensembles, run_ensembles
from ensembles.select import DEFAULT_RULE, RULES, choose_submission
from features.backbones import get_backbone
from features.store import FeatureSplit, feature_path, load_split, write_feature_file
from harness.config import Config, load_config

BASELINE = "baseline LogisticRegression()"


def load_train(config: Config) -> dict[tuple[str, str], FeatureSplit]:
    """The train split of every needed feature file, rows in the first file's id order."""
    splits: dict[tuple[str, str], FeatureSplit] = {}
    for backbone, tta in config.feature_sets():
        path = feature_path(config.workspace.features_dir, backbone, tta)
        if not path.is_file():
            sys.exit(f"bench/quality.py: {path} is missing; run `make features "
                     f"CONFIG={config.source}` first")
        splits[(backbone, tta)] = load_split(path, "train")
    first = next(iter(splits.values()))
    for key, split in splits.items():
        position = {k: i for i, k in enumerate(split.ids)}
        order = np.array([position[k] for k in first.ids], dtype=np.int64)
        splits[key] = dataclasses.replace(split, ids=split.ids[order],
                                          features=split.features[order],
                                          labels=split.labels[order])
    return splits


def rows_of(split: FeatureSplit, rows: np.ndarray, *, labelled: bool) -> FeatureSplit:
    """The given rows of a split (as a test split, without labels, when not `labelled`)."""
    return FeatureSplit(split.ids[rows], split.features[rows],
                        split.labels[rows] if labelled else None,
                        np.zeros(len(rows), dtype=bool), split.classes, {})


def scratch_workspace(config: Config, splits: dict, fit: np.ndarray, held: np.ndarray,
                      root: Path) -> Config:
    """A config whose feature files hold the fitting rows as train, held-out rows as test."""
    features_dir = Workspace(root).features_dir
    for (backbone, tta), split in splits.items():
        write_feature_file(feature_path(features_dir, backbone, tta), split.attrs,
                           train=rows_of(split, fit, labelled=True),
                           test=rows_of(split, held, labelled=False))
    return dataclasses.replace(config, workspace=Workspace(root))


def held_out_row_losses(result, held_ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-photo log loss of the result's submitted test predictions (clipped as the CSV
    would be), `labels` aligned with `held_ids`."""
    position = {key: i for i, key in enumerate(result.test_ids)}
    proba = result.test_proba[[position[key] for key in held_ids]]
    return METRICS["log_loss"].row_loss(labels, cv.apply_clip(proba, result.clip))


def held_out_loss(result, held_ids: np.ndarray, labels: np.ndarray) -> float:
    """Log loss of the result's submitted test predictions on the held-out photos."""
    return float(held_out_row_losses(result, held_ids, labels).mean())


def baseline_row_losses(splits: dict, backbones: tuple[str, ...], fit: np.ndarray,
                        held: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-photo log loss of scikit-learn's LogisticRegression() with its defaults on the
    raw concatenated GAP features (not a `_maps` backbone's maps), no clip."""
    gap = [b for b in backbones if not get_backbone(b).maps_of]
    X = np.hstack([splits[(b, "none")].features for b in gap])
    model = LogisticRegression()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter=100: that is the default
        model.fit(X[fit], labels[fit])
    return METRICS["log_loss"].row_loss(labels[held], model.predict_proba(X[held]))


def mean_se(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def print_agreement(title: str, cv_scores: dict[str, list[float]],
                    held_scores: dict[str, list[float]]) -> None:
    """How well CV estimates agree with held-out scores: per result the mean |CV - held|
    and mean CV - held over splits, then the Spearman correlation of the two rankings,
    per split (its mean) and of the mean scores over splits."""
    names = sorted(held_scores, key=lambda n: np.mean(held_scores[n]))
    print(title)
    print(f"{'result':34s} {'held-out':>9s} {'se':>7s} {'cv est.':>8s} {'|cv-held|':>9s} "
          f"{'cv-held':>8s}")
    for name in names:
        m, se = mean_se(held_scores[name])
        gap = np.asarray(cv_scores[name]) - np.asarray(held_scores[name])
        print(f"{name:34s} {m:9.4f} {se:7.4f} {np.mean(cv_scores[name]):8.4f} "
              f"{np.mean(np.abs(gap)):9.4f} {np.mean(gap):+8.4f}")
    splits = len(held_scores[names[0]])
    rhos = [spearmanr([cv_scores[n][i] for n in names],
                      [held_scores[n][i] for n in names]).statistic for i in range(splits)]
    rho_m, rho_se = mean_se(rhos)
    of_means = spearmanr([np.mean(cv_scores[n]) for n in names],
                         [np.mean(held_scores[n]) for n in names]).statistic
    print(f"Spearman(CV rank, held-out rank) over ensembles+blends: per split mean {rho_m:.2f} "
          f"(se {rho_se:.2f}, min {min(rhos):.2f}); of the mean scores over splits "
          f"{of_means:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "bench" / "dogs-vs-cats-mini.toml")
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--fit-share", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, help="override the config's [cv] folds")
    parser.add_argument("--cv-repeats", type=int, default=1,
                        help="also score on this many sets of folds (seeds seed..seed+R-1)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")

    config = load_config(args.config)
    if args.folds:
        config = dataclasses.replace(config, cv=dataclasses.replace(config.cv, folds=args.folds))
    splits = load_train(config)
    first = next(iter(splits.values()))
    labels = first.labels
    names = list(configured_ensembles(config)) + list(config.blends)
    print(f"bench/quality.py: {config.spec.slug}, {len(labels)} labelled training photos, "
          f"{args.splits} splits {args.fit_share:.0%} fit / {1 - args.fit_share:.0%} held out, "
          f"backbones {', '.join(config.features.backbones)}, {len(names)} ensembles+blends, "
          f"[cv] folds {config.cv.folds}")
    held_scores: dict[str, list[float]] = {}
    cv_scores: dict[str, list[float]] = {}
    cv_repeated: dict[str, list[float]] = {}  # mean over --cv-repeats sets of folds
    picks: dict[str, list[str]] = {rule: [] for rule in RULES}
    chosen_scores: dict[str, list[float]] = {rule: [] for rule in RULES}
    chosen_cv: dict[str, list[float]] = {rule: [] for rule in RULES}
    chosen_floor: list[float] = []  # E|N(0, se)| of the default pick's held-out score
    repeated_pick: list[float] = []  # held-out score of the lowest R-repeat CV mean
    base_scores: list[float] = []
    # Per result and split: (mean, standard error) of its per-photo loss minus the
    # baseline's on the same photos, and its fit seconds (all folds and the refit).
    paired: dict[str, list[tuple[float, float]]] = {}
    seconds: dict[str, list[float]] = {}
    splitter = StratifiedShuffleSplit(n_splits=args.splits, train_size=args.fit_share,
                                      random_state=args.seed)
    start = time.perf_counter()
    for number, (fit, held) in enumerate(splitter.split(np.zeros(len(labels)), labels), 1):
        fit, held = np.sort(fit), np.sort(held)
        with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
            scratch = scratch_workspace(config, splits, fit, held, Path(tmp))
            results = run_ensembles(scratch, progress=False)
            repeats = [results] + [
                run_ensembles(dataclasses.replace(scratch, cv=dataclasses.replace(
                    scratch.cv, seed=scratch.cv.seed + r)), progress=False)
                for r in range(1, args.cv_repeats)]
        truth, held_ids = labels[held], first.ids[held]
        for result in results:
            held_scores.setdefault(result.name, []).append(
                held_out_loss(result, held_ids, truth))
            cv_scores.setdefault(result.name, []).append(result.cv_score)
            cv_repeated.setdefault(result.name, []).append(float(np.mean(
                [next(r for r in rep if r.name == result.name).cv_score for rep in repeats])))
        for rule in RULES:
            pick, _ = choose_submission(results, rule)
            picks[rule].append(pick.name)
            chosen_scores[rule].append(held_out_loss(pick, held_ids, truth))
            chosen_cv[rule].append(pick.cv_score)
            if rule == DEFAULT_RULE:
                rows = held_out_row_losses(pick, held_ids, truth)
                chosen_floor.append(float(rows.std(ddof=1) / np.sqrt(len(rows))
                                          * np.sqrt(2 / np.pi)))
        best_repeated = min(cv_repeated, key=lambda n: cv_repeated[n][-1])
        repeated_pick.append(held_scores[best_repeated][-1])
        base_rows = baseline_row_losses(splits, config.features.backbones, fit, held, labels)
        base_scores.append(float(base_rows.mean()))
        for result in results:
            diff = held_out_row_losses(result, held_ids, truth) - base_rows
            paired.setdefault(result.name, []).append(
                (float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))))
            seconds.setdefault(result.name, []).append(result.fit_seconds)
        print(f"  split {number:2d}/{args.splits}: chosen {picks[DEFAULT_RULE][-1]} "
              f"{chosen_scores[DEFAULT_RULE][-1]:.4f}, baseline {base_scores[-1]:.4f}  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)

    print()
    print_agreement(f"[cv] folds {config.cv.folds}, one set of folds (as make submit):",
                    cv_scores, held_scores)
    m, se = mean_se(base_scores)
    print(f"{BASELINE:34s} {m:9.4f} {se:7.4f}")
    print()
    print("each result vs the baseline on the same held-out photos (per split: mean "
          "per-photo difference, its paired se; then their mean over splits):")
    print(f"{'result':34s} {'ratio':>6s} {'diff':>8s} {'paired se':>9s} {'fit s':>7s}  per split")
    for name in sorted(paired, key=lambda n: np.mean(held_scores[n])):
        diffs = np.asarray(paired[name])
        per_split = ", ".join(f"{d:+.4f} ({s:.4f})" for d, s in diffs)
        print(f"{name:34s} {np.mean(held_scores[name]) / np.mean(base_scores):6.3f} "
              f"{diffs[:, 0].mean():+8.4f} {diffs[:, 1].mean():9.4f} "
              f"{np.mean(seconds[name]):7.1f}  {per_split}")
    print()
    for rule in RULES:
        m, se = mean_se(chosen_scores[rule])
        diff_m, diff_se = mean_se(list(np.asarray(chosen_scores[rule]) - base_scores))
        gap = np.asarray(chosen_cv[rule]) - chosen_scores[rule]
        counts = {p: picks[rule].count(p) for p in dict.fromkeys(picks[rule])}
        print(f"chosen by {rule:24s}: held-out {m:.4f} (se {se:.4f}); vs baseline "
              f"{diff_m:+.4f} (paired se {diff_se:.4f}), ratio {m / np.mean(base_scores):.3f}; "
              f"|cv-held| {np.mean(np.abs(gap)):.4f}, cv-held {np.mean(gap):+.4f}; "
              f"picks {counts}")
    print(f"noise floor of the default pick's |cv-held| from the held-out sample alone "
          f"(mean over splits of se * sqrt(2/pi)): {np.mean(chosen_floor):.4f}")
    if args.cv_repeats > 1:
        print()
        print_agreement(f"[cv] folds {config.cv.folds} x {args.cv_repeats} repeats "
                        "(CV estimate = mean over the repeats):", cv_repeated, held_scores)
        m, se = mean_se(repeated_pick)
        diff_m, diff_se = mean_se(list(np.asarray(repeated_pick) - base_scores))
        print(f"chosen by lowest-cv over {args.cv_repeats} repeats: held-out {m:.4f} "
              f"(se {se:.4f}); vs baseline {diff_m:+.4f} (paired se {diff_se:.4f}), ratio "
              f"{m / np.mean(base_scores):.3f}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
