"""competition/: catalog, image lists (ids, labels, order), sample checks, demo data."""

from __future__ import annotations

import hashlib
import os
import stat

import numpy as np
import pytest

from base.errors import HarnessError
from competition.demo import generate_demo
from competition.images import (
    check_sample_submission,
    list_test_images,
    list_train_images,
    natural_key,
)
from competition.spec import CATALOG, get_spec
from tests.image_files import write_competition, write_jpeg

REDUX = get_spec("dogs-vs-cats-redux-kernels-edition")


def test_catalog_has_the_reference_competitions():
    assert REDUX.metric == "log_loss" and REDUX.classes == ("cat", "dog")
    assert get_spec("dogs-vs-cats").metric == "accuracy"
    assert not get_spec("demo").downloadable
    assert {"generic-folders", "generic-csv"} <= set(CATALOG)


def test_unknown_competition_lists_known_ones():
    with pytest.raises(HarnessError, match="unknown competition 'dogs'.*dogs-vs-cats-redux"):
        get_spec("dogs")


def test_natural_order_is_numeric():
    ids = ["10", "2", "1", "cat.10", "cat.9"]
    assert sorted(ids, key=natural_key) == ["1", "2", "10", "cat.9", "cat.10"]


def test_train_and_test_lists_keep_ids_labels_and_numeric_order(tmp_path):
    write_competition(tmp_path, n_per_class=11, n_test=12)
    train = list_train_images(REDUX, tmp_path)
    assert train.ids[:3] == ("cat.0", "cat.1", "cat.2")
    assert train.ids[10] == "cat.10" and train.ids[11] == "dog.0"
    assert train.labels.tolist() == [0] * 11 + [1] * 11
    assert all(p.stem == i for p, i in zip(train.paths, train.ids))
    test = list_test_images(REDUX, tmp_path)
    assert test.ids == tuple(str(i) for i in range(1, 13))
    assert test.labels is None
    check_sample_submission(REDUX, tmp_path, test)


def test_folder_per_class_layout_discovers_classes(tmp_path):
    spec = get_spec("generic-folders")
    for name in ("zebra", "ant", "bee"):
        for i in (1, 2, 10):
            write_jpeg(tmp_path / "train" / name / f"{i}.jpg", seed=i)
    write_jpeg(tmp_path / "test" / "a1.jpg")
    train = list_train_images(spec, tmp_path)
    assert train.classes == ("ant", "bee", "zebra")
    assert train.ids[:3] == ("ant/1", "ant/2", "ant/10")
    assert np.bincount(train.labels).tolist() == [3, 3, 3]


def test_csv_layout_reads_labels(tmp_path):
    spec = get_spec("generic-csv")
    for i in (1, 2, 10):
        write_jpeg(tmp_path / "train" / f"img{i}.jpg", seed=i)
    (tmp_path / "labels.csv").write_text("id,label\nimg1,b\nimg2,a\nimg10,b\n")
    train = list_train_images(spec, tmp_path)
    assert train.ids == ("img1", "img2", "img10")
    assert [train.classes[i] for i in train.labels] == ["b", "a", "b"]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "train folder .* does not exist"),
        (lambda root: (root / "train").mkdir(), "holds no images"),
        (lambda root: write_jpeg(root / "train" / "cat.1.jpg"), "only class 'cat'"),
        (lambda root: write_jpeg(root / "train" / "cow.1.jpg"), "does not start with a class"),
    ],
    ids=["missing", "empty", "single-class", "unknown-prefix"],
)
def test_bad_train_folders_fail_clearly(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(HarnessError, match=message):
        list_train_images(REDUX, tmp_path)


def test_sample_submission_mismatch_is_reported(tmp_path):
    write_competition(tmp_path, n_test=4)
    (tmp_path / "sample_submission.csv").write_text("id,label\n1,0.5\n2,0.5\n3,0.5\n99,0.5\n")
    with pytest.raises(HarnessError, match=r"1 id\(s\) without an image .*'99'.*'4'"):
        check_sample_submission(REDUX, tmp_path, list_test_images(REDUX, tmp_path))


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_demo_is_deterministic_complete_and_reused(tmp_path):
    spec = get_spec("demo")
    first = generate_demo(tmp_path / "a", n_train=20, n_test=10)
    second = generate_demo(tmp_path / "b", n_train=20, n_test=10)
    assert _digest(first) == _digest(second)
    train = list_train_images(spec, first)
    assert len(train) == 20 and np.bincount(train.labels).tolist() == [10, 10]
    test = list_test_images(spec, first)
    check_sample_submission(spec, first, test)
    solution = (first / "solution.csv").read_text().split()
    assert len(solution) == 11 and {row.split(",")[1] for row in solution[1:]} == {"0", "1"}
    mtime = (first / "train" / "circle.0.jpg").stat().st_mtime_ns
    generate_demo(first, n_train=20, n_test=10)
    assert (first / "train" / "circle.0.jpg").stat().st_mtime_ns == mtime


def test_demo_refuses_to_overwrite_foreign_files(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(HarnessError, match="did not write"):
        generate_demo(tmp_path, n_train=4, n_test=2)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    from base.atomic import atomic_path

    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_and_the_demo_folder_get_the_usual_mode(tmp_path, umask):
    """mkstemp/mkdtemp create 0600/0700: the outputs used to be unreadable by teammates."""
    import h5py

    from base.atomic import atomic_path

    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "report.csv") as tmp:
            tmp.write_text("id,label\n")
        with atomic_path(tmp_path / "features.h5") as tmp, h5py.File(tmp, "w") as handle:
            handle["x"] = [1.0]
        data = generate_demo(tmp_path / "data", n_train=4, n_test=2)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.csv").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "features.h5").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(data.stat().st_mode) == 0o777 & ~umask
