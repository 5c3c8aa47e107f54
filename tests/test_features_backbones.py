"""The backbone registry: every entry's GAP width, preprocessing, and weights resolution."""

from __future__ import annotations

import hashlib
import re

import h5py
import numpy as np
import pytest

from base.errors import HarnessError
from competition.spec import get_spec
from features.backbones import BACKBONES, get_backbone
from features.settings import FeaturesConfig
from features.weights import resolve_weights
from tests.shared_assets import MOBILENET_WEIGHTS, shared_dir

MOBILENET_SHA = "dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf"


@pytest.fixture(autouse=True)
def feat_hash_cache(tmp_path, monkeypatch):
    """Keep the sha256 cache of weight files inside the test's folder."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_gap_width_with_random_weights(name):
    spec = BACKBONES[name]
    # The smallest input each architecture accepts keeps 5 model builds fast on 2 cores.
    model = spec.build(None, input_size=spec.min_input_size)
    batch = np.random.default_rng(0).uniform(0, 255, (2, spec.min_input_size,
                                                      spec.min_input_size, 3))
    out = np.asarray(model(spec.preprocess(batch.astype("float32")), training=False))
    assert out.shape == (2, spec.feature_dim)
    assert np.isfinite(out).all()


def test_registry_sizes_and_names():
    assert {n: s.input_size for n, s in BACKBONES.items()} == {
        "resnet50": 224, "inception_v3": 299, "xception": 299, "vgg16": 224,
        "mobilenet_025": 224}
    assert "mobilenet_2_5_224_tf_no_top.h5" in BACKBONES["mobilenet_025"].weight_files
    assert "xception_imagenet_notop.weights.h5" in BACKBONES["xception"].weight_files


@pytest.mark.parametrize("name, expected", [
    # caffe: RGB -> BGR, minus the ImageNet channel means
    ("resnet50", [0 - 103.939, 0 - 116.779, 255 - 123.68]),
    ("vgg16", [0 - 103.939, 0 - 116.779, 255 - 123.68]),
    # tf: scaled to [-1, 1], channel order kept
    ("xception", [1.0, -1.0, -1.0]),
    ("inception_v3", [1.0, -1.0, -1.0]),
    ("mobilenet_025", [1.0, -1.0, -1.0]),
])
def test_each_backbone_has_its_own_preprocess(name, expected):
    red = np.array([[[[255.0, 0.0, 0.0]]]], dtype="float32")
    out = np.asarray(get_backbone(name).preprocess(red.copy()))
    np.testing.assert_allclose(out.reshape(3), expected, rtol=1e-5)


def test_unknown_backbone_lists_known_names():
    with pytest.raises(HarnessError, match="unknown backbone 'resnet51'.*resnet50.*xception"):
        get_backbone("resnet51")


def test_weights_auto_is_none_for_demo_and_imagenet_otherwise():
    features = FeaturesConfig()
    assert resolve_weights("resnet50", features, get_spec("demo")).identity == "none"
    assert resolve_weights("resnet50", features, get_spec("demo")).keras_arg is None
    real = resolve_weights("resnet50", features, get_spec("dogs-vs-cats-redux-kernels-edition"))
    assert real.keras_arg == "imagenet"
    assert real.identity.startswith("imagenet:keras-3.")


def test_weights_dir_maps_backbones_to_files(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    payload = b"not really weights, but a file with a known hash"
    (folder / "mobilenet_2_5_224_tf_no_top.h5").write_bytes(payload)
    features = FeaturesConfig(weights_dir=folder)
    choice = resolve_weights("mobilenet_025", features, get_spec("demo"))
    assert choice.keras_arg == str((folder / "mobilenet_2_5_224_tf_no_top.h5").resolve())
    assert choice.identity == "sha256:" + hashlib.sha256(payload).hexdigest()
    # The hash is cached by (path, size, mtime): the cache file now knows it.
    assert (tmp_path / "cache" / "sha256.json").read_text().count(hashlib.sha256(payload).hexdigest()) == 1
    with pytest.raises(HarnessError, match=r"holds no weights for xception.*"
                                           r"xception_imagenet_notop\.weights\.h5"):
        resolve_weights("xception", features, get_spec("demo"))


def test_weights_for_overrides_dir_and_missing_path_fails(tmp_path):
    features = FeaturesConfig(weights_dir=tmp_path, weights_for={"xception": "none"})
    assert resolve_weights("xception", features, get_spec("demo")).identity == "none"
    missing = FeaturesConfig(weights=str(tmp_path / "nope.h5"))
    with pytest.raises(HarnessError, match="nope.h5 for resnet50 does not exist"):
        resolve_weights("resnet50", missing, get_spec("dogs-vs-cats"))
    with pytest.raises(HarnessError, match="weights_dir .*does not exist"):
        resolve_weights("resnet50", FeaturesConfig(weights_dir=tmp_path / "absent"),
                        get_spec("demo"))


@pytest.mark.real_weights
def test_mobilenet_real_weights_load_from_shared_dir():
    mobilenet_file = shared_dir() / MOBILENET_WEIGHTS
    choice = resolve_weights("mobilenet_025", FeaturesConfig(weights_dir=mobilenet_file.parent),
                             get_spec("dogs-vs-cats-redux-kernels-edition"))
    assert choice.identity == f"sha256:{MOBILENET_SHA}"
    model = get_backbone("mobilenet_025").build(choice.keras_arg)
    with h5py.File(mobilenet_file, "r") as handle:
        stored = handle["conv1/conv1/kernel:0"][()]
    np.testing.assert_array_equal(np.asarray(model.get_layer("conv1").kernel), stored)


def _bad_weights_case(case: str, tmp_path) -> tuple[str, dict[str, str], str]:
    """(--weights value, extra environment, expected message) of one bad-weights case."""
    if case == "not-hdf5":
        path = tmp_path / "notes.h5"
        path.write_text("these are not weights\n")
        return str(path), {}, rf"error: {path}: not mobilenet_025's weights \(.*file signature"
    if case == "xception-file":
        path = shared_dir() / "weights" / "xception_imagenet_notop.weights.h5"
        if not path.is_file():
            pytest.skip(f"{path} not found")
        # The harness names the file as it resolves it (../shared may be a symlink).
        return str(path), {}, (rf"error: {re.escape(str(path.resolve()))}: not mobilenet_025's "
                               r"weights \(.*could not be")
    # No internet, deterministically: every download goes to a closed local port.
    proxy = "http://127.0.0.1:9"
    return "imagenet", {"KERAS_HOME": str(tmp_path / "keras"), "HTTPS_PROXY": proxy,
                        "HTTP_PROXY": proxy, "https_proxy": proxy, "http_proxy": proxy}, (
        r"error: mobilenet_025: cannot download the ImageNet weights \(URL fetch failure.*"
        r"--weights FILE or weights_dir holding mobilenet_2_5_224_tf_no_top\.h5")


@pytest.mark.parametrize("case", ["not-hdf5", "xception-file", "imagenet-offline"])
def test_bad_weights_are_one_line_naming_the_file_and_the_fix(tmp_path, case):
    """These used to end in 43-212 line tracebacks (OSError, ValueError, Exception)."""
    from competition.demo import generate_demo
    from tests.cli_runner import mobilenet_toml, run_harness

    value, extra, message = _bad_weights_case(case, tmp_path)
    (tmp_path / "harness.toml").write_text(
        mobilenet_toml('competition = "demo"\nworkspace = "ws"', heads={"logreg": ""}))
    generate_demo(tmp_path / "ws" / "data", n_train=4, n_test=2)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "HARNESS_CACHE_DIR": str(tmp_path / "cache"), **extra}
    result = run_harness("features", "--weights", value, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "UserWarning" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.search(message, last), last
    assert not (tmp_path / "ws" / "features" / "mobilenet_025.h5").exists()
