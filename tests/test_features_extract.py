"""The extraction engine on real tiny JPEGs and real HDF5 files (mobilenet_025, random init)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from base.errors import HarnessError
from features.extract import extract_features
from features.shards import merge_shards
from features.store import feature_path, load_split, read_attrs
from features.weights import WeightsChoice
from tests.features_fixtures import (
    BAD_KINDS,
    UNREADABLE,
    bad_image_bytes,
    image_lists,
    make_dataset,
)

NONE = WeightsChoice(None, "none")
MOBILE = [("mobilenet_025", "none")]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def feat_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def feat_data(tmp_path):
    return make_dataset(tmp_path / "data", n_train=6, n_test=5)


def assert_close(actual, expected, rel=1e-3):
    """Equal up to `rel` of the features' scale (random-init MobileNet features are ~1e-16)."""
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * scale)


def differ(a, b, rel=1e-2):
    return float(np.abs(a - b).max()) > rel * float(np.abs(b).max())


def run(train, test, out, requests=MOBILE, **kwargs):
    weights = {b: NONE for b, _ in requests}
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("progress", False)
    return extract_features(train, test, requests, weights, out, **kwargs)


def test_layout_ids_labels_and_reuse(feat_data, tmp_path, caplog):
    train, test = image_lists(feat_data)
    out = tmp_path / "features"
    report = run(train, test, out)
    path = feature_path(out, "mobilenet_025")
    assert report.result("mobilenet_025").path == path and not report.result("mobilenet_025").reused
    tr, te = load_split(path, "train"), load_split(path, "test")
    assert list(tr.ids) == list(train.ids)  # natural order: circle.1, circle.3, ...
    assert list(te.ids) == ["1", "2", "3", "4", "5"]
    assert tr.features.shape == (6, 256) and te.features.shape == (5, 256)
    assert list(tr.labels) == list(train.labels) and tr.classes == ("circle", "square")
    assert tr.attrs["complete"] and tr.attrs["weights"] == "none"
    assert tr.attrs["backbone"] == "mobilenet_025" and tr.attrs["input_size"] == 224
    assert tr.attrs["keras_version"].startswith("3.")
    assert not list((out / ".partial").glob("*/*.npz"))  # parts cleaned up once complete
    # Different images give different features: rows are not copies of each other.
    assert differ(tr.features[0], tr.features[1])
    mtime = path.stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="features")
    again = run(train, test, out)
    assert again.result("mobilenet_025").reused and path.stat().st_mtime_ns == mtime
    assert "up to date, reused" in caplog.text


def test_fingerprint_change_rebuilds_and_says_why(feat_data, tmp_path, caplog):
    train, test = image_lists(feat_data)
    out = tmp_path / "features"
    run(train, test, out)
    first = read_attrs(feature_path(out, "mobilenet_025"))["fingerprint"]
    caplog.set_level(logging.INFO, logger="features")
    # A new training image changes the image list.
    (feat_data / "train" / "circle.11.jpg").write_bytes((feat_data / "train" / "circle.1.jpg").read_bytes())
    train2, test2 = image_lists(feat_data)
    report = run(train2, test2, out)
    assert not report.result("mobilenet_025").reused
    assert "train images changed (6 -> 7 images)" in caplog.text
    assert "train images changed (6 -> 7 images)" in report.result("mobilenet_025").reason
    assert "circle.11" in load_split(feature_path(out, "mobilenet_025"), "train").ids
    second = read_attrs(feature_path(out, "mobilenet_025"))["fingerprint"]
    assert second != first
    # Other weights: the reason names them.
    caplog.clear()
    fake = tmp_path / "w.h5"
    fake.write_bytes(b"x")
    from features.plan import plan, why_rebuild  # the reuse decision, without building
    jobs = plan(train2, test2, MOBILE, {"mobilenet_025": WeightsChoice(str(fake), "sha256:abc")},
                out, "float32", None)
    assert "weights changed ('none' -> 'sha256:abc')" in why_rebuild(
        jobs[0].path, jobs[0].fingerprint, jobs[0].parts, False)
    # force=True rebuilds a matching file anyway.
    forced = run(train2, test2, out, force=True)
    assert forced.result("mobilenet_025").reason.startswith("forced")


# bfloat16 keeps 8 significant bits: one rounding is off by up to 2**-8 = 0.4% of a value.
BF16_ROUNDING = 2.0 ** -8


def test_precision_is_in_the_fingerprint(feat_data, tmp_path):
    train, test = image_lists(feat_data)
    out = tmp_path / "features"
    path = feature_path(out, "mobilenet_025")
    run(train, test, out, engine="tensorflow")
    exact = load_split(path, "train").features
    # "mixed" is float16 on GPUs only: on this CPU it computes, and so reuses, float32.
    assert run(train, test, out, precision="mixed").result("mobilenet_025").reused
    # TensorFlow computes bfloat16 on every CPU (emulated where the CPU lacks it).
    report = run(train, test, out, precision="bfloat16", engine="tensorflow")
    assert "precision changed ('float32' -> 'bfloat16')" in report.result("mobilenet_025").reason
    assert report.precision == "bfloat16" and "(tensorflow bfloat16" in report.summary()
    half = load_split(path, "train")
    assert half.attrs["precision"] == "bfloat16" and half.features.dtype == np.float32
    # Close to float32 within the roundings of 28 layers, and computed in bfloat16 for
    # real: float32 engines agree to ~1e-7, far below one bfloat16 rounding.
    assert_close(half.features, exact, rel=16 * BF16_ROUNDING)
    assert differ(half.features, exact, rel=BF16_ROUNDING / 40)
    with pytest.raises(HarnessError, match="precision 'half' is not one of float32, mixed"):
        run(train, test, out, precision="half")


def test_bfloat16_on_openvino_records_what_this_cpu_computes(feat_data, tmp_path, caplog):
    """OpenVINO silently computes float32 for a bfloat16 hint on CPUs without AVX-512 or
    AVX2-VNNI-2: the file must then say float32 (and be the float32 file), never bfloat16."""
    from features.openvino_engine import computed_precision

    train, test = image_lists(feat_data)
    out = tmp_path / "features"
    path = feature_path(out, "mobilenet_025")
    run(train, test, out, engine="openvino")
    exact = load_split(path, "train").features
    with caplog.at_level(logging.WARNING):
        report = run(train, test, out, precision="bfloat16", engine="openvino")
    computed = load_split(path, "train")
    if computed_precision("bfloat16") == "bfloat16":  # AVX-512 / AVX2-VNNI-2 CPUs
        assert report.precision == computed.attrs["precision"] == "bfloat16"
        assert_close(computed.features, exact, rel=16 * BF16_ROUNDING)
        assert differ(computed.features, exact, rel=BF16_ROUNDING / 40)
        assert not [r for r in caplog.records if r.getMessage().startswith("precision 'bfloat16'")]
    else:
        assert report.result("mobilenet_025").reused and computed.attrs["precision"] == "float32"
        [warning] = [r.getMessage() for r in caplog.records
                     if r.levelno == logging.WARNING and r.getMessage().startswith("precision")]
        assert warning.startswith("precision 'bfloat16' is not computed by openvino on this "
                                  "CPU") and "the feature files say float32" in warning
        assert "--engine tensorflow" in warning
        # What was recorded is true: a forced rebuild computes exactly the float32 numbers.
        run(train, test, out, precision="bfloat16", engine="openvino", force=True)
        np.testing.assert_array_equal(load_split(path, "train").features, exact)


def test_tta_modes_have_their_own_files_and_fingerprints(feat_data, tmp_path):
    train, test = image_lists(feat_data)
    out = tmp_path / "features"
    run(train, test, out, requests=[("mobilenet_025", t) for t in ("none", "flip", "crops")])
    attrs = {t: read_attrs(feature_path(out, "mobilenet_025", t)) for t in ("none", "flip", "crops")}
    assert len({a["fingerprint"] for a in attrs.values()}) == 3
    assert [attrs[t]["tta"] for t in ("none", "flip", "crops")] == ["none", "flip", "crops"]
    plain, flip, crops = (load_split(feature_path(out, "mobilenet_025", t), "test").features
                          for t in ("none", "flip", "crops"))
    assert differ(plain, flip) and differ(plain, crops)
    # flip = mean of the image's and its mirror's features: check with a mirrored data set.
    mirror = tmp_path / "mirror"
    shutil.copytree(feat_data, mirror)
    from PIL import Image
    for path in (mirror / "test").glob("*.jpg"):
        # Lossless PNG bytes under the .jpg name keep the mirrored pixels exact.
        source = np.asarray(Image.open(feat_data / "test" / path.name).convert("RGB"))
        Image.fromarray(source[:, ::-1]).save(path, "PNG")
    original = tmp_path / "original"
    shutil.copytree(feat_data, original)
    for path in (original / "test").glob("*.jpg"):
        Image.open(feat_data / "test" / path.name).convert("RGB").save(path, "PNG")
    m_train, m_test = image_lists(mirror)
    o_train, o_test = image_lists(original)
    mirrored = load_split(run(m_train, m_test, tmp_path / "m").results[0].path, "test").features
    originals = run(o_train, o_test, tmp_path / "o", requests=[("mobilenet_025", "flip")])
    flipped = load_split(originals.results[0].path, "test").features
    o_plain = load_split(run(o_train, o_test, tmp_path / "o2").results[0].path, "test").features
    assert_close(flipped, (o_plain + mirrored) / 2)


def test_bad_images_keep_ids_aligned(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=4, n_test=3)
    for k, kind in enumerate(BAD_KINDS):
        (data / "train" / f"square.{20 + k}.jpg").write_bytes(bad_image_bytes(kind, seed=k))
        (data / "test" / f"{20 + k}.jpg").write_bytes(bad_image_bytes(kind, seed=k))
    train, test = image_lists(data)
    out = tmp_path / "features"
    report = run(train, test, out)
    result = report.result("mobilenet_025")
    unreadable_train = {f"square.{20 + k}" for k, kind in enumerate(BAD_KINDS) if kind in UNREADABLE}
    unreadable_test = {f"{20 + k}" for k, kind in enumerate(BAD_KINDS) if kind in UNREADABLE}
    assert set(result.skipped) == unreadable_train and set(result.failed) == unreadable_test
    path = feature_path(out, "mobilenet_025")
    tr, te = load_split(path, "train"), load_split(path, "test")
    assert list(tr.ids) == [i for i in train.ids if i not in unreadable_train]
    assert list(te.ids) == list(test.ids)  # every test id keeps its row
    assert set(te.ids[te.failed]) == unreadable_test
    assert np.all(te.features[te.failed] == 0) and np.all(np.abs(te.features[~te.failed]).sum(1) > 0)
    label_of = dict(zip(train.ids, train.labels))
    assert [label_of[i] for i in tr.ids] == list(tr.labels)
    with h5py.File(path, "r") as handle:
        reasons = dict(handle["train/skipped"].asstr()[()])
    assert reasons[f"square.{20 + BAD_KINDS.index('zero_byte')}"] == "empty file (0 bytes)"
    assert "cannot decode" in reasons[f"square.{20 + BAD_KINDS.index('not_an_image')}"]
    # The same bad file gives the same reason on every run (no object address in it).
    assert "0x" not in reasons[f"square.{20 + BAD_KINDS.index('not_an_image')}"]
    assert reasons[f"square.{20 + BAD_KINDS.index('truncated_half')}"].startswith(
        "truncated JPEG (image file is truncated")
    # Alignment: each readable image's row equals that image extracted on its own.
    for kind in ("png", "cmyk", "grayscale", "large", "gif"):
        image_id = f"{20 + BAD_KINDS.index(kind)}"
        alone = tmp_path / f"alone-{kind}"
        make_dataset(alone, n_train=2, n_test=0)
        shutil.copy(data / "test" / f"{image_id}.jpg", alone / "test" / f"{image_id}.jpg")
        a_train, a_test = image_lists(alone)
        single = load_split(run(a_train, a_test, alone / "f").results[0].path, "test")
        row = list(te.ids).index(image_id)
        assert_close(te.features[row], single.features[0])


@pytest.mark.slow
def test_one_pass_equals_per_backbone_passes(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=3, n_test=2)
    train, test = image_lists(data)
    requests = [("mobilenet_025", "none"), ("inception_v3", "none")]
    together = run(train, test, tmp_path / "one", requests=requests)
    assert {r.backbone for r in together} == {"mobilenet_025", "inception_v3"}
    for backbone, _ in requests:
        alone = run(train, test, tmp_path / backbone, requests=[(backbone, "none")])
        for split in ("train", "test"):
            a = load_split(together.result(backbone).path, split)
            b = load_split(alone.result(backbone).path, split)
            assert list(a.ids) == list(b.ids)
            assert_close(a.features, b.features)
    assert load_split(together.result("inception_v3").path, "train").features.shape == (3, 2048)


def test_shards_merge_by_id_and_refuse_missing_or_doubled(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=7, n_test=5)
    train, test = image_lists(data)
    full = run(train, test, tmp_path / "full")
    out = tmp_path / "sharded"
    for i in (1, 2, 3):
        report = run(train, test, out, shard=(i, 3))
        assert report.results[0].path.name == f"mobilenet_025.shard-{i}-of-3.h5"
    aside = tmp_path / "aside.h5"
    shutil.move(out / "mobilenet_025.shard-3-of-3.h5", aside)
    with pytest.raises(HarnessError, match="shard 3 of 3 is missing"):
        merge_shards(out, "mobilenet_025", "none", 3)
    assert not feature_path(out, "mobilenet_025").exists()
    shutil.move(aside, out / "mobilenet_025.shard-3-of-3.h5")
    merged = merge_shards(out, "mobilenet_025", "none", 3)
    for split in ("train", "test"):
        a, b = load_split(full.results[0].path, split), load_split(merged, split)
        assert list(a.ids) == list(b.ids)
        assert_close(a.features, b.features)
        if split == "train":
            assert list(a.labels) == list(b.labels)
    # The merged file carries the full fingerprint: an unsharded run reuses it.
    assert run(train, test, out).results[0].reused
    # A doubled shard (shard 1's file copied over shard 2's) is refused.
    shutil.copy(out / "mobilenet_025.shard-1-of-3.h5", out / "mobilenet_025.shard-2-of-3.h5")
    with h5py.File(out / "mobilenet_025.shard-2-of-3.h5", "a") as handle:
        handle.attrs["shard"] = "2/3"
    with pytest.raises(HarnessError, match="is in both"):
        merge_shards(out, "mobilenet_025", "none", 3)
    for bad in ((0, 3), (4, 3)):
        with pytest.raises(HarnessError, match=r"need 1 <= i <= n, e.g. --shard 1/4"):
            run(train, test, out, shard=bad)


KILLER = textwrap.dedent("""
    import os, signal, sys, threading, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from features.extract import extract_features
    from features.weights import WeightsChoice
    from tests.features_fixtures import image_lists
    data, out, after = Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])

    def killer():
        # A real SIGKILL at an arbitrary moment once some parts exist: no cleanup runs.
        while True:
            if len(list((out / ".partial").glob("*/train-*.npz"))) >= after:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.001)

    threading.Thread(target=killer, daemon=True).start()
    train, test = image_lists(data)
    extract_features(train, test, [("mobilenet_025", "none")],
                     {"mobilenet_025": WeightsChoice(None, "none")}, out, batch_size=2,
                     progress=False)
    print("FINISHED")
""")


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path, caplog):
    data = make_dataset(tmp_path / "data", n_train=40, n_test=10)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    out = tmp_path / "killed"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(script), str(ROOT), str(data), str(out), "4"],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "FINISHED" not in proc.stdout
    assert not feature_path(out, "mobilenet_025").exists()  # nothing marked complete
    parts = list((out / ".partial").glob("*/*.npz"))
    assert 4 <= len(parts) < 25
    train, test = image_lists(data)
    caplog.set_level(logging.INFO, logger="features")
    resumed = run(train, test, out, batch_size=2)
    assert "resuming:" in caplog.text
    clean = run(train, test, tmp_path / "clean", batch_size=2)
    for split in ("train", "test"):
        a = load_split(resumed.results[0].path, split)
        b = load_split(clean.results[0].path, split)
        assert list(a.ids) == list(b.ids)
        assert_close(a.features, b.features)
    assert a.attrs["fingerprint"] == b.attrs["fingerprint"]


HALF_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from base.atomic import atomic_path
    with atomic_path(Path(sys.argv[2])) as tmp:
        tmp.write_bytes(b"half a feature file" * 1000)
        print(tmp, flush=True)
        time.sleep(600)
""")


def test_a_killed_writers_temp_file_is_removed_by_the_next_run(feat_data, tmp_path):
    """A SIGKILL during the final HDF5 write used to leave .NAME.h5.XXXX.tmp for ever."""
    out = tmp_path / "features"
    script = tmp_path / "half_writer.py"
    script.write_text(HALF_WRITER)
    writer = subprocess.Popen([sys.executable, str(script), str(ROOT),
                               str(feature_path(out, "mobilenet_025"))],
                              stdout=subprocess.PIPE, text=True)
    dead = Path(writer.stdout.readline().strip())
    writer.kill()
    writer.wait(timeout=30)
    writer.stdout.close()
    assert dead.is_file() and dead.parent == out
    from base.atomic import atomic_path

    with atomic_path(out / "other.h5") as alive:  # a live writer's file stays
        alive.write_bytes(b"in progress")
        run(*image_lists(feat_data), out)
        assert alive.is_file()
    assert not dead.exists()
    assert sorted(p.name for p in out.iterdir() if p.name != ".partial") == [
        "mobilenet_025.h5", "other.h5"]


LOCK_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from base.lock import workspace_lock
    with workspace_lock(Path(sys.argv[2]), "a test holding the lock"):
        print("locked", flush=True)
        time.sleep(600)
""")


def _demo_workspace(tmp_path: Path, n_train: int, n_test: int) -> Path:
    from competition.demo import generate_demo
    from tests.cli_runner import mobilenet_toml

    (tmp_path / "harness.toml").write_text(
        mobilenet_toml('competition = "demo"\nworkspace = "ws"', heads={"logreg": ""}))
    generate_demo(tmp_path / "ws" / "data", n_train=n_train, n_test=n_test)
    return tmp_path / "ws"


def _hold_lock(tmp_path: Path, lock: Path) -> subprocess.Popen:
    script = tmp_path / "holder.py"
    script.write_text(LOCK_HOLDER)
    holder = subprocess.Popen([sys.executable, str(script), str(ROOT), str(lock)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_features_run_on_a_workspace_is_refused_in_one_line(tmp_path):
    """Two runs at once: the second used to die in a traceback, leaving an orphan .partial."""
    from tests.cli_runner import run_harness

    ws = _demo_workspace(tmp_path, n_train=120, n_test=40)
    lock = ws / ".harness-features.lock"
    holder = _hold_lock(tmp_path, lock)
    try:
        refused = run_harness("-q", "features", cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()
    assert refused.returncode == 2, refused.stderr[-3000:]
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: the workspace is in use: {lock} is locked by pid {holder.pid} on "
        f"{socket.gethostname()} (a test holding the lock, since "), lines
    assert lines[0].endswith("wait for that run to finish (or stop it) and rerun")
    assert not (ws / "features" / "mobilenet_025.h5").exists()

    # Two real runs at once (the holder above was SIGKILLed: its lock is taken over).
    first, second = (subprocess.Popen(
        [sys.executable, "-m", "harness", "-q", "features"], cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
             "TF_CPP_MIN_LOG_LEVEL": "3"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2))
    outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in (first, second))
    for process in (first, second):
        process.stdout.close()
        process.stderr.close()
    assert outcomes[0][0] == 0, outcomes[0][1][-3000:]
    assert outcomes[1][0] in (0, 2), outcomes[1][1][-3000:]
    for code, err in outcomes:
        assert "Traceback" not in err
        if code == 2:
            assert err.strip().startswith(f"error: the workspace is in use: {lock} is locked by")
    assert sorted(p.name for p in (ws / "features").iterdir()) == ["mobilenet_025.h5"]


def test_a_real_photo_cut_to_a_tenth_is_flagged_not_padded_with_grey(tmp_path):
    """libjpeg used to 'recover' it with grey padding: predicted 0.60, nothing said."""
    from tests.cli_runner import run_harness
    from tests.shared_assets import MINI_DATA, shared_dir

    photo = shared_dir() / MINI_DATA / "test" / "1.jpg"
    ws = _demo_workspace(tmp_path, n_train=8, n_test=4)
    data = photo.read_bytes()
    (ws / "data" / "test" / "2.jpg").write_bytes(data[: len(data) // 10])
    result = run_harness("features", cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "HARNESS_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-3000:]
    path = ws / "features" / "mobilenet_025.h5"
    assert (f"test/2: truncated JPEG (image file is truncated (0 bytes not processed)); kept as "
            f"a row of zeros and listed in {path}:/test/failed") in result.stderr
    assert "0 train skipped, 1 test failed" in result.stderr
    with h5py.File(path, "r") as handle:
        assert [row[0] for row in handle["test/failed"].asstr()[()]] == ["2"]


def test_a_data_folder_whose_name_is_not_utf8_works(tmp_path):
    """A Latin-1 byte in a folder name used to crash inside TensorFlow (no TypeSpec)."""
    from tests.cli_runner import run_harness

    ws = _demo_workspace(tmp_path, n_train=6, n_test=3)
    latin = Path(os.fsdecode(bytes(ws) + b"/caf\xe9"))
    (ws / "data").rename(latin)
    result = run_harness("features", "--data-dir", os.fsdecode(b"ws/caf\xe9"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "features: 9 images, 0 train skipped, 0 test failed" in result.stderr
    assert len(load_split(ws / "features" / "mobilenet_025.h5", "test").ids) == 3


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grayscale_keeps_its_range(tmp_path, suffix):
    """Kaggle's medical and satellite images ship as 16-bit PNG/TIFF: the full 0-65535
    range maps onto 0-255 (not the low byte, not everything above 255 clipped to white)."""
    from PIL import Image

    from features.decode import decode_file

    ramp = np.linspace(0, 65535, 64 * 48).astype(np.uint16).reshape(48, 64)
    path = tmp_path / f"ramp{suffix}"
    Image.fromarray(ramp).save(path)
    pixels, reason = decode_file(path)
    assert reason == "" and pixels.shape == (48, 64, 3) and pixels.dtype == np.uint8
    expected = np.rint(ramp / 257.0)
    for channel in range(3):
        assert np.abs(pixels[:, :, channel].astype(int) - expected).max() <= 1
    assert pixels.min() == 0 and pixels.max() == 255


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".webp", ".tif"])
def test_rgba_bmp_webp_and_tiff_decode_to_their_rgb_pixels(tmp_path, suffix):
    from PIL import Image

    from features.decode import decode_file

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / f"image{suffix}"
    if suffix == ".png":  # with an alpha channel, which the features ignore
        alpha = rng.integers(0, 256, (20, 30, 1), dtype=np.uint8)
        Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(path)
    else:
        Image.fromarray(rgb, "RGB").save(path, **({"lossless": True} if suffix == ".webp"
                                                  else {}))
    pixels, reason = decode_file(path)
    assert reason == ""
    np.testing.assert_array_equal(pixels, rgb)
