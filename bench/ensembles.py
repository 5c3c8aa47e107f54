"""Speed and memory of the ensemble stage on synthetic features with class structure.

Writes 3 backbones x 2048 float32 columns (like ResNet50 + InceptionV3 + Xception) for
--rows training rows and --rows/2 test rows in the feature-store layout, then runs 5-fold
CV of `all3-logreg` and `all3-dropout` (the heads' default parameters, as the default
ensembles use them) each in its own subprocess, so each peak RSS is its own. Each
ensemble is timed through `run_ensembles`: 5 fold fits, the refit on all training rows
and the test predictions.

Memory: `peak` is the child's peak RSS (ru_maxrss) at the end; `base` its peak RSS after
importing keras and scikit-learn, before anything is read. The ratio is
(peak - base) / (bytes of the train feature matrix), so the matrix itself counts 1.0 and
the target (<= 2.5) leaves 1.5 matrices for fold copies, test matrix and TensorFlow.

    python bench/ensembles.py --rows 25000     # alone on the machine: it times itself
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKBONES = {"resnet50": 2048, "inception_v3": 2048, "xception": 2048}
CONFIG = """competition = "demo"
workspace = "work"
[features]
backbones = ["resnet50", "inception_v3", "xception"]
[cv]
folds = 5
[ensembles.all3-logreg]
backbones = ["resnet50", "inception_v3", "xception"]
head = "logreg"
[ensembles.all3-dropout]
backbones = ["resnet50", "inception_v3", "xception"]
head = "dropout"
"""


def write_features(features_dir: Path, rows: int, test_rows: int, seed: int = 0) -> None:
    """Synthetic GAP-like features: class means in a low-rank subspace plus noise, streamed
    through the feature store's writer in blocks (memory flat in `rows`)."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from features.store import feature_file_writer

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, rows)
    test_labels = rng.integers(0, 2, test_rows)
    for name, width in BACKBONES.items():
        direction = rng.normal(0, 0.03, width).astype(np.float32)
        attrs = {"backbone": name, "feature_dim": width, "weights": "synthetic", "tta": "none",
                 "classes": json.dumps(["circle", "square"]), "fingerprint": f"bench-{rows}"}
        with feature_file_writer(features_dir / f"{name}.h5", attrs) as writer:
            for split, n, y in (("train", rows, labels), ("test", test_rows, test_labels)):
                ids = [f"{split[0]}{i}" for i in range(1, n + 1)]
                writer.add_split(split, ids, width, labels=y if split == "train" else None)
                for start in range(0, n, 2048):
                    stop = min(n, start + 2048)
                    block = rng.standard_normal((stop - start, width), dtype=np.float32)
                    block += np.outer(2 * y[start:stop] - 1, direction).astype(np.float32)
                    writer.write_rows(split, np.arange(start, stop), block + 1.0)


def child(config_path: str, name: str) -> None:
    """Run one ensemble; print a JSON line with seconds and RSS (MiB)."""
    sys.path.insert(0, str(ROOT))
    import keras  # noqa: F401 - import cost is part of the baseline, not of the ensemble
    import sklearn.linear_model  # noqa: F401

    from ensembles.run import run_ensembles
    from harness.config import load_config

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    config = load_config(Path(config_path))
    start = time.perf_counter()
    (result,) = run_ensembles(config, names=[name], force=True, progress=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    epochs = [len(h.get("loss", [])) for h in result.histories]
    print(json.dumps({"name": name, "seconds": seconds, "base_mib": baseline,
                      "peak_mib": peak, "cv_log_loss": result.cv_log_loss,
                      "cv_accuracy": result.cv_accuracy, "epochs": epochs or "-"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=25_000)
    parser.add_argument("--test-rows", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    test_rows = args.rows // 2 if args.test_rows is None else args.test_rows
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "OPENBLAS_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TF_NUM_INTRAOP_THREADS": str(args.threads), "TF_NUM_INTEROP_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "harness.toml").write_text(CONFIG)
        write_features(root / "work" / "features", args.rows, test_rows)
        matrix_mib = args.rows * sum(BACKBONES.values()) * 4 / 2**20
        test_mib = test_rows * sum(BACKBONES.values()) * 4 / 2**20
        print(f"train matrix {args.rows} x {sum(BACKBONES.values())} float32 = "
              f"{matrix_mib:.0f} MiB; test {test_rows} rows = {test_mib:.0f} MiB; "
              f"{args.threads} threads")
        print(f"{'ensemble':<14}{'seconds':>9}{'base MiB':>10}{'peak MiB':>10}"
              f"{'peak-base':>13}{'ratio':>7}{'log loss':>10}{'acc':>7}  epochs per fold")
        for name in ("all3-logreg", "all3-dropout"):
            out = subprocess.run([sys.executable, __file__, "--child", str(root / "harness.toml"),
                                  name], env=env, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            above = r["peak_mib"] - r["base_mib"]
            print(f"{name:<14}{r['seconds']:>9.1f}{r['base_mib']:>10.0f}{r['peak_mib']:>10.0f}"
                  f"{above:>13.0f}{above / matrix_mib:>7.2f}{r['cv_log_loss']:>10.4f}"
                  f"{r['cv_accuracy']:>7.3f}  {r['epochs']}")
        print("ratio = (peak RSS - peak RSS after importing keras and sklearn) / train matrix "
              "bytes; target <= 2.5")


if __name__ == "__main__":
    main()
