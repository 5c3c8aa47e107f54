"""`harness init` on data folders laid out as each catalog competition's download: the
proposed [competition] table describes them as the catalog does, and what the files cannot
tell (the metric, ordinal grades) is said, not guessed silently."""

from __future__ import annotations

import tomllib

import pytest

from base.errors import HarnessError
from competition.images import list_test_images, list_train_images
from competition.infer import propose
from competition.spec import CATALOG, spec_from_config
from tests.cli_runner import run_harness
from tests.test_catalog import CASES, planet

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
