"""Data folders laid out as each catalog competition's Kaggle download, and the metrics as
the competitions' evaluation pages define them (independent of competition.metrics).

Each builder writes tiny genuine images (JPEG, PNG or TIFF, as the competition ships them)
whose label is their content: a colour per class, a colour channel per tag, a brightness
per grade or value, and returns the withheld test labels. `CASES` pairs each catalog entry
with its builder, its scorer and the score a working harness must reach.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tests.image_files import write_jpeg

PALETTE = [(230, 30, 30), (30, 210, 30), (30, 30, 230), (230, 230, 30), (30, 220, 220)]
TAGS = ("agriculture", "primary", "water")  # Planet tag names; a colour channel each


# --- the metrics, as the competitions' evaluation pages define them ----------------------

def kaggle_log_loss(truth: np.ndarray, proba: np.ndarray) -> float:
    """Multi-class log loss: each row divided by its sum, then clipped to [1e-15, 1-1e-15];
    `truth` (n, k) one-hot. Binary: the one column is P(class 1)."""
    proba = np.asarray(proba, np.float64)
    if proba.ndim == 1:
        proba, truth = np.column_stack([1 - proba, proba]), np.eye(2)[truth]
    proba = proba / proba.sum(axis=1, keepdims=True)
    proba = np.clip(proba, 1e-15, 1 - 1e-15)
    return float(-np.mean(np.sum(truth * np.log(proba), axis=1)))


def pairwise_auc(truth: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the share of (positive, negative) pairs ranked right, ties half."""
    pos, neg = score[truth == 1][:, None], score[truth == 0][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def micro_f1(truth: list, predicted: list) -> float:
    """Micro F1 = 2 TP / (2 TP + FP + FN), pooled over every (image, class) decision."""
    tp = sum(t == p for t, p in zip(truth, predicted))
    wrong = len(truth) - tp  # each wrong label is one FP (its class) and one FN (the true)
    return 2 * tp / (2 * tp + 2 * wrong)


def quadratic_kappa(truth: np.ndarray, predicted: np.ndarray, n: int) -> float:
    """APTOS's kappa: O the confusion matrix, w_ij = (i-j)^2 / (N-1)^2, E the outer product
    of the two histograms scaled to O's total; kappa = 1 - sum(wO) / sum(wE)."""
    observed = np.zeros((n, n))
    for t, p in zip(truth, predicted):
        observed[t, p] += 1
    i, j = np.indices((n, n))
    weights = (i - j) ** 2 / (n - 1) ** 2
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    return float(1 - (weights * observed).sum() / (weights * expected).sum())


def mean_f2(truth: list[set], predicted: list[set]) -> float:
    """Planet's score: per image F2 = 5 p r / (4 p + r) of the predicted tag set, averaged."""
    scores = []
    for true, guess in zip(truth, predicted):
        hit = len(true & guess)
        p, r = (hit / len(guess) if guess else 0.0), (hit / len(true) if true else 0.0)
        scores.append(5 * p * r / (4 * p + r) if p + r else 0.0)
    return float(np.mean(scores))


def rmse(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, float) - truth) ** 2)))


# --- data folders in each competition's layout -------------------------------------------

def hexid(*parts) -> str:
    return hashlib.md5("-".join(map(str, parts)).encode()).hexdigest()[:16]


def draw(n: int, k: int, seed: int) -> np.ndarray:
    """n labels in 0..k-1, every one about n/k times, shuffled."""
    return np.random.default_rng(seed).permutation(np.resize(np.arange(k), n))


def coloured(path: Path, k: int, seed: int) -> None:
    write_jpeg(path, seed=seed, size=32, colour=PALETTE[k])


def grey(path: Path, level: float, seed: int) -> None:
    """Brightness `level` in [0, 1]."""
    value = int(30 + 200 * level)
    write_jpeg(path, seed=seed, size=32, colour=(value, value, value))


def tagged(path: Path, tags: set, seed: int) -> None:
    write_jpeg(path, seed=seed, size=32,
               colour=tuple(230 if t in tags else 30 for t in TAGS))


def csv(path: Path, columns: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(columns).to_csv(path, index=False)


@dataclass
class Case:
    """One competition: `build(root)` writes its download and returns the test truth (id
    as in the sample -> class index, tag set or value); `score(truth, table)` is its metric
    on the written CSV; `bound` the score a correct pipeline beats (chance is far off),
    from below, or from above for a loss (`loss`)."""

    build: Callable[[Path], dict]
    score: Callable[[dict, pd.DataFrame], float]
    bound: float
    loss: bool = False
    heads: tuple[str, ...] = ("logreg",)
    cv: str = ""


def binary_csv_layout(root, *, labels_csv, id_col, label_col, name, ext=".jpg",
                      train="train", test="test", id_has_ext=False, more=None):
    """The ROC AUC competitions: a labels CSV of 0/1, images named by id."""
    y = draw(16, 2, 1)
    ids = [name(i) for i in range(16)]
    for i, (image_id, c) in enumerate(zip(ids, y)):
        coloured(root / train / f"{image_id}{ext}", c, i)
    shown = [f"{i}{ext}" if id_has_ext else i for i in ids]
    csv(root / labels_csv, {id_col: shown, **(more or {}), label_col: y})
    truth = {}
    for j, c in enumerate(draw(12, 2, 2)):
        image_id = name(1000 + j)
        coloured(root / test / f"{image_id}{ext}", c, 100 + j)
        truth[f"{image_id}{ext}" if id_has_ext else image_id] = int(c)
    csv(root / "sample_submission.csv", {id_col: list(truth), label_col: 0.5})
    return truth


def auc_of(column: str) -> Callable:
    def score(truth, table):
        return pairwise_auc(np.array([truth[i] for i in table.iloc[:, 0]]),
                            table[column].to_numpy(float))
    return score


def cats_and_dogs(root, test_dir="test", sample="sample_submission.csv", placeholder=0.5):
    """Dogs vs. Cats: classes in the file names, test images numbered."""
    for i, c in enumerate(draw(16, 2, 1)):
        coloured(root / "train" / f"{('cat', 'dog')[c]}.{i}.jpg", c, i)
    truth = {}
    for j, c in enumerate(draw(12, 2, 2), 1):
        coloured(root / test_dir / f"{j}.jpg", c, 100 + j)
        truth[str(j)] = int(c)
    csv(root / sample, {"id": list(truth), "label": placeholder})
    return truth


def redux(root):
    return cats_and_dogs(root)


def dogs_vs_cats(root):
    return cats_and_dogs(root, "test1", "sampleSubmission.csv", 0)


def accuracy_of(column: str, names: list | None = None) -> Callable:
    def score(truth, table):
        wanted = [names[truth[i]] if names else str(truth[i]) for i in table.iloc[:, 0]]
        return float(np.mean([str(v) == w for v, w in zip(table[column], wanted)]))
    return score


def class_columns_loss(classes: list) -> Callable:
    def score(truth, table):
        truth_cols = np.eye(len(classes))[[truth[i] for i in table.iloc[:, 0]]]
        return kaggle_log_loss(truth_cols, table[classes].to_numpy(float))
    return score


BREEDS = ["afghan_hound", "beagle", "collie"]


def dog_breed(root):
    ids = [hexid("breed", i) for i in range(18)]
    y = draw(18, 3, 3)
    for i, (image_id, c) in enumerate(zip(ids, y)):
        coloured(root / "train" / f"{image_id}.jpg", c, i)
    csv(root / "labels.csv", {"id": ids, "breed": [BREEDS[c] for c in y]})
    truth = {}
    for j, c in enumerate(draw(12, 3, 4)):
        image_id = hexid("breed-test", j)
        coloured(root / "test" / f"{image_id}.jpg", c, 100 + j)
        truth[image_id] = int(c)
    csv(root / "sample_submission.csv", {"id": list(truth), **{b: 1 / 3 for b in BREEDS}})
    return truth


DRIVER_CLASSES = ["c0", "c1", "c2"]


def state_farm(root):
    rows = []
    for d, subject in enumerate(["p002", "p012", "p014", "p015"]):
        for k, name in enumerate(DRIVER_CLASSES):
            for r in range(2):
                img = f"img_{d * 100 + k * 10 + r}.jpg"
                coloured(root / "imgs" / "train" / name / img, k, d * 100 + k * 10 + r)
                rows.append((subject, name, img))
    csv(root / "driver_imgs_list.csv", {"subject": [r[0] for r in rows],
                                        "classname": [r[1] for r in rows],
                                        "img": [r[2] for r in rows]})
    truth = {}
    for j, c in enumerate(draw(12, 3, 5)):
        coloured(root / "imgs" / "test" / f"img_{5000 + j}.jpg", c, 500 + j)
        truth[f"img_{5000 + j}.jpg"] = int(c)
    csv(root / "sample_submission.csv", {"img": list(truth),
                                         **{c: 0.1 for c in DRIVER_CLASSES}})
    return truth


SEEDLINGS = ["Black-grass", "Common Chickweed", "Loose Silky-bent"]


def plant_seedlings(root):
    for i, c in enumerate(draw(18, 3, 6)):
        coloured(root / "train" / SEEDLINGS[c] / f"{hexid('seed', i)}.png", c, i)
    truth = {}
    for j, c in enumerate(draw(12, 3, 7)):
        name = f"{hexid('seed-test', j)}.png"
        coloured(root / "test" / name, c, 100 + j)
        truth[name] = int(c)
    csv(root / "sample_submission.csv", {"file": list(truth), "species": "Black-grass"})
    return truth


PADDY = ["bacterial_leaf_blight", "blast", "normal"]


def paddy(root):
    y = draw(18, 3, 8)
    ids = [f"{100330 + i}.jpg" for i in range(18)]
    for i, (image_id, c) in enumerate(zip(ids, y)):
        coloured(root / "train_images" / PADDY[c] / image_id, c, i)
    csv(root / "train.csv", {"image_id": ids, "label": [PADDY[c] for c in y],
                             "variety": "ADT45", "age": 45})
    truth = {}
    for j, c in enumerate(draw(12, 3, 9)):
        coloured(root / "test_images" / f"{200001 + j}.jpg", c, 100 + j)
        truth[f"{200001 + j}.jpg"] = int(c)
    csv(root / "sample_submission.csv", {"image_id": list(truth), "label": ""})
    return truth


def cassava(root):
    y = draw(25, 5, 10)
    ids = [f"{1000015157 + 7 * i}.jpg" for i in range(25)]
    for i, (image_id, c) in enumerate(zip(ids, y)):
        coloured(root / "train_images" / image_id, c, i)
    csv(root / "train.csv", {"image_id": ids, "label": y})
    (root / "label_num_to_disease_map.json").write_text(json.dumps(
        {"0": "Cassava Bacterial Blight (CBB)", "1": "Cassava Brown Streak Disease (CBSD)",
         "2": "Cassava Green Mottle (CGM)", "3": "Cassava Mosaic Disease (CMD)",
         "4": "Healthy"}))
    truth = {}
    for j, c in enumerate(draw(15, 5, 11)):
        coloured(root / "test_images" / f"{2216849948 + j}.jpg", c, 100 + j)
        truth[f"{2216849948 + j}.jpg"] = int(c)
    csv(root / "sample_submission.csv", {"image_id": list(truth), "label": 4})
    return truth


def aptos(root):
    y = draw(25, 5, 12)
    ids = [hexid("aptos", i)[:12] for i in range(25)]
    for i, (image_id, g) in enumerate(zip(ids, y)):
        grey(root / "train_images" / f"{image_id}.png", g / 4, i)
    csv(root / "train.csv", {"id_code": ids, "diagnosis": y})
    truth = {}
    for j, g in enumerate(draw(15, 5, 13)):
        image_id = hexid("aptos-test", j)[:12]
        grey(root / "test_images" / f"{image_id}.png", g / 4, 100 + j)
        truth[image_id] = int(g)
    csv(root / "sample_submission.csv", {"id_code": list(truth), "diagnosis": 0})
    return truth


def kappa_score(truth, table):
    return quadratic_kappa(np.array([truth[i] for i in table["id_code"]]),
                           table["diagnosis"].to_numpy(int), 5)


LEAVES = ["healthy", "multiple_diseases", "rust", "scab"]


def plant_pathology(root):
    y = draw(20, 4, 14)
    ids = [f"Train_{i}" for i in range(20)]
    for i, c in enumerate(y):
        coloured(root / "images" / f"Train_{i}.jpg", c, i)
    csv(root / "train.csv", {"image_id": ids, **{name: (y == k).astype(int)
                                                 for k, name in enumerate(LEAVES)}})
    truth = {}
    for j, c in enumerate(draw(12, 4, 15)):
        coloured(root / "images" / f"Test_{j}.jpg", c, 100 + j)
        truth[f"Test_{j}"] = int(c)
    csv(root / "test.csv", {"image_id": list(truth)})
    csv(root / "sample_submission.csv", {"image_id": list(truth),
                                         **{name: 0.25 for name in LEAVES}})
    return truth


def mean_column_auc_score(truth, table):
    y = np.array([truth[i] for i in table["image_id"]])
    return float(np.mean([pairwise_auc((y == k).astype(int), table[name].to_numpy(float))
                          for k, name in enumerate(LEAVES)]))


COMBOS = [{t for b, t in enumerate(TAGS) if mask >> b & 1} for mask in range(1, 8)]


def planet(root):
    labels = []
    for i, combo in enumerate(draw(28, 7, 16)):
        tagged(root / "train-jpg" / f"train_{i}.jpg", COMBOS[combo], i)
        labels.append(" ".join(sorted(COMBOS[combo])))
    csv(root / "train_v2.csv", {"image_name": [f"train_{i}" for i in range(28)],
                                "tags": labels})
    truth = {}
    for j, combo in enumerate(draw(14, 7, 17)):
        folder, name = ("test-jpg", f"test_{j}") if j < 9 else ("test-jpg-additional",
                                                               f"file_{j}")
        tagged(root / folder / f"{name}.jpg", COMBOS[combo], 100 + j)
        truth[name] = COMBOS[combo]
    csv(root / "sample_submission_v2.csv", {"image_name": list(truth),
                                            "tags": "primary clear agriculture road water"})
    return truth


def f2_score(truth, table):
    # Submitting all three tags everywhere scores 0.84 on these combinations: the bound
    # is above it.
    return mean_f2([truth[i] for i in table["image_name"]],
                   [set(str(v).split()) if isinstance(v, str) else set()
                    for v in table["tags"]])


PET_COLUMNS = ["Subject Focus", "Eyes", "Face", "Near", "Action", "Accessory", "Group",
               "Collage", "Human", "Occlusion", "Info", "Blur"]


def petfinder(root):
    rng = np.random.default_rng(18)
    values = rng.integers(1, 101, 30)
    ids = [hexid("pet", i) * 2 for i in range(30)]
    for i, (image_id, v) in enumerate(zip(ids, values)):
        grey(root / "train" / f"{image_id}.jpg", v / 100, i)
    csv(root / "train.csv", {"Id": ids, **{c: 0 for c in PET_COLUMNS}, "Pawpularity": values})
    truth = {}
    for j, v in enumerate(rng.integers(1, 101, 12)):
        image_id = hexid("pet-test", j) * 2
        grey(root / "test" / f"{image_id}.jpg", v / 100, 100 + j)
        truth[image_id] = float(v)
    csv(root / "test.csv", {"Id": list(truth), **{c: 0 for c in PET_COLUMNS}})
    csv(root / "sample_submission.csv", {"Id": list(truth), "Pawpularity": 50.0})
    return truth


def rmse_score(truth, table):
    return rmse(np.array([truth[i] for i in table["Id"]]), table["Pawpularity"])


GENERIC = ["ant", "bee", "wasp"]


def generic_csv(root):
    y = draw(18, 3, 19)
    for i, c in enumerate(y):
        coloured(root / "train" / f"t{i}.jpg", c, i)
    csv(root / "labels.csv", {"id": [f"t{i}" for i in range(18)],
                              "label": [GENERIC[c] for c in y]})
    truth = {}
    for j, c in enumerate(draw(12, 3, 20)):
        coloured(root / "test" / f"q{j}.jpg", c, 100 + j)
        truth[f"q{j}"] = int(c)
    csv(root / "sample_submission.csv", {"id": list(truth), **{g: 1 / 3 for g in GENERIC}})
    return truth


def generic_folders(root):
    for i, c in enumerate(draw(18, 3, 21)):
        coloured(root / "train" / GENERIC[c] / f"{i}.jpg", c, i)
    truth = {}
    for j, c in enumerate(draw(12, 3, 22)):
        coloured(root / "test" / f"{j}.jpg", c, 100 + j)
        truth[str(j)] = int(c)
    # Kaggle's samples list class columns in their own order.
    csv(root / "sample_submission.csv", {"id": list(truth),
                                         **{g: 1 / 3 for g in reversed(GENERIC)}})
    return truth


def _binary_loss(column):
    def score(truth, table):
        return kaggle_log_loss(np.array([truth[i] for i in table.iloc[:, 0]]),
                               table[column].to_numpy(float))
    return score


CASES: dict[str, Case] = {
    "dogs-vs-cats-redux-kernels-edition": Case(redux, _binary_loss("label"), 0.45, loss=True),
    "dogs-vs-cats": Case(dogs_vs_cats, accuracy_of("label"), 0.8),
    "aerial-cactus-identification": Case(
        lambda root: binary_csv_layout(root, labels_csv="train.csv", id_col="id",
                                       label_col="has_cactus", id_has_ext=True,
                                       name=lambda i: hexid("cactus", i)),
        auc_of("has_cactus"), 0.9),
    "histopathologic-cancer-detection": Case(
        lambda root: binary_csv_layout(root, labels_csv="train_labels.csv", id_col="id",
                                       label_col="label", ext=".tif",
                                       name=lambda i: hexid("patch", i) * 2),
        auc_of("label"), 0.9),
    "invasive-species-monitoring": Case(
        lambda root: binary_csv_layout(root, labels_csv="train_labels.csv", id_col="name",
                                       label_col="invasive", name=lambda i: str(i + 1)),
        auc_of("invasive"), 0.9),
    "siim-isic-melanoma-classification": Case(
        lambda root: binary_csv_layout(
            root, labels_csv="train.csv", id_col="image_name", label_col="target",
            train="jpeg/train", test="jpeg/test", name=lambda i: f"ISIC_{2000000 + i:07d}",
            more={"patient_id": "IP_7279968", "sex": "male", "age_approx": 45.0,
                  "anatom_site_general_challenge": "torso", "diagnosis": "unknown",
                  "benign_malignant": "benign"}),
        auc_of("target"), 0.9),
    "dog-breed-identification": Case(dog_breed, class_columns_loss(BREEDS), 0.8, loss=True),
    "state-farm-distracted-driver-detection": Case(
        state_farm, class_columns_loss(DRIVER_CLASSES), 0.8, loss=True, cv='group_column = "subject"\n'),
    "plant-seedlings-classification": Case(
        plant_seedlings, lambda truth, table: micro_f1(
            [SEEDLINGS[truth[i]] for i in table["file"]], list(table["species"])), 0.75),
    "paddy-disease-classification": Case(paddy, accuracy_of("label", PADDY), 0.75),
    "cassava-leaf-disease-classification": Case(cassava, accuracy_of("label"), 0.7),
    "aptos2019-blindness-detection": Case(aptos, kappa_score, 0.8, heads=("ridge",)),
    "plant-pathology-2020-fgvc7": Case(plant_pathology, mean_column_auc_score, 0.85),
    "planet-understanding-the-amazon-from-space": Case(
        planet, f2_score, 0.9, heads=("logreg", "dropout")),
    "petfinder-pawpularity-score": Case(
        petfinder, rmse_score, 15.0, loss=True, heads=("ridge", "dropout")),
    "generic-csv": Case(generic_csv, class_columns_loss(GENERIC), 0.8, loss=True),
    "generic-folders": Case(generic_folders, class_columns_loss(GENERIC), 0.8, loss=True),
}
