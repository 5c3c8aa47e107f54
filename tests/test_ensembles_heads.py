"""The heads wear scikit-learn's estimator contract and validate their parameters."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from base.errors import HarnessError
from ensembles.heads import DropoutHead, LogisticHead, column_stats
from ensembles.registry import make_head
from ensembles.run_params import ENSEMBLE_RUN_PARAMS


def blobs(n=150, d=12, k=2, seed=0, gap=3.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    means = rng.normal(0, gap, (k, d))
    X = (means[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    return X, y


def test_logistic_head_contract_and_string_classes():
    X, y = blobs()
    labels = np.where(y == 1, "dog", "cat")
    head = LogisticHead(C=0.5)
    assert head.get_params()["C"] == 0.5 and not hasattr(head, "classes_")
    assert head.fit(X, labels) is head
    assert head.classes_.tolist() == ["cat", "dog"] and head.n_features_in_ == 12
    proba = head.predict_proba(X)
    assert proba.shape == (150, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.mean(head.predict(X) == labels) > 0.95
    # column order follows classes_: P(dog) is high exactly where the label is dog
    assert proba[labels == "dog", 1].mean() > 0.9


def test_feature_count_error_names_the_counts():
    X, y = blobs(d=8)
    head = LogisticHead().fit(X, y)
    with pytest.raises(ValueError, match="X has 6 features, but LogisticHead is expecting 8 features"):
        head.predict_proba(X[:, :6])


def test_logistic_copy_false_standardises_in_place_and_copy_true_does_not():
    X, y = blobs()
    kept = X.copy()
    LogisticHead(scale="standard").fit(X, y)
    np.testing.assert_array_equal(X, kept)
    LogisticHead(scale="standard", copy=False).fit(X, y)
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-4)
    # both standardise the same way, so they predict the same
    a = LogisticHead(scale="standard").fit(kept, y).predict_proba(kept)
    b = clone(LogisticHead(scale="standard")).fit(kept.copy(), y).predict_proba(kept)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_c_grid_chooses_from_the_grid():
    X, y = blobs(gap=0.4)
    head = LogisticHead(C=[0.001, 1.0]).fit(X, y)
    assert head.C_ in (0.001, 1.0)


def test_column_stats_match_numpy_on_rows():
    X, _ = blobs(n=50)
    rows = np.arange(0, 50, 3)
    mean, scale = column_stats(X, rows, chunk=7)
    np.testing.assert_allclose(mean, X[rows].mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scale, X[rows].std(axis=0), rtol=1e-4)


@pytest.mark.slow
def test_dropout_head_binary_learns_and_records_history():
    X, y = blobs(n=200, d=16)
    head = DropoutHead(epochs=6, batch_size=32, validation_split=0.2, early_stopping=3,
                       standardize=True, optimizer="adam", learning_rate=0.05)
    assert head.fit(X, y) is head
    proba = head.predict_proba(X)
    assert proba.shape == (200, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert np.mean(proba.argmax(axis=1) == y) > 0.9
    assert set(head.history_) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert 1 <= head.n_epochs_ <= 6
    with pytest.raises(ValueError, match="X has 10 features, but DropoutHead is expecting 16 features"):
        head.predict_proba(X[:, :10])


@pytest.mark.slow
def test_dropout_head_multiclass_softmax_and_monitor():
    X, y = blobs(n=180, d=10, k=3)
    head = DropoutHead(epochs=3, batch_size=32, optimizer="adam", learning_rate=0.05)
    head.fit(X[:150], y[:150], monitor=(X[150:], y[150:]))
    proba = head.predict_proba(X)
    assert proba.shape == (180, 3) and head.classes_.tolist() == [0, 1, 2]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert head.model_.layers[-1].units == 3
    assert len(head.history_["val_loss"]) == 3


@pytest.mark.parametrize(("k", "standardize"), [(2, True), (3, True), (2, False)])
def test_dropout_predictions_are_the_keras_model_in_float64_whatever_the_row_order(
        k, standardize):
    X, y = blobs(n=120, d=9, k=k)
    head = DropoutHead(epochs=3, batch_size=16, standardize=standardize,
                       learning_rate=0.05).fit(X, y)
    proba = head.predict_proba(X)
    # The same network as Keras computes it (float32): only float32 rounding apart.
    keras_out = np.asarray(head.model_(X, training=False), np.float64)
    expected = np.hstack([1 - keras_out, keras_out]) if k == 2 else keras_out
    np.testing.assert_allclose(proba, expected, atol=1e-6)
    # A row's prediction does not depend on which rows come with it, or where.
    order = np.random.default_rng(1).permutation(len(X))
    np.testing.assert_allclose(head.predict_proba(X[order]), proba[order], rtol=0, atol=1e-13)
    np.testing.assert_allclose(head.predict_proba(X[7:8])[0], proba[7], rtol=0, atol=1e-13)


def test_make_head_validates_params():
    # The run stage's own keys (clip, ...) come along in the same table: skipped, and
    # listed with the head's when a key is misspelt.
    head = make_head("dropout", {"dropout": 0.3, "epochs": 2, "clip": [0.01, 0.99]},
                     ensemble="mine", also=ENSEMBLE_RUN_PARAMS)
    assert isinstance(head, DropoutHead) and head.dropout == 0.3 and head.epochs == 2
    with pytest.raises(HarnessError, match=r"ensemble 'mine': unknown parameter 'epoch' for "
                                           r"head 'dropout'; known: .*calibrate, clip.*epochs"):
        make_head("dropout", {"epoch": 3}, ensemble="mine", also=ENSEMBLE_RUN_PARAMS)
    with pytest.raises(HarnessError, match="unknown parameter 'clip' for head 'dropout'"):
        make_head("dropout", {"clip": [0.01, 0.99]}, ensemble="mine")
    with pytest.raises(HarnessError, match="ensemble 'x': C = -1 must be a positive"):
        make_head("logreg", {"C": -1}, ensemble="x")
    with pytest.raises(HarnessError, match="early_stopping needs a validation_split"):
        make_head("dropout", {"early_stopping": 2, "validation_split": 0.0}, ensemble="x")
    with pytest.raises(HarnessError, match="unknown head 'svm'"):
        make_head("svm", {}, ensemble="x")


def test_logistic_fit_on_rows_equals_fit_on_copied_rows_and_leaves_x_alone():
    X, y = blobs(n=160, d=10)
    rows = np.random.default_rng(1).permutation(160)[:110]  # unsorted, like any caller's
    kept = X.copy()
    by_rows = LogisticHead(scale="standard", copy=False).fit(X, y[rows], rows=rows)
    np.testing.assert_array_equal(X, kept)  # the head standardised its own copy only
    copied = LogisticHead(scale="standard").fit(X[rows], y[rows])
    np.testing.assert_allclose(by_rows.mean_, copied.mean_, rtol=1e-6)
    np.testing.assert_allclose(by_rows.predict_proba(X), copied.predict_proba(X), atol=1e-6)
    with pytest.raises(ValueError, match="rows index 160 rows of X but range from 0 to 160"):
        LogisticHead().fit(X, y[:3], rows=[0, 5, 160])
    with pytest.raises(ValueError, match=r"y has shape \(160,\), but X has 110 rows"):
        LogisticHead().fit(X, y, rows=rows)


@pytest.mark.slow
def test_dropout_fit_on_rows_equals_fit_on_copied_rows():
    X, y = blobs(n=200, d=12, gap=1.0)
    rows = np.random.default_rng(2).permutation(200)[:150]
    params = {"epochs": 4, "batch_size": 16, "validation_split": 0.2, "early_stopping": 2}
    by_rows = DropoutHead(**params).fit(X, y[rows], rows=rows)
    copied = DropoutHead(**params).fit(X[rows], y[rows])
    assert by_rows.n_features_in_ == 12 and by_rows.n_epochs_ == copied.n_epochs_
    np.testing.assert_allclose(by_rows.history_["loss"], copied.history_["loss"], rtol=1e-5)
    np.testing.assert_allclose(by_rows.predict_proba(X), copied.predict_proba(X), atol=1e-5)


@pytest.mark.slow
def test_dropout_monitor_reads_held_rows_without_a_copy():
    X, y = blobs(n=180, d=10)
    held = np.arange(0, 180, 4)
    train = np.setdiff1d(np.arange(180), held)
    params = {"epochs": 3, "batch_size": 32, "validation_split": 0.0, "early_stopping": 0}
    a = DropoutHead(**params).fit(X, y[train], rows=train, monitor=(X, y[held], held))
    b = DropoutHead(**params).fit(X[train], y[train], monitor=(X[held], y[held]))
    assert len(a.history_["val_loss"]) == 3
    np.testing.assert_allclose(a.history_["val_loss"], b.history_["val_loss"], rtol=1e-5)


@pytest.mark.slow
def test_dropout_fit_does_not_keep_its_training_data_alive():
    # tf.data's generator registry outlives the fit; a kept training array would grow the
    # process by one fold copy per cross-validation fold (seen at 6x the matrix).
    import gc
    import weakref

    X, y = blobs(n=120, d=8)
    copy = X.copy()
    alive = weakref.ref(copy)
    head = DropoutHead(epochs=2, batch_size=32).fit(copy, y)
    del copy
    gc.collect()
    assert alive() is None
    assert head.predict_proba(X).shape == (120, 2)  # the model itself survives
    # nor the matrix a learning-curve monitor read
    shown = X.copy()
    alive = weakref.ref(shown)
    DropoutHead(epochs=2, validation_split=0.0, early_stopping=0).fit(
        X[:100], y[:100], monitor=(shown, y[100:], np.arange(100, 120)))
    del shown
    gc.collect()
    assert alive() is None


def test_dropout_head_on_too_few_rows_for_a_hold_out_trains_on_all(caplog):
    # 4 rows, 2 classes: a 10% stratified hold-out is impossible (a fold of a tiny competition).
    X = np.array([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.1]], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    head = DropoutHead(epochs=2, batch_size=2).fit(X, y)
    assert "too few for a 10% validation split" in caplog.text
    assert len(head.history_["loss"]) == 2 and "val_loss" not in head.history_
    assert head.predict_proba(X).shape == (4, 2)


def test_column_stats_keep_tiny_but_varying_columns():
    # Random-init backbones give features ~1e-17 that still differ between images.
    X = np.array([[1e-17, 5.0], [3e-17, 5.0], [2e-17, 5.0]], dtype=np.float32)
    _, scale = column_stats(X)
    assert scale[0] == pytest.approx(np.std(X[:, 0].astype(np.float64)), rel=1e-3)
    assert scale[1] == 1.0  # constant column: never divided by zero


def test_standardised_dropout_head_is_blind_to_feature_scale():
    # Keras' Normalization floors the deviation at 1e-7 and would erase features ~1e-17.
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    X = (rng.normal(size=(120, 64)) + y[:, None] * 0.5).astype(np.float32)
    unit = DropoutHead(epochs=5).fit(X, y).predict_proba(X)
    tiny = DropoutHead(epochs=5).fit(X * np.float32(1e-17), y).predict_proba(
        X * np.float32(1e-17))
    np.testing.assert_allclose(tiny, unit, atol=1e-4)
    assert abs(unit[:, 1] - 0.5).max() > 0.05  # it learned something, not a constant


def test_c_grid_on_too_few_rows_per_class_falls_back_to_the_middle_c(caplog):
    X = np.array([[0.0], [0.1], [1.0], [1.1], [2.0]], dtype=np.float32)
    y = np.array([0, 0, 1, 1, 2])  # one row of class 2: no stratified inner CV possible
    head = LogisticHead(C=[0.1, 1.0, 10.0]).fit(X, y)
    assert head.C_ == 1.0 and "too few rows per class" in caplog.text
    assert head.predict_proba(X).shape == (5, 3)


def test_early_stopping_alone_watches_the_default_validation_split():
    assert make_head("dropout", {"early_stopping": 10}, ensemble="x").validation_split > 0
    with pytest.raises(HarnessError, match="early_stopping needs a validation_split"):
        make_head("dropout", {"validation_split": 0.0}, ensemble="x")
