"""Benchmark: the one-pass harness vs a Keras 3 port of the seed recipe vs the model alone.

Prints, from one run on N real photos (default 200):
  (a) the harness extracting every backbone in one pass (tf.data decode once, resize per size),
  (b) the seed recipe ported to Keras 3: one `image_dataset_from_directory` (batch 16, no
      shuffle) + `model.predict` pass per backbone,
  (c) the model-only bound: each backbone's `predict` on pre-decoded, pre-resized tensors,
ratios a/b and a/c, images/s, the fraction of the fp32 roofline, warm-rerun/cold time,
and peak RSS at N and 4N images (separate processes).

    python bench/extract.py --n 48                 # small N on a shared machine
    python bench/extract.py --n 200 --sweep        # plus batch/threads/XLA probes

Weights default to none (random init): fine for speed, meaningless for quality.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from competition.images import ImageList, natural_key  # noqa: E402

DATA = Path("/work/shared/data/dogs-vs-cats-mini/train")
ROOFLINE_IMG_S = 5.4  # ResNet50+InceptionV3+Xception at 196 GFLOPS fp32 (measured peak)


def photos(data: Path, n: int) -> ImageList:
    files = sorted((p for p in data.iterdir() if p.suffix.lower() == ".jpg"),
                   key=lambda p: natural_key(p.name))
    # Interleave cats and dogs so any N holds both classes.
    cats = [p for p in files if p.name.startswith("cat.")]
    dogs = [p for p in files if p.name.startswith("dog.")]
    chosen = [p for pair in zip(cats, dogs) for p in pair][:n]
    chosen.sort(key=lambda p: natural_key(p.stem))
    labels = np.asarray([int(p.name.startswith("dog.")) for p in chosen], np.int64)
    return ImageList("train", tuple(p.stem for p in chosen), tuple(chosen), labels,
                     ("cat", "dog"))


def empty_test() -> ImageList:
    return ImageList("test", (), (), None, ("cat", "dog"))


def harness(images: ImageList, backbones: list[str], out: Path, batch: int, threads: int):
    from features.extract import extract_features
    from features.weights import WeightsChoice

    weights = {b: WeightsChoice(None, "none") for b in backbones}
    return extract_features(images, empty_test(), [(b, "none") for b in backbones], weights,
                            out, batch_size=batch, threads=threads, progress=False)


def seed_recipe(images: ImageList, backbones: list[str]) -> float:
    """The seed recipe in Keras 3: one directory-loader pass + predict per backbone."""
    import keras

    from features.backbones import get_backbone
    from features.runtime import seeded_random_init

    with tempfile.TemporaryDirectory() as folder:
        for path in images.paths:
            os.symlink(path, Path(folder) / path.name)
        start = time.perf_counter()
        for name in backbones:
            spec = get_backbone(name)
            with seeded_random_init():
                model = spec.build(None)
            dataset = keras.utils.image_dataset_from_directory(
                folder, labels=None, image_size=(spec.input_size, spec.input_size),
                batch_size=16, shuffle=False, verbose=False)
            preprocess = spec.preprocess.target()
            model.predict(dataset.map(preprocess), verbose=0)
        return time.perf_counter() - start


def model_only(images: ImageList, backbones: list[str]) -> tuple[float, dict]:
    """predict on pre-decoded, pre-resized in-memory tensors (decode and build not timed)."""
    import tensorflow as tf

    from features.backbones import get_backbone
    from features.decode import decode_file
    from features.runtime import seeded_random_init

    decoded = [decode_file(p)[0] for p in images.paths]
    total, per = 0.0, {}
    for name in backbones:
        spec = get_backbone(name)
        size = spec.input_size
        batch = np.stack([tf.image.resize(x, (size, size)).numpy() for x in decoded])
        batch = np.asarray(spec.preprocess(batch))
        with seeded_random_init():
            model = spec.build(None)
        model.predict(batch[:2], verbose=0)  # warm-up: graph tracing is not model time
        start = time.perf_counter()
        model.predict(batch, batch_size=32, verbose=0)
        per[name] = time.perf_counter() - start
        total += per[name]
    return total, per


def sweep(images: ImageList, name: str) -> None:
    """Forward-only probes of one backbone: batch size, predict vs tf.function, XLA."""
    import tensorflow as tf

    from features.backbones import get_backbone

    spec = get_backbone(name)
    size = spec.input_size
    x = np.random.default_rng(0).uniform(0, 255, (32, size, size, 3)).astype("float32")
    model = spec.build(None)
    preprocess = spec.preprocess.target()
    for label, jit in (("tf.function", False), ("tf.function+XLA", True)):
        fn = tf.function(lambda t: model(preprocess(t), training=False), jit_compile=jit)
        for bs in (8, 16, 32):
            fn(x[:bs])
            start = time.perf_counter()
            for k in range(0, 32, bs):
                fn(x[k:k + bs]).numpy()
            print(f"  sweep {name} {label:16s} batch {bs:2d}: "
                  f"{32 / (time.perf_counter() - start):6.2f} img/s")
    model.predict(x[:2], verbose=0)
    start = time.perf_counter()
    model.predict(x, batch_size=32, verbose=0)
    print(f"  sweep {name} predict          batch 32: "
          f"{32 / (time.perf_counter() - start):6.2f} img/s")


def child_rss(n: int, backbones: list[str], batch: int, threads: int) -> None:
    images = photos(DATA, n)
    with tempfile.TemporaryDirectory() as out:
        harness(images, backbones, Path(out), batch, threads)
    print(f"RSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")


def rss_of(n: int, args: argparse.Namespace) -> float:
    cmd = [sys.executable, __file__, "--child-rss", str(n), "--backbones", args.backbones,
           "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return int(out.split("RSS_KB")[-1].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--backbones", default="resnet50,inception_v3,xception")
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-rss", action="store_true", help="skip the N / 4N RSS runs")
    parser.add_argument("--sweep", action="store_true", help="batch/XLA probes on xception")
    parser.add_argument("--child-rss", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    backbones = [b for b in args.backbones.split(",") if b]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.child_rss:
        child_rss(args.child_rss, backbones, args.batch_size, args.threads)
        return
    logging.basicConfig(level=logging.ERROR)
    import tensorflow  # noqa: F401 - imported before timing: (b) and (c) never pay for it
    images = photos(DATA, args.n)
    n = len(images)
    print(f"bench/extract.py: N={n} photos from {DATA}, backbones {backbones}, weights none, "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as out:
        report = harness(images, backbones, Path(out), args.batch_size, args.threads)
        a = report.seconds
        start = time.perf_counter()
        warm = harness(images, backbones, Path(out), args.batch_size, args.threads)
        warm_s = time.perf_counter() - start
        assert all(r.reused for r in warm)
    a_compute = a - report.build_seconds
    b = seed_recipe(images, backbones)
    c, per = model_only(images, backbones)
    print(f"(a) harness one pass     : {a:8.2f} s  {n / a:6.2f} img/s "
          f"(model builds {report.build_seconds:.1f} s; without them {n / a_compute:.2f} img/s)")
    for r in report:
        print(f"      {r.backbone:14s} model time {r.seconds:7.2f} s  {r.images_per_s:6.2f} img/s")
    print(f"(b) seed recipe (Keras 3): {b:8.2f} s  {n / b:6.2f} img/s")
    print(f"(c) model-only predict   : {c:8.2f} s  {n / c:6.2f} img/s  "
          + ", ".join(f"{k} {n / v:.2f} img/s" for k, v in per.items()))
    print(f"a/b speed-up (b_time/a_time)       : {b / a:.2f}   (target >= 1.3)")
    print(f"a/c speed vs bound (c_time/a_time) : {c / a:.2f} with builds, "
          f"{c / a_compute:.2f} without   (target >= 1.0)")
    if set(backbones) == {"resnet50", "inception_v3", "xception"}:
        print(f"roofline fraction: harness {n / a_compute / ROOFLINE_IMG_S:.2f}, "
              f"model-only {n / c / ROOFLINE_IMG_S:.2f} (of {ROOFLINE_IMG_S} img/s)")
    print(f"warm rerun / cold            : {warm_s:.3f} s / {a:.1f} s = {warm_s / a:.4f}  "
          "(target <= 0.02)")
    if not args.no_rss:
        small, big = rss_of(n, args), rss_of(4 * n, args)
        print(f"peak RSS: N={n} {small:.0f} MiB, 4N={4 * n} {big:.0f} MiB, "
              f"ratio {big / small:.2f}  (target <= 1.2)")
    if args.sweep:
        sweep(images, "xception")


if __name__ == "__main__":
    main()
