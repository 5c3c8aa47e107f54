"""`harness init` on data folders laid out as each catalog competition's download: the
proposed [competition] table describes them as the catalog does, and what the files cannot
tell (the metric, ordinal grades) is said, not guessed silently."""

from __future__ import annotations

import tomllib

import pytest

from base.errors import HarnessError
from competition.images import list_test_images, list_train_images
from competition.infer import adopt_kaggle_metric, propose
from competition.metrics import metric_for_kaggle_name
from competition.spec import CATALOG, spec_from_config
from tests.cli_runner import run_harness
from tests.competition_layouts import CASES, planet
from tests.fake_kaggle import FakeKaggle

LAYOUT = ("train_layout", "train_dir", "test_dir", "extra_test_dirs", "id_column",
          "sample_submission", "submission_shape")


@pytest.mark.parametrize("slug", sorted(CASES))
def test_init_describes_each_catalog_layout(slug, tmp_path):
    CASES[slug].build(tmp_path)
    entry = CATALOG[slug]
    spec = propose(tmp_path, "someones-competition").spec()
    for key in LAYOUT:
        assert getattr(spec, key) == getattr(entry, key), key
    if entry.train_layout == "csv":
        assert (spec.labels_csv, spec.label_column, spec.label_columns) == \
            (entry.labels_csv, entry.label_column, entry.label_columns)
    # The harness reads the same images, with the same labels, through either spec.
    for ours, theirs in ((list_train_images(spec, tmp_path),
                          list_train_images(entry, tmp_path)),
                         (list_test_images(spec, tmp_path), list_test_images(entry, tmp_path))):
        assert ours.ids == theirs.ids and ours.paths == theirs.paths
        assert ours.classes == theirs.classes
    guessed = propose(tmp_path, "someones-competition")
    if guessed.spec().metric != entry.metric:
        assert any(n.startswith("metric:") and "Evaluation page" in n for n in guessed.notes)
    if entry.task == "ordinal":
        assert any(n.startswith("task:") and "ordinal" in n for n in guessed.notes)
    if entry.downloadable:
        # Named as the built-in, its metric and task are the catalog's, not a guess.
        named = propose(tmp_path, slug).spec()
        assert (named.metric, named.task) == (entry.metric, entry.task)


def test_init_writes_a_config_that_runs(tmp_path):
    planet(tmp_path / "downloads" / "planet")
    made = run_harness("init", "downloads/planet", "--name", "my-planet", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "wrote my-planet.toml: multilabel, csv layout" in made.stdout
    assert "next: harness submit --config my-planet.toml" in made.stdout
    written = tomllib.loads((tmp_path / "my-planet.toml").read_text())
    assert written["data_dir"] == "downloads/planet"
    spec = spec_from_config(written["competition"])
    assert spec.slug == "my-planet" and spec.downloadable
    assert len(list_test_images(spec, tmp_path / "downloads" / "planet").ids) == 14
    again = run_harness("init", "downloads/planet", "--name", "my-planet", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip() == ("error: my-planet.toml exists; pass --force to overwrite "
                                    "it, or --output another file")


def test_init_says_what_it_could_not_find(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(HarnessError, match="no sample submission"):
        propose(tmp_path)
    (tmp_path / "sample_submission.csv").write_text("id,label\n1,0.5\n")
    with pytest.raises(HarnessError, match="none of its 'id' ids names an image"):
        propose(tmp_path)


@pytest.mark.parametrize(("kaggle_name", "metric"), [
    ("Area Under Receiver Operating Characteristic Curve", "roc_auc"),
    ("AUC", "roc_auc"),
    ("Mean Columnwise Area Under Receiver Operating Characteristic Curve", "mean_column_auc"),
    ("Log Loss", "log_loss"),
    ("Multi Class Log Loss", "log_loss"),
    ("Categorization Accuracy", "accuracy"),
    ("Quadratic Weighted Kappa", "quadratic_kappa"),
    ("Mean F-Score Beta", "mean_f2"),
    ("Micro-averaged F1-Score", "f1_micro"),
    ("Root Mean Squared Error", "rmse"),
    ("Mean F-Score", None),  # F1 averaged per image: not micro F1
    ("Root Mean Squared Logarithmic Error", None),
    ("PR AUC", None),
    ("Mean Average Precision @ 5", None),
    ("Dice Coefficient", None),
    ("", None),
])
def test_kaggle_metric_names_are_read_as_registry_entries(kaggle_name, metric):
    assert metric_for_kaggle_name(kaggle_name) == metric


def _init_against(fake: FakeKaggle, tmp_path, *args: str):
    env = {"PATH": "/usr/bin:/bin", **fake.client_env(tmp_path / "home")}
    return run_harness("init", "data", *args, cwd=tmp_path, env=env)


def test_init_takes_the_metric_from_the_kaggle_record(tmp_path):
    """Integer grades scored by kappa on Kaggle: the proposal becomes APTOS's ordinal table."""
    CASES["aptos2019-blindness-detection"].build(tmp_path / "data")
    fake = FakeKaggle(metric_names={"my-aptos": "Quadratic Weighted Kappa",
                                    "my-aptos-2": "Log Loss"}).start()
    try:
        made = _init_against(fake, tmp_path, "--name", "my-aptos")
        unknown = _init_against(fake, tmp_path, "--name", "nobodys-slug")
    finally:
        fake.stop()
    assert made.returncode == 0, made.stderr
    assert "ListCompetitions" in fake.calls
    assert "check metric: quadratic_kappa, from the competition's Kaggle record " \
           "('Quadratic Weighted Kappa')" in made.stdout
    spec = spec_from_config(tomllib.loads((tmp_path / "my-aptos.toml").read_text())
                            ["competition"])
    entry = CATALOG["aptos2019-blindness-detection"]
    for key in (*LAYOUT, "task", "metric", "classes", "label_column"):
        assert getattr(spec, key) == getattr(entry, key), key
    # A slug Kaggle does not list: the guess stays, and the note says why.
    assert unknown.returncode == 0, unknown.stderr
    assert "Kaggle lists no competition 'nobodys-slug'" in unknown.stdout
    guessed = tomllib.loads((tmp_path / "nobodys-slug.toml").read_text())["competition"]
    assert (guessed["task"], guessed["metric"]) == ("multiclass", "accuracy")


def test_a_probability_metric_repairs_a_shape_the_placeholder_misled(tmp_path):
    """Kaggle's AUC samples often hold 0: read as a class index until the metric says AUC."""
    CASES["histopathologic-cancer-detection"].build(tmp_path)
    sample = tmp_path / "sample_submission.csv"
    sample.write_text(sample.read_text().replace(",0.5\n", ",0\n"))
    proposal = propose(tmp_path, "my-histo")
    assert (proposal.fields["submission"], proposal.fields["metric"]) == \
        ("class_index", "accuracy")
    adopt_kaggle_metric(proposal, "Area Under Receiver Operating Characteristic Curve")
    spec, entry = proposal.spec(), CATALOG["histopathologic-cancer-detection"]
    assert (spec.metric, spec.submission_shape) == (entry.metric, entry.submission_shape)
    assert any(n.startswith("submission: probability, not class_index") for n in proposal.notes)
    # Kappa cannot score a binary task: the guess stays, and the note says what Kaggle said.
    kept = propose(tmp_path, "my-histo")
    adopt_kaggle_metric(kept, "Quadratic Weighted Kappa")
    assert kept.fields["metric"] == "accuracy"
    assert any("'Quadratic Weighted Kappa' (quadratic_kappa), which does not score a binary"
               in n for n in kept.notes)


def test_init_without_credentials_says_the_record_was_not_read(tmp_path):
    CASES["aptos2019-blindness-detection"].build(tmp_path / "data")
    made = run_harness("init", "data", "--name", "my-aptos", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "is a guess from the sample's shape" in made.stdout
    assert "(no Kaggle credentials, so its record was not read)" in made.stdout
