"""Genuine ImageNet weights on genuine photos, through the harness's own code.

MobileNet-0.25's real weights from ../shared/weights, ~100 Kaggle Dogs vs. Cats photos,
features extracted by features/ and cross-validated by the logistic-regression head of
ensembles/. Random-init features score ~0.5 accuracy here, so >= 0.8 proves the weights
are loaded and the pipeline keeps images, ids and labels together.
"""

from __future__ import annotations

import os

import pytest

from ensembles.run import run_ensembles
from features.extract import extract_for_config
from harness.config import load_config
from tests.cli_runner import mobilenet_toml
from tests.shared_assets import shared_dir

PER_CLASS = 50


@pytest.mark.real_weights
@pytest.mark.slow
def test_mobilenet_imagenet_features_separate_real_cats_and_dogs(tmp_path):
    shared = shared_dir()
    photos = shared / "data" / "dogs-vs-cats-mini"
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "test").mkdir()
    # Symlinks: the genuine files, no copies; 1, 2, 10, ... order is exercised too.
    for kind in ("cat", "dog"):
        for number in range(PER_CLASS):
            name = f"{kind}.{number}.jpg"
            os.symlink(photos / "train" / name, data / "train" / name)
    for test_id in range(1, 11):
        os.symlink(photos / "test" / f"{test_id}.jpg", data / "test" / f"{test_id}.jpg")
    (data / "sample_submission.csv").write_text(
        "id,label\n" + "".join(f"{i},0.5\n" for i in range(1, 11)))
    config_path = tmp_path / "harness.toml"
    config_path.write_text(mobilenet_toml(
        f'competition = "dogs-vs-cats-redux-kernels-edition"\nworkspace = "{tmp_path / "ws"}"\n'
        f'data_dir = "{data}"', heads={"logreg": ""}, folds=5,
        weights=f'weights_dir = "{shared / "weights"}"'))
    config = load_config(config_path)
    report = extract_for_config(config, progress=False)
    result = report.result("mobilenet_025", "none")
    assert result.images == 2 * PER_CLASS + 10 and not result.skipped
    (scored,) = run_ensembles(config, progress=False)
    assert scored.cv_accuracy >= 0.8, scored
    assert scored.cv_log_loss < 0.6
