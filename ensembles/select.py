"""Which result becomes the submission, and how sure the CV table is about its ranking.

Out-of-fold scores on a training set of a few thousand photos are noisy: two ensembles a
few thousandths of a nat apart usually cannot be told apart, and the lowest CV mean is
often the most overconfident model, which a Kaggle test set punishes (bench/quality.py
measures this). So every score comes with its uncertainty, the results within noise of
the best are marked, and the pick is a rule the benchmark showed to generalise.

The noise of a difference is measured on the rows both results predicted, paired: the
standard error of the mean per-row loss difference. Pairing removes what both models
share (the hard photos), so it is far tighter than comparing two fold standard deviations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from competition.metrics import get_metric
from ensembles.cv import accuracy, apply_clip, choose_clip, log_loss
from ensembles.results import EnsembleResult

# How many paired standard errors from the best still count as "within noise".
NOISE_SE = 1.0
RULES = ("lowest-cv", "within-noise-smoothest", "within-noise-mean")
DEFAULT_RULE = "within-noise-smoothest"


@dataclass(frozen=True)
class Uncertainty:
    """The uncertainty of one result's CV score.

    Attributes:
        fold_std: Standard deviation of the per-fold scores.
        se: Standard error of the CV mean (per-row losses: std / sqrt(n)).
        vs_best: Mean per-row loss difference to the best result (0 for the best itself).
        vs_best_se: Paired standard error of that difference.
        within_noise: True when vs_best <= NOISE_SE * vs_best_se.
    """

    fold_std: float
    se: float
    vs_best: float
    vs_best_se: float
    within_noise: bool


def _row_losses(result: EnsembleResult) -> np.ndarray | None:
    """Per-row out-of-fold loss of the submitted values (None: the metric does not split
    into rows)."""
    row_loss = get_metric(result.metric).row_loss
    if row_loss is None:
        return None
    return row_loss(result.oof_labels, result.oof_submitted)


def _aligned_losses(results: Sequence[EnsembleResult]) -> list[np.ndarray]:
    """Each result's per-row losses in the first result's id order."""
    first = results[0].oof_ids
    out = []
    for result in results:
        losses = _row_losses(result)
        if not np.array_equal(result.oof_ids, first):
            position = {key: i for i, key in enumerate(result.oof_ids)}
            losses = losses[[position[key] for key in first]]
        out.append(losses)
    return out


def rank(results: Sequence[EnsembleResult]) -> list[EnsembleResult]:
    """Best CV score first (the metric's direction), ties by log loss then name: the one
    order the report table, the selection rules and `harness upload` use."""
    if not results:
        return []
    higher_better = get_metric(results[0].metric).higher_is_better
    # Ties (common with accuracy on small sets) go to the lower log loss, then the name.
    return sorted(results, key=lambda r: (-r.cv_score if higher_better else r.cv_score,
                                          0.0 if np.isnan(r.cv_log_loss) else r.cv_log_loss,
                                          r.name))


def uncertainties(results: Sequence[EnsembleResult]) -> dict[str, Uncertainty]:
    """Fold std, standard error and the paired difference to the best, per result name.

    Results over different training rows (not comparable row by row) get no pairing:
    their `vs_best_se` is NaN and they are not marked within noise; neither are results
    of a metric that does not split into rows (kappa, F2: only their fold spread is known).
    """
    if not results:
        return {}
    if get_metric(results[0].metric).row_loss is None:
        nan = float("nan")
        return {r.name: Uncertainty(_fold_std(r), nan, nan, nan, False) for r in results}
    comparable = [r for r in results if len(r.oof_ids) == len(results[0].oof_ids)
                  and set(r.oof_ids) == set(results[0].oof_ids)]
    losses = dict(zip((r.name for r in comparable), _aligned_losses(comparable)))
    means = {name: float(v.mean()) for name, v in losses.items()}
    best = min(means, key=means.get) if means else None
    out = {}
    for result in results:
        fold_std = _fold_std(result)
        if result.name not in losses:
            out[result.name] = Uncertainty(fold_std, float("nan"), float("nan"),
                                           float("nan"), False)
            continue
        own = losses[result.name]
        diff = own - losses[best]
        se = float(own.std(ddof=1) / np.sqrt(len(own))) if len(own) > 1 else 0.0
        diff_se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        out[result.name] = Uncertainty(fold_std, se, float(diff.mean()), diff_se,
                                       float(diff.mean()) <= NOISE_SE * diff_se)
    return out


def _fold_std(result: EnsembleResult) -> float:
    """The spread of the per-fold scores (log loss where known, else the metric)."""
    folds = result.params.get("fold_log_loss") or result.params.get("fold_scores") or []
    return float(np.nanstd(folds)) if len(folds) else float("nan")


def _confidence(result: EnsembleResult) -> float:
    """Mean out-of-fold probability of the predicted class (clipped as submitted): the
    lower, the less the model bets. Used to prefer the most cautious of equals."""
    return float(np.mean(np.max(apply_clip(result.oof_proba, result.clip), axis=1)))


def _reordered(result: EnsembleResult, oof_ids: np.ndarray,
               test_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`result`'s out-of-fold and test probabilities in the given id orders."""
    def take(ids, proba, wanted):
        if np.array_equal(ids, wanted):
            return proba
        position = {key: i for i, key in enumerate(ids)}
        return proba[[position[key] for key in wanted]]

    return (take(result.oof_ids, result.oof_proba, oof_ids),
            take(result.test_ids, result.test_proba, test_ids))


def mean_of(results: Sequence[EnsembleResult], name: str) -> EnsembleResult:
    """The plain mean of several results' probabilities, scored like a blend; its clip
    bounds are chosen on its own out-of-fold predictions (when every member clips)."""
    first = results[0]
    pairs = [_reordered(r, first.oof_ids, first.test_ids) for r in results]
    oof = np.mean([o for o, _ in pairs], axis=0)
    test = np.mean([t for _, t in pairs], axis=0)
    labels = first.oof_labels
    clip = None if any(r.clip is None for r in results) else choose_clip(labels, oof)
    folds = first.folds
    fold_ll = [log_loss(labels[folds == f], oof[folds == f]) for f in np.unique(folds)]
    submitted = apply_clip(oof, clip)
    return dataclasses.replace(
        first, name=name, kind="blend", head="blend:mean",
        cv_metric=get_metric(first.metric).score(labels, submitted), oof_submitted=submitted,
        backbones=tuple(dict.fromkeys(b for r in results for b in r.backbones)),
        cv_log_loss=log_loss(labels, oof), cv_log_loss_std=float(np.std(fold_ll)),
        cv_log_loss_clipped=log_loss(labels, apply_clip(oof, clip)),
        cv_accuracy=accuracy(labels, oof), clip=clip, oof_proba=oof, test_proba=test,
        test_failed=np.logical_or.reduce([r.test_failed for r in results]),
        params={"members": [r.name for r in results], "fold_log_loss": fold_ll},
        histories=[], key="+".join(r.key for r in results), reused=False)


def choose_submission(results: Sequence[EnsembleResult],
                      rule: str = DEFAULT_RULE) -> tuple[EnsembleResult, str]:
    """The result to submit, and a sentence saying which rule chose it.

    Rules:
        "lowest-cv": the best CV score (log loss after clipping, or accuracy).
        "within-noise-smoothest": among the results within noise of the best CV score
            (paired standard error, see module doc), the one whose out-of-fold
            predictions are least confident.
        "within-noise-mean": the mean of every result within noise of the best CV score
            (named `within-noise-mean`); the best alone when nothing else is. Averaging
            models the CV cannot tell apart keeps what each gets right and dilutes
            what one alone gets confidently wrong.

    Raises:
        ValueError: no results, or an unknown rule.
    """
    if not results:
        raise ValueError("no results to choose from")
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; known: {', '.join(RULES)}")
    ranked = rank(results)
    best = ranked[0]
    if rule == "lowest-cv" or not get_metric(results[0].metric).clips:
        # The within-noise rules weigh how sure probabilities are: log loss only.
        return best, f"best CV score ({best.cv_score:.4f})"
    noise = uncertainties(ranked)
    equals = [r for r in ranked if noise[r.name].within_noise]
    if rule == "within-noise-mean":
        if len(equals) == 1:
            return best, f"best CV score ({best.cv_score:.4f}); nothing else within noise"
        mean = mean_of(equals, "within-noise-mean")
        return mean, (f"mean of the {len(equals)} results within noise of the best CV score "
                      f"({', '.join(r.name for r in equals)}; CV {mean.cv_score:.4f})")
    pick = min(equals, key=lambda r: (_confidence(r), r.name))
    if pick is best:
        return pick, (f"best CV score ({best.cv_score:.4f}); {len(equals) - 1} other(s) "
                      "within noise are more confident")
    return pick, (f"least confident of the {len(equals)} results within noise of the best "
                  f"CV score ({pick.cv_score:.4f} vs best {best.name} {best.cv_score:.4f})")
