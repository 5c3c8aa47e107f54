"""Run the configured ensembles and blends: CV scores, clip bounds, saved predictions.

Only what changed runs again: each result is saved with a key made of its features'
identity (fingerprint, weights, ...), its parameters, the folds and the clip policy;
a saved result with the same key is reused. Blends' keys include their members' keys, so
changing one ensemble refits it and the blends that use it, nothing else.

Test predictions (config.cv.test_predictions):
    "refit" (the default): one more fit of the head on all training rows predicts the
        test set. It sees 100% of the data instead of (k-1)/k, which is what the seed
        recipe did and usually scores slightly better; it costs one extra fit.
    "fold-mean": the mean of the k fold models' test predictions; no extra fit, and a
        small variance reduction, but each model saw less data.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.base import clone
from tqdm.auto import tqdm

from base.errors import HarnessError
from competition.images import list_train_images, train_groups
from ensembles import cv
from ensembles.blend import blend, check_blend_params
from ensembles.calibrate import calibrate
from ensembles.data import FeatureMatrix, digest, feature_identity, load_matrix
from ensembles.decide import decide
from ensembles.finetune import check_images_device, check_maps_use, maps_source
from ensembles.finetune_images import finetune_input, image_matrix, images_head
from ensembles.presets import default_ensembles, resolve_preset
from ensembles.registry import check_target, head_params, linear_head, make_head
from ensembles.report import report_table, write_report
from ensembles.results import EnsembleResult, load_result, save_result, saved_key
from ensembles.run_params import (
    BLEND_RUN_PARAMS,
    ENSEMBLE_RUN_PARAMS,
    RunOptions,
    run_options,
)
from ensembles.settings import BlendConfig, EnsembleConfig, EnsemblesRun
from features.backbones import get_backbone
from features.weights import WeightsChoice, resolve_weights

logger = logging.getLogger(__name__)

# Bump when a change in this stage changes predictions, so old results are not reused.
ALGORITHM_VERSION = 4


def _ensemble_options(config: EnsemblesRun, ens: EnsembleConfig) -> RunOptions:
    """An ensemble's clip, clip prior and calibration ([submission] clip by default)."""
    return run_options(ens.params, ENSEMBLE_RUN_PARAMS, default_clip=config.submission.clip,
                       where=f"ensemble {ens.name!r}")


def _blend_options(config: EnsemblesRun, spec: BlendConfig) -> RunOptions:
    """A blend's clip and clip prior ([submission] clip by default)."""
    return run_options(spec.params, BLEND_RUN_PARAMS, default_clip=config.submission.clip,
                       where=f"blend {spec.name!r}")


def _clip_for(config: EnsemblesRun, options: RunOptions, labels: np.ndarray,
              oof: np.ndarray) -> tuple[float, float] | None:
    if not config.spec.scorer.clips or options.clip == "none":
        return None
    if options.clip == "auto":
        return cv.choose_clip(labels, oof, options.clip_prior)
    return options.clip


def _check_classes(matrix: FeatureMatrix, target: str, name: str) -> None:
    if target != "classes":
        return  # tags and values: checked when the image list was read
    labels = np.asarray(matrix.labels)
    if labels.ndim != 1 or (labels.dtype.kind == "f" and not np.all(labels == np.round(labels))):
        raise HarnessError(f"ensemble {name!r}: the training labels are not class indices; "
                           "rerun `harness features --force`")
    labels = matrix.labels = labels.astype(np.int64)
    counts = np.bincount(labels, minlength=len(matrix.classes))
    if np.count_nonzero(counts) < 2:
        raise HarnessError(f"ensemble {name!r}: the training set has a single class "
                           f"({len(matrix.labels)} rows); a classifier needs at least two")
    missing = [c for c, n in zip(matrix.classes, counts) if n == 0]
    if missing:
        raise HarnessError(f"ensemble {name!r}: classes {missing} have no training rows; "
                           "check the competition's classes or the training images")


def _prior_for_failed(failed: np.ndarray, proba: np.ndarray, labels: np.ndarray,
                      n_classes: int, name: str) -> np.ndarray:
    """Test rows whose image failed get the training prior instead of a guess: the class
    shares, each tag's share, or the mean value."""
    if failed.any():
        labels = np.asarray(labels)
        if proba.shape[1] != n_classes or labels.ndim == 2 or labels.dtype.kind == "f":
            prior = labels.mean(axis=0) if labels.ndim == 2 else np.full(proba.shape[1],
                                                                          labels.mean())
        else:
            prior = np.bincount(labels, minlength=n_classes) / len(labels)
        proba[failed] = prior
        logger.warning("%s: %d test images could not be read; they get the training class "
                       "prior %s", name, int(failed.sum()), np.round(prior, 4).tolist())
    return proba


def _without_excluded(train: FeatureMatrix, exclude: tuple[str, ...],
                      name: str) -> FeatureMatrix:
    """The training rows minus [cv] exclude_ids; an id that is not a training id fails."""
    if not exclude:
        return train
    unknown = sorted(set(exclude) - set(train.ids))
    if unknown:
        raise HarnessError(f"[cv] exclude_ids: {len(unknown)} id(s) are not training ids of "
                           f"ensemble {name!r} (e.g. {unknown[:3]}); use ids as the CSV and "
                           "the contact sheet show them")
    keep = ~np.isin(train.ids, np.asarray(exclude, dtype=object))
    logger.info("%s: %d training photos left out ([cv] exclude_ids)", name, int((~keep).sum()))
    return dataclasses.replace(train, ids=train.ids[keep], X=train.X[keep],
                               labels=train.labels[keep], failed=train.failed[keep])


def _outputs(config: EnsemblesRun, classes: tuple[str, ...]) -> int:
    """Columns of a head's predictions: one per class or tag, one for a value."""
    return 1 if config.spec.target == "value" else len(classes)


def _folds(config: EnsemblesRun, train: FeatureMatrix, name: str) -> np.ndarray:
    """The run's folds for these training rows, grouped when [cv] group_column is set."""
    groups = None
    if config.cv.group_column:
        images = list_train_images(config.spec, config.data_dir)
        by_id = dict(zip(images.ids, train_groups(config.spec, config.data_dir,
                                                  config.cv.group_column, images)))
        groups = np.asarray([by_id[i] for i in train.ids], dtype=object)
    return cv.make_folds(train.ids, train.labels, config.cv.folds, config.cv.seed,
                         what=f"ensemble {name!r}: training set", groups=groups)


def _fold_score(metric, labels: np.ndarray, submitted: np.ndarray) -> float:
    try:
        return float(metric.score(labels, submitted))
    except ValueError:  # e.g. AUC of a fold holding one class: undefined, not an error
        return float("nan")


def _scores(config: EnsemblesRun, options: RunOptions, labels: np.ndarray, oof: np.ndarray,
            folds: np.ndarray, n_classes: int) -> dict:
    """Every EnsembleResult score field of out-of-fold predictions `oof`: the clip bounds,
    the submitted values decided out of fold and the competition's metric on them, and
    for class targets log loss and accuracy, overall and per fold."""
    spec = config.spec
    metric = spec.scorer
    clip = _clip_for(config, options, labels, oof)
    submitted, decision = decide(metric, spec.target, labels, oof, folds, n_classes, clip)
    fold_ids = np.unique(folds)
    fold_scores = [_fold_score(metric, labels[folds == f], submitted[folds == f])
                   for f in fold_ids]
    nan = float("nan")
    scores = {"clip": clip, "cv_metric": float(metric.score(labels, submitted)),
              "oof_submitted": submitted,
              "decision": {"kind": decision.kind, "params": decision.params},
              "cv_log_loss": nan, "cv_log_loss_std": nan, "cv_log_loss_clipped": nan,
              "cv_accuracy": nan, "cv_accuracy_std": nan}
    extra = {"fold_scores": fold_scores}
    if spec.target == "classes":
        fold_ll = [cv.log_loss(labels[folds == f], oof[folds == f]) for f in fold_ids]
        fold_acc = [cv.accuracy(labels[folds == f], oof[folds == f]) for f in fold_ids]
        scores.update(cv_log_loss=cv.log_loss(labels, oof),
                      cv_log_loss_std=float(np.std(fold_ll)),
                      cv_log_loss_clipped=cv.log_loss(labels, cv.apply_clip(oof, clip)),
                      cv_accuracy=cv.accuracy(labels, oof),
                      cv_accuracy_std=float(np.std(fold_acc)))
        extra["fold_log_loss"] = fold_ll
    return {"scores": scores, "params": extra}


def _current_weights(config: EnsemblesRun, backbone: str) -> WeightsChoice | None:
    """The weights the config gives `backbone` now (None when it cannot say), so maps made
    with the same file elsewhere (another folder, another machine's shard) are accepted."""
    try:
        return resolve_weights(backbone, config.features, config.spec)
    except HarnessError:
        return None


def _fit_ensemble(config: EnsemblesRun, ens: EnsembleConfig, options: RunOptions, key: str,
                  progress: bool) -> EnsembleResult:
    start = time.perf_counter()
    features_dir = config.workspace.features_dir
    head = make_head(ens.head, ens.params, ensemble=ens.name, also=ENSEMBLE_RUN_PARAMS,
                     target=config.spec.target)
    source = finetune_input(ens.params) if ens.head == "finetune" else {}
    from_images = source.get("from") == "images"
    if ens.head == "finetune":  # before any maps are read: they can be gigabytes
        if from_images:
            check_images_device(features_dir, ens.backbones, head.epochs, ensemble=ens.name,
                                 allow_cpu=bool(ens.params.get("allow_cpu", False)))
            head = images_head(head, source["augment"])
        head.set_params(**maps_source(features_dir, ens.backbones, ens.tta, ensemble=ens.name,
                                      current=_current_weights(config, ens.backbones[0])))

    def load_split(split: str) -> FeatureMatrix:
        if from_images:  # the images' paths in the maps file's order, not the maps
            return image_matrix(config.spec, config.data_dir, features_dir, ens.backbones[0],
                                split, ensemble=ens.name)
        return load_matrix(features_dir, ens.backbones, ens.tta, split, ensemble=ens.name)

    train = load_split("train")
    train = _without_excluded(train, config.cv.exclude_ids, ens.name)
    _check_classes(train, config.spec.target, ens.name)
    k = _outputs(config, train.classes)
    folds = _folds(config, train, ens.name)
    fold_mean = config.cv.test_predictions == "fold-mean"
    test = load_split("test") if fold_mean else None
    out = cv.cross_validate(head, train.X, train.labels, folds, k, name=ens.name,
                            test_X=test.X if fold_mean else None, progress=progress)
    if fold_mean:
        test_proba = out.test
    else:
        model = clone(head)
        if "copy" in model.get_params():
            # The refit is the matrix's last use: standardising it in place saves a copy.
            model.set_params(copy=False)
        model.fit(train.X, train.labels)
        train.X = None  # free the training matrix before the test one is read
        test = load_split("test")
        test_proba = cv.predict_rows(model, test.X, np.arange(len(test.X)))
    oof, test_proba, calibrated = calibrate(options.calibrate, out.oof, test_proba,
                                            train.labels, folds)
    test_proba = _prior_for_failed(test.failed, test_proba, train.labels, k, ens.name)
    scored = _scores(config, options, train.labels, oof, folds, len(train.classes))
    fitted = {}
    if not fold_mean:
        for attribute, name in (("C_", "C_chosen"), ("alpha_", "alpha_chosen")):
            if getattr(model, attribute, None) is not None:
                fitted[name] = getattr(model, attribute)
    return EnsembleResult(
        name=ens.name, kind="ensemble", backbones=tuple(ens.backbones), head=ens.head,
        metric=config.spec.metric, **scored["scores"],
        fit_seconds=time.perf_counter() - start, reused=False,
        classes=tuple(train.classes), oof_ids=train.ids, oof_proba=oof,
        oof_labels=train.labels, folds=folds, test_ids=test.ids, test_proba=test_proba,
        test_failed=test.failed,
        params={**ens.params, "tta": ens.tta, **scored["params"], **calibrated, **fitted},
        histories=[h for h in out.histories if h], key=key,
    )


def _align(member: EnsembleResult, first: EnsembleResult, blend_name: str) -> EnsembleResult:
    """`member`'s predictions reordered to `first`'s ids; any id difference is an error."""
    for split in ("oof", "test"):
        a, b = getattr(first, f"{split}_ids"), getattr(member, f"{split}_ids")
        if len(a) != len(b) or set(a) != set(b):
            raise HarnessError(f"blend {blend_name!r}: members {first.name!r} and "
                               f"{member.name!r} predict different {split} ids "
                               f"({len(a)} vs {len(b)}); use ensembles over the same images")
    if member.classes != first.classes:
        raise HarnessError(f"blend {blend_name!r}: members {first.name!r} and {member.name!r} "
                           "have different classes")
    oof_pos = {key: i for i, key in enumerate(member.oof_ids)}
    test_pos = {key: i for i, key in enumerate(member.test_ids)}
    o = np.array([oof_pos[key] for key in first.oof_ids], dtype=np.int64)
    t = np.array([test_pos[key] for key in first.test_ids], dtype=np.int64)
    aligned = dataclasses.replace(member, oof_ids=first.oof_ids, oof_proba=member.oof_proba[o],
                                  oof_labels=member.oof_labels[o], folds=member.folds[o],
                                  test_ids=first.test_ids, test_proba=member.test_proba[t],
                                  test_failed=member.test_failed[t])
    if not np.array_equal(aligned.folds, first.folds):
        raise HarnessError(f"blend {blend_name!r}: members {first.name!r} and {member.name!r} "
                           "were scored on different folds; rerun `harness ensembles --force`")
    return aligned


def _fit_blend(config: EnsemblesRun, spec: BlendConfig, members: list[EnsembleResult],
               options: RunOptions, key: str) -> EnsembleResult:
    start = time.perf_counter()
    first = members[0]
    members = [first] + [_align(m, first, spec.name) for m in members[1:]]
    labels, folds = first.oof_labels, first.folds
    oof, test, info = blend(spec.method, spec.params, [m.oof_proba for m in members],
                            [m.test_proba for m in members], labels, folds,
                            target=config.spec.target)
    failed = np.logical_or.reduce([m.test_failed for m in members])
    test = _prior_for_failed(failed, test, labels, len(first.classes), spec.name)
    scored = _scores(config, options, labels, oof, folds, len(first.classes))
    backbones = tuple(dict.fromkeys(b for m in members for b in m.backbones))
    return EnsembleResult(
        name=spec.name, kind="blend", backbones=backbones, head=f"blend:{spec.method}",
        metric=config.spec.metric, **scored["scores"],
        fit_seconds=time.perf_counter() - start, reused=False,
        classes=first.classes, oof_ids=first.oof_ids, oof_proba=oof, oof_labels=labels,
        folds=folds, test_ids=first.test_ids, test_proba=test, test_failed=failed,
        params={**spec.params, "members": list(spec.members), **info, **scored["params"]},
        key=key,
    )


def _blend_order(blends: dict[str, BlendConfig], ensembles: dict[str, EnsembleConfig],
                 wanted: list[str]) -> list[str]:
    """Blends in dependency order (members first); unknown members and cycles fail."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join(path[path.index(name):] + [name])
            raise HarnessError(f"blends form a cycle: {cycle}; a blend may use other blends "
                               "but never itself")
        state[name] = "visiting"
        for member in blends[name].members:
            if member in blends:
                visit(member, path + [name])
            elif member not in ensembles:
                raise HarnessError(
                    f"blend {name!r}: unknown member {member!r}; known ensembles: "
                    f"{', '.join(sorted(ensembles))}; blends: {', '.join(sorted(blends))}")
        state[name] = "done"
        order.append(name)

    for name in wanted:
        visit(name, [])
    return order


def _closure(names: Sequence[str], ensembles: dict, blends: dict) -> tuple[list, list]:
    """The ensembles and blends needed for `names` (blends pull in their members)."""
    known = sorted(ensembles) + sorted(blends)
    want_e: list[str] = []
    want_b: list[str] = []
    stack = [(name, None) for name in names]
    seen: set[str] = set()
    while stack:
        name, parent = stack.pop(0)
        if name in seen:
            continue
        seen.add(name)
        if name in ensembles:
            want_e.append(name)
        elif name in blends:
            want_b.append(name)
            stack.extend((member, name) for member in blends[name].members)
        elif parent is None:  # unknown blend members are reported by _blend_order
            raise HarnessError(f"unknown ensemble or blend {name!r}; known: "
                               f"{', '.join(known) or 'none'}")
    return [n for n in ensembles if n in want_e], [n for n in blends if n in want_b]


def _train_image_paths(config: EnsemblesRun) -> dict[str, Path]:
    """Training id -> photo, for the contact sheet; {} when the photos are not at hand."""
    try:
        train = list_train_images(config.spec, config.data_dir)
    except HarnessError as exc:
        logger.info("no contact sheet: %s", exc)
        return {}
    return dict(zip(train.ids, train.paths))


def configured_ensembles(config: EnsemblesRun) -> dict[str, EnsembleConfig]:
    """The config's ensembles with presets resolved, or the default set when it has none."""
    source = config.ensembles or default_ensembles(config.features.backbones,
                                                   config.features.tta,
                                                   linear=linear_head(config.spec.target))
    return {name: resolve_preset(e) for name, e in source.items()}


def check_ensembles(config: EnsemblesRun, names: Sequence[str] | None = None
                    ) -> tuple[dict[str, EnsembleConfig], dict[str, BlendConfig], list[str],
                               list[str]]:
    """Check every ensemble and blend the run would need, without reading any feature.

    Called before extraction (`harness features`, `submit`), so a typo in a name, a head
    parameter, a blend method or a clip setting costs seconds, not an extraction, and by
    `run_ensembles` itself.

    Returns:
        (ensembles with presets resolved, blends, the wanted ensembles' names, the wanted
        blends' names in dependency order).

    Raises:
        HarnessError: unknown names (ensembles, blends, members, backbones, presets),
            blend cycles, unknown or bad parameters.
    """
    ensembles = configured_ensembles(config)
    blends = dict(config.blends)
    wanted_e, wanted_b = _closure(list(names) if names else list(ensembles) + list(blends),
                                  ensembles, blends)
    order_b = _blend_order(blends, ensembles, wanted_b)
    for name in wanted_e:
        ens = ensembles[name]
        for backbone in ens.backbones:
            if backbone in config.features.backbones:
                continue  # selected: the features stage knows it (or says it does not)
            try:  # an unknown name is a typo, not merely "not selected"
                get_backbone(backbone)
            except HarnessError as exc:
                raise HarnessError(f"ensemble {name!r}: {exc}") from None
        head_params(ens.head, ens.params, ensemble=name, also=ENSEMBLE_RUN_PARAMS)
        check_target(ens.head, config.spec.target, ensemble=name)
        check_maps_use(ens.head, ens.backbones, ens.tta, ensemble=name, params=ens.params)
        if _ensemble_options(config, ens).calibrate != "none" \
                and config.spec.target != "classes":
            raise HarnessError(f"ensemble {name!r}: calibrate applies to class "
                               f"probabilities; this competition's target is "
                               f"{config.spec.target}: remove it")
    for name in wanted_b:
        spec = blends[name]
        check_blend_params(name, spec.method, spec.params, also=BLEND_RUN_PARAMS,
                           target=config.spec.target)
        _blend_options(config, spec)
    return ensembles, blends, wanted_e, order_b


def run_ensembles(config: EnsemblesRun, *, names: Sequence[str] | None = None, force: bool = False,
                  progress: bool = True) -> list[EnsembleResult]:
    """Cross-validate the configured ensembles and blends; save and report them.

    Ensembles whose backbones are not all in config.features.backbones are skipped (logged);
    blends whose members are skipped are skipped too. Everything is validated before any
    fitting starts; each result is saved as soon as it is computed, so a later error loses
    nothing. Writes report.csv, report.md and plots/ in the workspace's ensembles folder
    and logs the table.

    Args:
        config: The loaded configuration.
        names: Ensembles and blends to run (their members come along); None = all.
        force: Refit even when saved predictions are still valid.
        progress: Show tqdm progress bars.

    Returns:
        One EnsembleResult per ensemble and blend run or reused, best CV score first.

    Raises:
        HarnessError: bad parameters, unknown names, blend cycles, missing features,
            mismatched ids, a single-class training set, or nothing left to run.
    """
    ensembles, blends, wanted_e, order_b = check_ensembles(config, names)
    available = set(config.features.backbones)
    skipped: set[str] = set()
    for name in wanted_e:
        missing = [b for b in ensembles[name].backbones if b not in available]
        if missing:
            skipped.add(name)
            logger.info("skipping ensemble %s: backbones %s are not among the selected "
                        "backbones (%s)", name, missing, ", ".join(config.features.backbones))
    for name in order_b:
        if any(m in skipped for m in blends[name].members):
            skipped.add(name)
            logger.info("skipping blend %s: it uses a skipped member", name)
    run_e = [n for n in wanted_e if n not in skipped]
    run_b = [n for n in order_b if n not in skipped]
    if not run_e and not run_b:
        raise HarnessError(
            f"no ensemble can run with backbones {', '.join(config.features.backbones)}: "
            f"{', '.join(sorted(skipped)) or 'none configured'} need others; add backbones "
            "or define an ensemble over these")

    # Compute the keys (everything was checked above) before fitting anything.
    keys: dict[str, str] = {}
    options: dict[str, RunOptions] = {}
    folds_id = {"folds": config.cv.folds, "seed": config.cv.seed,
                "test_predictions": config.cv.test_predictions}
    if config.cv.exclude_ids:
        folds_id["exclude_ids"] = list(config.cv.exclude_ids)
    if config.cv.group_column:
        folds_id["group_column"] = config.cv.group_column
    for name in run_e:
        ens = ensembles[name]
        own = head_params(ens.head, ens.params, ensemble=name, also=ENSEMBLE_RUN_PARAMS)
        if ens.head == "finetune":  # its input is a run parameter, not the head's
            own = {**own, **finetune_input(ens.params)}
        options[name] = _ensemble_options(config, ens)
        identity = feature_identity(config.workspace.features_dir, ens.backbones, ens.tta,
                                    ensemble=name)
        keys[name] = digest({"v": ALGORITHM_VERSION, "features": identity, "head": ens.head,
                             "params": own, "tta": ens.tta, "cv": folds_id,
                             "clip": options[name].clip, "metric": config.spec.metric,
                             "task": config.spec.task,
                             "clip_prior": options[name].clip_prior,
                             "calibrate": options[name].calibrate})
    for name in run_b:
        spec = blends[name]
        options[name] = _blend_options(config, spec)
        keys[name] = digest({"v": ALGORITHM_VERSION, "method": spec.method,
                             "params": spec.params, "members": [keys[m] for m in spec.members],
                             "clip": options[name].clip, "metric": config.spec.metric,
                             "clip_prior": options[name].clip_prior})

    out_dir = config.workspace.ensembles_dir
    results: dict[str, EnsembleResult] = {}
    for name in tqdm(run_e + run_b, desc="ensembles", unit="ens", disable=not progress):
        if not force and saved_key(out_dir, name) == keys[name]:
            results[name] = load_result(out_dir, name)
            logger.info("%s: unchanged, reusing saved predictions", name)
            continue
        if name in run_e:
            result = _fit_ensemble(config, ensembles[name], options[name], keys[name],
                                   progress)
        else:
            members = [results[m] for m in blends[name].members]
            result = _fit_blend(config, blends[name], members, options[name], keys[name])
        save_result(out_dir, result)
        results[name] = result
        logger.info("%s: CV %s %.4f, %.1f s", name, config.spec.metric, result.cv_score,
                    result.fit_seconds)
    ordered = list(results.values())
    table = report_table(ordered)
    if names:
        # A partial run must not replace the full comparison with a few rows.
        logger.info("report.csv/md not rewritten: only %s ran", ", ".join(results))
    else:
        write_report(ordered, out_dir, image_paths=_train_image_paths(config))
    by_name = {r.name: r for r in ordered}
    return [by_name[n] for n in table["name"]]
