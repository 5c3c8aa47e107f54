"""Inference engines (features.engines): TensorFlow and OpenVINO give the same features, the
engine is recorded and fingerprinted, cached files follow the reuse rule, converted models are
cached. Real tiny JPEGs, real HDF5 files, random-init backbones (plus genuine MobileNet
weights where ../shared is present)."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from base.atomic import writer_tag
from base.errors import HarnessError
from features.backbones import BACKBONES, get_backbone
from features.engines import (
    ENGINE_CHOICES,
    TensorFlowForward,
    build_forward,
    check_engine,
    resolve_engine,
)
from features.extract import extract_features
from features.openvino_engine import OpenVINOForward, cache_paths
from features.shards import merge_shards
from features.store import feature_path, load_split, read_attrs
from features.weights import WeightsChoice
from harness.config import load_config
from tests.features_fixtures import image_lists, make_dataset
from tests.shared_assets import MINI_DATA, MOBILENET_WEIGHTS, shared_dir

NONE = WeightsChoice(None, "none")
MOBILE = [("mobilenet_025", "none"), ("mobilenet_025", "flip")]
AGREE = 1e-5  # the bound: max |a - b| / max |b| per file or batch


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def runtime():
    from base.logs import quiet_tensorflow_import
    from features.runtime import configure

    quiet_tensorflow_import()
    return configure(batch_size=2)


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.abs(b).max())
    assert scale > 0
    return float(np.abs(a - b).max()) / scale


def run(train, test, out, engine, requests=MOBILE, weights=NONE, **kwargs):
    return extract_features(train, test, requests, {b: weights for b, _ in requests}, out,
                            batch_size=4, progress=False, engine=engine, **kwargs)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_gives_the_same_features_on_both_engines(name, runtime, tmp_path):
    spec = get_backbone(name)
    images = np.random.default_rng(1).uniform(
        0, 255, (2, spec.input_size, spec.input_size, 3)).astype(np.float32)
    reference = TensorFlowForward(spec, None, runtime)(images)
    openvino = build_forward(spec, NONE, runtime, "openvino", cache_dir=tmp_path)
    features = openvino(images)
    assert features.dtype == np.float32 and features.shape == (2, spec.feature_dim)
    # Two different images: not a constant output that would agree trivially.
    assert relative_difference(features[0], features[1]) > 1e-3
    assert relative_difference(features, reference) <= AGREE


def test_engine_is_recorded_fingerprinted_and_reused_only_by_auto(tmp_path, caplog):
    train, test = image_lists(make_dataset(tmp_path / "data"))
    out = tmp_path / "features"
    report = run(train, test, out, "tensorflow")
    assert report.engine == "tensorflow" and report.convert_seconds == 0.0
    path = feature_path(out, "mobilenet_025")
    attrs = read_attrs(path)
    assert attrs["engine"] == "tensorflow"
    assert json.loads(attrs["fingerprint_parts"])["engine"] == "tensorflow"
    tf_train = load_split(path, "train").features
    tf_flip = load_split(feature_path(out, "mobilenet_025", "flip"), "test").features

    # auto would pick OpenVINO on this CPU, but a file differing only in its engine is kept.
    with caplog.at_level(logging.INFO, logger="features"):
        again = run(train, test, out, "auto")
    assert all(r.reused for r in again)
    assert "made by tensorflow" in caplog.text and "--engine openvino --force" in caplog.text
    assert read_attrs(path)["engine"] == "tensorflow"

    # An explicit engine must match: rebuilt, and the reason names the engine change.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="features"):
        rebuilt = run(train, test, out, "openvino")
    assert not any(r.reused for r in rebuilt) and rebuilt.engine == "openvino"
    assert "engine changed ('tensorflow' -> 'openvino')" in rebuilt.result("mobilenet_025").reason
    assert "conversion" in rebuilt.summary() or "cached" in rebuilt.summary()
    attrs = read_attrs(path)
    assert attrs["engine"] == "openvino"
    assert json.loads(attrs["fingerprint_parts"])["engine"] == "openvino"
    # Same features through the shared decode + TTA code, plain and flipped.
    assert relative_difference(load_split(path, "train").features, tf_train) <= AGREE
    ov_flip = load_split(feature_path(out, "mobilenet_025", "flip"), "test").features
    assert relative_difference(ov_flip, tf_flip) <= AGREE
    assert all(r.reused for r in run(train, test, out, "openvino"))
    assert not any(r.reused for r in run(train, test, out, "tensorflow"))


def test_files_from_before_engines_count_as_tensorflow(tmp_path):
    """A cached file written before the engine was recorded keeps serving --engine tensorflow."""
    import h5py

    train, test = image_lists(make_dataset(tmp_path / "data", n_train=4, n_test=2))
    out = tmp_path / "features"
    run(train, test, out, "tensorflow", requests=[("mobilenet_025", "none")])
    path = feature_path(out, "mobilenet_025")
    with h5py.File(path, "a") as handle:
        parts = json.loads(handle.attrs["fingerprint_parts"])
        del parts["engine"]
        handle.attrs["fingerprint_parts"] = json.dumps(parts)
        handle.attrs["fingerprint"] = "made-before-engines"
        del handle.attrs["engine"]
    assert run(train, test, out, "tensorflow", requests=[("mobilenet_025", "none")]).result(
        "mobilenet_025").reused
    report = run(train, test, out, "openvino", requests=[("mobilenet_025", "none")])
    assert "engine changed ('tensorflow' -> 'openvino')" in report.result("mobilenet_025").reason


def test_converted_models_are_cached_and_a_damaged_entry_is_converted_again(
        runtime, tmp_path, caplog):
    spec = dataclasses.replace(get_backbone("mobilenet_025"), input_size=64)
    images = np.random.default_rng(2).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    cold = OpenVINOForward(spec, NONE, runtime, cache_dir=tmp_path)
    xml, binary = cache_paths(tmp_path, spec, NONE.identity)
    assert cold.convert_seconds > 0 and xml.is_file() and binary.is_file()
    assert not list(tmp_path.glob(".*"))  # no staging folder or temp file left behind
    cached = OpenVINOForward(spec, NONE, runtime, cache_dir=tmp_path)
    assert cached.convert_seconds == 0.0
    np.testing.assert_array_equal(cached(images), cold(images))
    # Another weights identity or input size is another entry.
    assert cache_paths(tmp_path, spec, "sha256:0")[0] != xml
    assert cache_paths(tmp_path, get_backbone("mobilenet_025"), NONE.identity)[0] != xml

    xml.write_text("<not an openvino model", encoding="utf-8")
    # A converter killed mid-save left its staging folder (named with its host and pid).
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    tag = f"{writer_tag().rsplit('-', 1)[0]}-{gone.stdout.strip()}"
    stale = tmp_path / f".converting.{tag}.abc123.tmp"
    stale.mkdir()
    (stale / "model.bin").write_bytes(b"half")
    with caplog.at_level(logging.WARNING, logger="features.openvino_engine"):
        repaired = OpenVINOForward(spec, NONE, runtime, cache_dir=tmp_path)
    assert repaired.convert_seconds > 0 and "converting again" in caplog.text
    np.testing.assert_array_equal(repaired(images), cold(images))
    assert not stale.exists()


def test_flip_tta_keeps_both_outputs_of_one_request(runtime, tmp_path):
    """OpenVINO reuses its output buffer: the plain features must survive the mirrored call."""
    spec = dataclasses.replace(get_backbone("mobilenet_025"), input_size=64)
    forward = OpenVINOForward(spec, NONE, runtime, cache_dir=tmp_path)
    images = np.random.default_rng(3).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    plain = forward(images)
    kept = plain.copy()
    mirrored = forward(images[:, :, ::-1, :])
    assert relative_difference(plain, mirrored) > 1e-3
    np.testing.assert_array_equal(plain, kept)


def test_engine_choice_resolution_and_errors():
    assert ENGINE_CHOICES == ("auto", "tensorflow", "openvino", "ray")
    assert resolve_engine("auto", has_gpu=False) == "openvino"
    assert resolve_engine("auto", has_gpu=True) == "tensorflow"
    assert resolve_engine("openvino", has_gpu=True) == "openvino"
    assert resolve_engine("tensorflow", has_gpu=False) == "tensorflow"
    with pytest.raises(HarnessError, match="engine 'onnx' is not one of auto, tensorflow"):
        check_engine("onnx")
    with pytest.raises(HarnessError, match="resolve_engine"):
        build_forward(get_backbone("mobilenet_025"), NONE, None, "auto")


def test_engine_in_config_and_on_the_command_line(tmp_path):
    config = tmp_path / "harness.toml"
    config.write_text('[features]\nengine = "tensorflow"\n', encoding="utf-8")
    assert load_config(config).features.engine == "tensorflow"
    assert load_config(config, {"engine": "openvino"}).features.engine == "openvino"
    assert load_config(None).features.engine == "auto"
    config.write_text('[features]\nengine = "openvion"\n', encoding="utf-8")
    with pytest.raises(HarnessError, match="openvion"):
        load_config(config)

    from harness.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["features", "--engine", "openvino"]).engine == "openvino"
    assert parser.parse_args(["submit", "--engine", "tensorflow"]).engine == "tensorflow"
    with pytest.raises(SystemExit):
        parser.parse_args(["features", "--engine", "onnx"])


@pytest.mark.real_weights
def test_genuine_mobilenet_weights_agree_on_genuine_photos(tmp_path):
    from competition.images import ImageList, natural_key

    shared = shared_dir()
    files = sorted((shared / MINI_DATA / "train").glob("*.jpg"),
                   key=lambda p: natural_key(p.name))
    chosen = [p for p in files if p.name.startswith("cat.")][:3] + [
        p for p in files if p.name.startswith("dog.")][:3]
    train = ImageList("train", tuple(p.stem for p in chosen), tuple(chosen),
                      np.asarray([int(p.name.startswith("dog.")) for p in chosen]),
                      ("cat", "dog"))
    test = ImageList("test", (), (), None, ("cat", "dog"))
    weights = WeightsChoice(str(shared / MOBILENET_WEIGHTS), "sha256:genuine-mobilenet")
    requests = [("mobilenet_025", "none")]
    run(train, test, tmp_path / "tf", "tensorflow", requests=requests, weights=weights)
    run(train, test, tmp_path / "ov", "openvino", requests=requests, weights=weights)
    a = load_split(feature_path(tmp_path / "tf", "mobilenet_025"), "train").features
    b = load_split(feature_path(tmp_path / "ov", "mobilenet_025"), "train").features
    assert a.shape == (6, 256) and float(np.abs(a).max()) > 0.1  # genuine, not ~0 random init
    assert relative_difference(b, a) <= AGREE



def test_shards_from_different_engines_are_refused_by_name(tmp_path):
    """A GPU machine's shard (TensorFlow) and a CPU machine's (OpenVINO) cannot be merged
    into one file with one engine; the message says so instead of blaming the images."""
    train, test = image_lists(make_dataset(tmp_path / "data", n_train=4, n_test=2))
    out = tmp_path / "features"
    for shard, engine in (((1, 2), "tensorflow"), ((2, 2), "openvino")):
        extract_features(train, test, [("mobilenet_025", "none")], {"mobilenet_025": NONE},
                         out, batch_size=2, progress=False, shard=shard, engine=engine)
    with pytest.raises(HarnessError, match=r"different engines \(openvino, tensorflow\); "
                                           r"rerun them with the same --engine"):
        merge_shards(out, "mobilenet_025", "none", 2)
