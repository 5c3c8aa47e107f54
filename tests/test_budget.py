"""`--time-limit`: the extraction estimates its time from its first batches and stops early,
naming the backbones to drop, when it would not fit; what it extracted is kept."""

from __future__ import annotations

import pytest

from base.errors import HarnessError
from features.budget import TimeBudget, format_duration, parse_duration
from features.extract import extract_features
from features.store import feature_path, load_split
from features.weights import WeightsChoice
from tests.features_fixtures import image_lists, make_dataset


@pytest.mark.parametrize(("text", "seconds"), [("9h", 32400), ("90m", 5400), ("45s", 45),
                                               ("1.5h", 5400), ("120", 120), (30, 30.0)])
def test_durations_are_read_as_kaggle_users_write_them(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["nine hours", "0", "-3h", "5d", ""])
def test_a_duration_that_is_not_one_is_refused_with_the_forms(text):
    with pytest.raises(HarnessError, match="is not a duration: give e.g. 9h, 90m, 45s"):
        parse_duration(text)


def test_the_slowest_backbones_are_dropped_until_the_estimate_fits():
    budget = TimeBudget(limit=3600, images=40000, started=0.0)
    seconds = {"xception": 600.0, "resnet50": 150.0, "mobilenet_025": 50.0}
    message = budget._over(estimate=7200, per_image=0.18, elapsed=0.0, model_seconds=seconds)
    # Without xception (600 of 800 model seconds) 7200 s becomes 1800 s.
    assert f"drop xception (about {format_duration(1800)})" in message
    assert "the 40000 images would take about 2.0 h" in message
    hopeless = budget._over(estimate=72000, per_image=1.8, elapsed=0.0, model_seconds=seconds)
    assert "extract in shards (--shard) or on a faster machine" in hopeless


def test_an_extraction_over_its_limit_stops_early_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    train, test = image_lists(make_dataset(tmp_path / "data", n_train=16, n_test=4))
    weights = {"mobilenet_025": WeightsChoice(None, "none")}
    out = tmp_path / "features"
    with pytest.raises(HarnessError, match=r"time limit .*: at the speed of the first batches "
                                           r".* the 20 images would take about"):
        extract_features(train, test, [("mobilenet_025", "none")], weights, out,
                         batch_size=4, progress=False, engine="tensorflow", time_limit=1e-3)
    assert not feature_path(out, "mobilenet_025").exists()
    parts = sorted((out / ".partial").rglob("train-*.npz"))
    assert len(parts) == 3  # the warm-up batch and the two timed ones, kept
    done = extract_features(train, test, [("mobilenet_025", "none")], weights, out,
                            batch_size=4, progress=False, engine="tensorflow", time_limit=3600)
    assert done.results[0].images == 20
    assert list(load_split(feature_path(out, "mobilenet_025"), "train").ids) == list(train.ids)
