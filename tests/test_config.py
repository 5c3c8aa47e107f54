"""harness/config.py (and the stages' settings): defaults, overrides, and typos that fail instead of defaulting."""

from __future__ import annotations

from pathlib import Path

import pytest

from base.errors import HarnessError
from harness.config import load_config

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path, text):
    path = tmp_path / "h.toml"
    path.write_text(text)
    return path


def test_shipped_config_runs_the_demo_with_the_seed_ensembles():
    config = load_config(REPO / "harness.toml")
    assert config.spec.slug == "demo"
    assert config.features.backbones == ("resnet50", "inception_v3", "xception")
    assert {"all3-dropout", "all3-logreg"} <= set(config.ensembles)
    assert config.ensembles["all3-dropout"].head == "dropout"
    assert config.workspace.root == REPO / "work" / "demo"
    assert config.data_dir == REPO / "work" / "demo" / "data"


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    config = load_config(_write(tmp_path, 'competition = "dogs-vs-cats"\ndata_dir = "d"\n'
                                          '[features]\nweights_dir = "w"\n'))
    assert config.data_dir == tmp_path / "d"
    assert config.features.weights_dir == tmp_path / "w"
    assert config.workspace.root == tmp_path / "work" / "dogs-vs-cats"


def test_command_line_overrides_win(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, 'competition = "demo"\ndata_dir = "demo-data"\n')
    config = load_config(path, {"competition": "dogs-vs-cats-redux-kernels-edition",
                                "backbones": "xception,mobilenet_025", "weights_dir": "w",
                                "data_dir": None})
    assert config.spec.slug == "dogs-vs-cats-redux-kernels-edition"
    # The file's data_dir belongs to the file's competition, not to the overriding one.
    assert config.data_dir == tmp_path / "work" / config.spec.slug / "data"
    assert config.features.backbones == ("xception", "mobilenet_025")
    assert config.features.weights_dir == tmp_path / "w"


def test_command_line_weights_beat_the_files_weights_folder(tmp_path):
    """--weights FILE used to be ignored when the config set weights_dir: its file won."""
    from features.weights import resolve_weights

    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "mobilenet_2_5_224_tf_no_top.h5").write_bytes(b"folder file")
    mine = tmp_path / "mine.h5"
    mine.write_bytes(b"my file")
    path = _write(tmp_path, 'competition = "dogs-vs-cats"\n[features]\nweights_dir = "w"\n'
                            '[features.weights_for]\nmobilenet_025 = "w/mobilenet_2_5_224_tf_no_top.h5"\n')
    config = load_config(path, {"weights": str(mine)})
    assert config.features.weights_dir is None and not config.features.weights_for
    assert resolve_weights("mobilenet_025", config.features, config.spec).keras_arg == str(mine)
    assert resolve_weights("mobilenet_025", load_config(path, {"weights": "none"}).features,
                           config.spec).keras_arg is None
    with pytest.raises(HarnessError, match=r"--weights none and --weights-dir .* give one"):
        load_config(path, {"weights": "none", "weights_dir": str(folder)})


def test_ensembles_blends_and_feature_sets(tmp_path):
    config = load_config(_write(tmp_path, """
[features]
backbones = ["xception", "resnet50"]
[ensembles.a]
backbones = ["xception"]
head = "logreg"
C = [0.1, 1.0]
[ensembles.b]
backbones = ["resnet50", "xception"]
head = "dropout"
tta = "flip"
[blends.ab]
members = ["a", "b"]
method = "weights"
"""))
    assert config.ensembles["a"].params == {"C": [0.1, 1.0]}
    assert config.blends["ab"].members == ("a", "b") and config.blends["ab"].method == "weights"
    assert config.feature_sets() == [("xception", "none"), ("resnet50", "none"),
                                     ("resnet50", "flip"), ("xception", "flip")]
    # Backbones outside [features] backbones (or --backbones) are never extracted.
    narrowed = load_config(config.source, {"backbones": "xception"})
    assert narrowed.feature_sets() == [("xception", "none"), ("xception", "flip")]


@pytest.mark.parametrize(
    "text, message",
    [
        ('competiton = "demo"', "unknown key 'competiton' in the top level; did you mean 'competition'"),
        ('[features]\nbackbone = ["x"]', "unknown key 'backbone' in \\[features\\]; did you mean 'backbones'"),
        ('[features]\ntta = "mirror"', "tta = 'mirror' is not one of none, flip, crops"),
        ('[features]\ncluster = "local"', (r"h\.toml: cluster = 'local' is used only by engine "
                                          r"\"ray\" \(engine is 'auto'\); set engine = \"ray\"")),
        ('[ensembles.x]\nbackbones = ["xception"]', "\\[ensembles.x\\] needs head"),
        ('[ensembles.x]\nbackbones = ["xception"]\nhead = "svm"', "head = 'svm' is not one of"),
        ('[submission]\nclip = [0.9, 0.1]', "\\[submission\\]: clip = \\[0.9, 0.1\\] must be"),
        ('[cv]\nfolds = "five"', "\\[cv\\] folds must be a whole number, got 'five'"),
        ('[cv]\nfolds = 2.7', "\\[cv\\] folds must be a whole number, got 2.7"),
        ('cv = 5', "cv must be a table"),
        ('[features]\nweights_for = "x"', "features.weights_for must be a table"),
        ('[ensembles.x]\nbackbones = ["xception"]\nhead = "logreg"\n[blends.x]\nmembers = ["x"]',
         "'x' names both an ensemble and a blend"),
        ('[cv]\nfolds = 1', "folds must be at least 2"),
        ('competition = "nope"', "unknown competition 'nope'"),
        ('competition = [', "not valid TOML"),
    ],
)
def test_config_mistakes_fail_with_the_file_and_the_fix(tmp_path, text, message):
    with pytest.raises(HarnessError, match=message):
        load_config(_write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(HarnessError, match="does not exist; pass --config"):
        load_config(tmp_path / "absent.toml")


def test_custom_competition_table(tmp_path):
    config = load_config(_write(tmp_path, '[competition]\nname = "plant-seedlings"\n'
                                          'metric = "accuracy"\n'))
    assert config.spec.slug == "plant-seedlings"
    assert config.spec.train_layout == "folders" and config.spec.metric == "accuracy"
    # A new slug is a Kaggle competition (download/upload work) unless it says otherwise.
    assert config.spec.downloadable
