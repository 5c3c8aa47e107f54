"""Precision int8 (NNCF post-training quantisation of the OpenVINO model): opt-in, OpenVINO
only, calibrated on the training images, cached, recorded and fingerprinted. Real tiny JPEGs
and real HDF5 files; the genuine MobileNet-0.25 weights on genuine photos where ../shared is
present."""

from __future__ import annotations

import json
import logging
from importlib import metadata

import numpy as np
import pytest

from base.errors import HarnessError
from competition.images import ImageList
from features.backbones import get_backbone
from features.calibration import CALIBRATION_IMAGES, calibration_set
from features.engines import check_precision
from features.extract import extract_features
from features.openvino_engine import cache_paths
from features.store import feature_path, load_split, read_attrs
from features.weights import WeightsChoice
from harness.config import load_config
from tests.cli_runner import run_harness
from tests.features_fixtures import image_lists, make_dataset
from tests.shared_assets import MOBILENET_WEIGHTS, mini_photos, no_test_images, shared_dir

NONE = WeightsChoice(None, "none")
MOBILE = [("mobilenet_025", "none")]
# Genuine MobileNet-0.25 weights on genuine photos, int8 vs float32 features, cosine of each
# row, measured where OpenVINO ran AVX-512 int8 kernels: median 0.987, min 0.944 over 40
# photos calibrated on the same 40 (0.985 / 0.927 over 1,000 photos calibrated on 300).
# With AVX2 kernels (no VNNI: u8 x s8 products saturate at 16 bits) the same photos give
# 0.967 / 0.915, so these hold only for AVX-512 / AMX kernels; what holds on every CPU is
# checked by test_int8_features_still_tell_every_photo_apart.
MEDIAN_COSINE = 0.97
MIN_COSINE = 0.90


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "openvino"


def run(train, test, out, precision, weights=NONE, engine="openvino", **kwargs):
    return extract_features(train, test, MOBILE, {"mobilenet_025": weights}, out,
                            batch_size=8, progress=False, engine=engine, precision=precision,
                            **kwargs)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def genuine_int8(tmp_path_factory):
    """float32 and int8 features of 40 genuine photos (genuine MobileNet-0.25 weights), and
    the int8 run's report."""
    shared = shared_dir()
    tmp = tmp_path_factory.mktemp("int8")
    train = mini_photos(40)
    weights = WeightsChoice(str(shared / MOBILENET_WEIGHTS), "sha256:genuine-mobilenet")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_CACHE_DIR", str(tmp / "cache"))
        run(train, no_test_images(), tmp / "f32", "float32", weights)
        report = run(train, no_test_images(), tmp / "i8", "int8", weights)
    a = load_split(feature_path(tmp / "f32", "mobilenet_025"), "train").features
    b = load_split(feature_path(tmp / "i8", "mobilenet_025"), "train").features
    return a, b, report


@pytest.mark.real_weights
def test_int8_features_still_tell_every_photo_apart(genuine_int8):
    """What must hold on every CPU, whichever int8 kernels ran: the quantisation error of
    each photo's features is smaller than the distance from its float32 features to any
    other photo's (the int8 features identify every photo), and for the typical photo
    under half of it; yet it is not zero (quantised for real)."""
    a, b, report = genuine_int8
    assert report.precision == "int8" and report.quantize_seconds > 0
    assert a.shape == b.shape == (40, 256) and float(np.abs(a).max()) > 0.1  # genuine weights
    # The summary says which kernels computed the convolutions, as OpenVINO reports them.
    assert report.kernels and all(name.endswith("_I8") for name in report.kernels)
    # Not a count: the CPU plugin fuses convolutions differently per instruction set.
    assert sum(report.kernels.values()) >= 1
    assert "int8 kernels " + ", ".join(f"{k} x{n}" for k, n in sorted(report.kernels.items())) \
        in report.summary()
    error = np.linalg.norm(b - a, axis=1)
    between = np.linalg.norm(a[:, None, :] - a[None, :, :], axis=2)
    np.fill_diagonal(between, np.inf)
    nearest_other = between.min(axis=1)
    assert (error < nearest_other).all(), f"{(error >= nearest_other).sum()} photos confused"
    assert np.median(error / nearest_other) < 0.5, np.median(error / nearest_other)
    assert np.median(row_cosines(a, b)) < 0.9999  # float32 engines agree to 1e-7


@pytest.mark.real_weights
def test_int8_features_agree_with_float32_on_avx512_kernels(genuine_int8):
    a, b, report = genuine_int8
    if not any("avx512" in name or "amx" in name for name in report.kernels):
        pytest.skip("the measured agreement holds for AVX-512/AMX int8 kernels; this CPU ran "
                    + ", ".join(sorted(report.kernels)))
    cosine = row_cosines(a, b)
    assert np.median(cosine) >= MEDIAN_COSINE and cosine.min() >= MIN_COSINE, (
        f"median {np.median(cosine):.4f}, min {cosine.min():.4f}")


def test_int8_model_is_cached_recorded_and_fingerprinted(tmp_path, engine_cache):
    train, test = image_lists(make_dataset(tmp_path / "data", n_train=6, n_test=2))
    out = tmp_path / "features"
    path = feature_path(out, "mobilenet_025")
    cold = run(train, test, out, "int8")
    assert cold.quantize_seconds > 0 and "quantisation" in cold.summary()
    [xml] = engine_cache.glob("mobilenet_025-224-int8-*.xml")
    stamp = xml.stat().st_mtime_ns
    attrs = read_attrs(path)
    parts = json.loads(attrs["fingerprint_parts"])
    assert attrs["precision"] == parts["precision"] == "int8" and attrs["engine"] == "openvino"
    quantization = json.loads(parts["quantization"])
    assert f"{CALIBRATION_IMAGES} training images" in quantization["calibration"]
    assert quantization["nncf"] == metadata.version("nncf")
    assert quantization["openvino"] == metadata.version("openvino")
    int8_features = load_split(path, "test").features

    # A second run reads the quantised model from the cache: no second quantisation.
    warm = run(train, test, out, "int8", force=True)
    assert warm.quantize_seconds == 0.0 and warm.convert_seconds == 0.0
    assert "quantised models cached" in warm.summary()
    assert xml.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(load_split(path, "test").features, int8_features)
    assert run(train, test, out, "int8").result("mobilenet_025").reused

    # float32 is another fingerprint: an int8 file is never reused (or resumed) as float32,
    # not even by engine auto, and the reason names the precision.
    fp32 = run(train, test, out, "float32", engine="auto")
    assert "precision changed ('int8' -> 'float32')" in fp32.result("mobilenet_025").reason
    fp32_attrs = read_attrs(path)
    assert fp32_attrs["fingerprint"] != attrs["fingerprint"]
    assert "quantization" not in json.loads(fp32_attrs["fingerprint_parts"])
    assert fp32_attrs["precision"] == "float32"


def test_calibration_set_is_seeded_and_keys_the_cache(tmp_path):
    train, _ = image_lists(make_dataset(tmp_path / "data", n_train=6, n_test=1))
    calibration = calibration_set(train)
    assert calibration.count == 6 and calibration.identity == calibration_set(train).identity
    spec = get_backbone("mobilenet_025")
    assert cache_paths(tmp_path, spec, "none", calibration.identity)[0] != cache_paths(
        tmp_path, spec, "none")[0]
    # One more training photo: another calibration set, another quantised model.
    more, _ = image_lists(make_dataset(tmp_path / "more", n_train=7, n_test=1))
    other = calibration_set(more)
    assert other.identity != calibration.identity
    assert cache_paths(tmp_path, spec, "none", other.identity)[0] != cache_paths(
        tmp_path, spec, "none", calibration.identity)[0]
    # A long list: a fixed subset of CALIBRATION_IMAGES, the same one every time (only
    # stat is needed to choose it: these files need not exist).
    ids = tuple(f"cat.{k}" for k in range(1000))
    long = ImageList("train", ids, tuple(tmp_path / f"{i}.jpg" for i in ids),
                     np.zeros(1000, np.int64), ("cat", "dog"))
    first, second = calibration_set(long), calibration_set(long)
    assert first.count == CALIBRATION_IMAGES and first.images.ids == second.images.ids
    assert len(set(first.images.ids)) == CALIBRATION_IMAGES


@pytest.mark.parametrize("engine", ["tensorflow", "ray"])
def test_int8_off_openvino_is_one_line_at_load(tmp_path, engine):
    config = tmp_path / "harness.toml"
    config.write_text(f'[features]\nprecision = "int8"\nengine = "{engine}"\n', encoding="utf-8")
    with pytest.raises(HarnessError, match=f"harness.toml: precision 'int8' runs on openvino "
                                           f"only, not engine '{engine}': set engine = "
                                           f'"openvino"'):
        load_config(config)
    assert load_config(config, {"engine": "openvino"}).features.precision == "int8"
    # auto passes at load (it may resolve to OpenVINO); resolved to TensorFlow it is refused.
    assert load_config(config, {"engine": "auto"}).features.engine == "auto"
    with pytest.raises(HarnessError, match="not engine 'tensorflow'"):
        check_precision("int8", "tensorflow")
    check_precision("bfloat16", engine)  # other precisions run everywhere


def test_int8_off_openvino_is_refused_before_any_work(tmp_path, caplog):
    train, test = image_lists(make_dataset(tmp_path / "data", n_train=2, n_test=1))
    with caplog.at_level(logging.INFO), pytest.raises(HarnessError, match='engine = "openvino"'):
        run(train, test, tmp_path / "features", "int8", engine="tensorflow")
    assert not (tmp_path / "features").exists() or not any((tmp_path / "features").iterdir())

    result = run_harness("--competition", "demo", "features", "--precision", "int8",
                         "--engine", "tensorflow", cwd=tmp_path, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and 'set engine = "openvino"' in last, result.stderr
