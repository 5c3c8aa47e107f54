"""The comparison table of ensembles and blends, as CSV, Markdown and PNG plots."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from base.atomic import atomic_path
from base.figures import save_png
from ensembles.contact_sheet import write_contact_sheet
from ensembles.results import EnsembleResult
from ensembles.select import rank, uncertainties

logger = logging.getLogger(__name__)

COLUMNS = ["name", "kind", "backbones", "head", "metric", "cv_score", "cv_log_loss",
           "cv_log_loss_std",
           "cv_log_loss_clipped", "cv_se", "vs_best", "vs_best_se", "within_noise",
           "cv_accuracy", "clip", "fit_seconds", "reused"]
# How many decimals each float column prints with (the rest: 4).
DECIMALS = {"fit_seconds": 1}


def report_table(results: Sequence[EnsembleResult]) -> pd.DataFrame:
    """One row per result, best CV score first (`cv_score`: the competition's metric on
    the out-of-fold submitted values, in its direction), with each score's uncertainty:
    fold standard deviation, standard error, the paired difference to the best (in the
    metric's per-row loss) and its standard error, and `within_noise` where that difference
    is within one standard error. Log loss and accuracy columns are NaN for tag and value
    targets."""
    results = rank(results)
    noise = uncertainties(results)
    rows = [{
        "name": r.name, "kind": r.kind, "backbones": "+".join(r.backbones), "head": r.head,
        "metric": r.metric, "cv_score": r.cv_score, "cv_log_loss": r.cv_log_loss, "cv_log_loss_std": r.cv_log_loss_std,
        "cv_log_loss_clipped": r.cv_log_loss_clipped, "cv_se": noise[r.name].se,
        "vs_best": noise[r.name].vs_best, "vs_best_se": noise[r.name].vs_best_se,
        "within_noise": noise[r.name].within_noise, "cv_accuracy": r.cv_accuracy,
        "clip": "none" if r.clip is None else f"[{r.clip[0]:.6g}, {r.clip[1]:.6g}]",
        "fit_seconds": round(r.fit_seconds, 1), "reused": r.reused,
    } for r in results]
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table


def format_table(table: pd.DataFrame) -> str:
    """A Markdown table (what the CLI prints and report.md holds)."""
    def cell(column: str, value: object) -> str:
        if isinstance(value, (bool, np.bool_)):
            return "yes" if value else ""
        if isinstance(value, float):
            return f"{value:.{DECIMALS.get(column, 4)}f}"
        return str(value)

    lines = ["| " + " | ".join(table.columns) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(cell(c, v) for c, v in zip(table.columns, row)) + " |"
              for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def plot_history(result: EnsembleResult, path: Path) -> Path | None:
    """Training and validation loss/accuracy per epoch, one line per fold (Keras head)."""
    histories = [h for h in result.histories if h]
    if not histories:
        return None
    from matplotlib.figure import Figure  # not pyplot: base.figures

    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for fold, history in enumerate(histories):
            color = f"C{fold % 10}"
            if metric in history:
                epochs = np.arange(1, len(history[metric]) + 1)
                ax.plot(epochs, history[metric], color=color, label=f"fold {fold} train")
            if f"val_{metric}" in history:
                epochs = np.arange(1, len(history[f"val_{metric}"]) + 1)
                ax.plot(epochs, history[f"val_{metric}"], color=color, linestyle="--",
                        label=f"fold {fold} validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{result.name}: training (solid) and validation (dashed) per fold")
    return save_png(fig, path, dpi=80)


def has_class_probabilities(result: EnsembleResult) -> bool:
    """Whether `result` predicts class probabilities (what reliability diagrams and the
    log-loss contact sheet are about), not tags or values."""
    labels = np.asarray(result.oof_labels)
    return labels.ndim == 1 and labels.dtype.kind in "iu" \
        and result.oof_proba.shape[1] == len(result.classes)


def plot_reliability(result: EnsembleResult, path: Path, bins: int = 10) -> Path:
    """Out-of-fold reliability diagram: predicted probability vs observed frequency
    (binary: the positive class; multiclass: the top class's confidence vs correctness)."""
    from matplotlib.figure import Figure  # not pyplot: base.figures

    proba, labels = result.oof_proba, result.oof_labels
    if proba.shape[1] == 2:
        score, truth, what = proba[:, 1], labels == 1, f"P({result.classes[1]})"
    else:
        score = proba.max(axis=1)
        truth, what = np.argmax(proba, axis=1) == labels, "top-class confidence"
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(score, edges) - 1, 0, bins - 1)
    centers, freqs, counts = [], [], []
    for b in range(bins):
        mask = which == b
        if mask.any():
            centers.append(score[mask].mean())
            freqs.append(truth[mask].mean())
            counts.append(int(mask.sum()))
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    ax.plot(centers, freqs, marker="o", label="out of fold")
    for x, y, n in zip(centers, freqs, counts):
        ax.annotate(str(n), (x, y), fontsize=7, textcoords="offset points", xytext=(3, -9))
    ax.set_xlabel(f"predicted {what}")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"{result.name}: reliability (CV log loss {result.cv_log_loss:.4f})")
    ax.legend(loc="upper left")
    return save_png(fig, path, dpi=80)


def write_report(results: Sequence[EnsembleResult], ensembles_dir: Path,
                 image_paths: dict[str, Path] | None = None) -> dict[str, Path]:
    """Write report.csv, report.md, plots/<name>-{reliability,history}.png and, when the
    training photos are at hand (`image_paths`: id -> file), plots/costliest-<best>.png,
    the contact sheet of the best result's costliest out-of-fold photos.

    Returns:
        {"csv": path, "markdown": path, "<name>-reliability": path, ...}.
    """
    ensembles_dir = Path(ensembles_dir)
    plots = ensembles_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    table = report_table(results)
    paths: dict[str, Path] = {}
    csv_path = ensembles_dir / "report.csv"
    _atomic_write(csv_path, table.to_csv(index=False))
    paths["csv"] = csv_path
    md_path = ensembles_dir / "report.md"
    _atomic_write(md_path, "# Ensembles, sorted by CV score\n\n" + format_table(table) + "\n")
    paths["markdown"] = md_path
    for result in results:
        base = _safe(result.name)
        if has_class_probabilities(result):
            paths[f"{result.name}-reliability"] = plot_reliability(
                result, plots / f"{base}-reliability.png")
        history = plot_history(result, plots / f"{base}-history.png")
        if history:
            paths[f"{result.name}-history"] = history
    best = next((r for r in results if r.name == table["name"].iloc[0]), None)
    if image_paths and best is not None and has_class_probabilities(best):
        sheet = write_contact_sheet(best, image_paths, plots / f"costliest-{_safe(best.name)}.png")
        if sheet:
            paths["contact_sheet"] = sheet
    logger.info("report written to %s and %s (%d plots)", csv_path, md_path, len(paths) - 2)
    return paths
