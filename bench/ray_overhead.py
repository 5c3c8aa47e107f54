"""Benchmark: the Ray executor's overhead on one machine, and the driver's write rate.

Prints, on N genuine photos of `../shared`'s dogs-vs-cats-mini (default 400, cats and dogs
interleaved), one or more backbones (default the harness's default set, ResNet50 +
InceptionV3 + Xception, what a plain `harness features` extracts; weights none: fine for
speed):
  local s   wall time of a fresh process running `extract_features` in process
            (engine auto: what a plain `harness features` runs),
  ray s     wall time of a fresh process running it with engine "ray" on a local Ray
            (cluster "local": Ray's start-up, the actor pool, streaming and the driver's
            part writes all included), or with --head on a head started (untimed) for it,
  ratio     ray s / local s (target <= 1.15), best of `--repeats` rounds each,
  again s   with --head, a second Ray run on the same head (Ray Data's helper actors,
            which it leaves there, already up: a running cluster's later runs),
and, from the Ray run, the model images/s per actor;
  floor s   seconds in a fresh process that only starts a local Ray (with --head:
            connects to a fresh head), maps one batch per actor through a pool
            (`--actors`) of actors that do nothing, and shuts Ray down, with the
            harness's own `connect`, `actor_pool` and `shutdown`: about the
            seconds of Ray and Ray Data that an extraction cannot overlap (before the
            pool's actors are ready, after the last batch; a real actor's model build
            overlaps part of Ray Data's start-up), so (local s + floor s) / local s is about
            the lowest ratio a run that starts its own local Ray reaches here.
Then the driver's write rate: every
streamed batch is one `parts.write_part` on the driver, and the end one `parts.assemble`;
both are timed on `--write-rows` synthetic rows of the backbone's width (MB/s, rows/s),
which bounds how many workers one driver can absorb (README: "Scaling model").

    python bench/ray_overhead.py                  # 400 photos, the default three, 2 rounds
    python bench/ray_overhead.py --actors 2       # two 1-thread actors instead of one
    python bench/ray_overhead.py --backbones xception   # one backbone: the worst case
    python bench/ray_overhead.py --head           # Ray runs join a head started first

The OpenVINO conversion (engine auto on a CPU) is cached before timing, so neither side
pays it. Run it alone on the machine (the timings are wall times).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from competition.images import ImageList
from features.settings import DEFAULT_BACKBONES
from tests.ray_head import ray_head
from tests.shared_assets import MINI_DATA, mini_photos, no_test_images, shared_root

DATA = shared_root() / MINI_DATA / "train"


def child(args: argparse.Namespace) -> None:
    """One timed extraction in this (fresh) process; prints one JSON line."""
    from features.extract import extract_features
    from features.weights import WeightsChoice

    engine = "ray" if args.child == "ray" else "auto"
    threads = 1 if args.actors == 2 and engine == "ray" else 0
    backbones = args.backbones.split(",")
    report = extract_features(mini_photos(args.n), no_test_images(),
                              [(b, "none") for b in backbones],
                              {b: WeightsChoice(None, "none") for b in backbones}, Path(args.out),
                              batch_size=32, threads=threads, progress=False, engine=engine,
                              cluster=args.cluster)
    # Images per second of model time over all backbones (one image through every one).
    model_s = sum(r.seconds for r in report.results)
    print(json.dumps({"extract_s": report.seconds, "engine": report.engine,
                      "img_per_s": args.n / model_s if model_s else 0.0,
                      "reused": any(r.reused for r in report.results)}))


class _Idle:
    """The floor's actor: returns its batch."""

    def __call__(self, batch: dict) -> dict:
        return batch


def floor_child(args: argparse.Namespace) -> None:
    """The Ray start-up floor in this (fresh) process; prints one JSON line."""
    import pyarrow as pa

    from features import ray_engine

    start = time.perf_counter()
    ray_engine.connect(args.cluster)
    try:
        import ray

        ray_engine._quiet_ray_data(ray)
        blocks = [pa.table({"row": [k]}) for k in range(args.actors)]
        mapped = ray.data.from_blocks(blocks).map_batches(
            _Idle, batch_size=None, batch_format="numpy",
            compute=ray_engine.actor_pool(args.actors, ray_engine.CPU_CALLS_PER_ACTOR),
            num_cpus=max(1, (os.cpu_count() or 1) // args.actors))
        rows = sum(len(b["row"]) for b in mapped.iter_batches(batch_size=None))
    finally:
        ray_engine.shutdown()
    assert rows == args.actors
    print(json.dumps({"in_process_s": time.perf_counter() - start}))


@contextlib.contextmanager
def head_for_ray_runs(args: argparse.Namespace) -> Iterator[None]:
    """With --head: a Ray head on this machine (tests.ray_head, untimed) that a Ray run
    connects to, stopped afterwards; the local runs never share the machine with it."""
    if not args.head:
        yield
        return
    with ray_head(os.cpu_count() or 1) as address:
        args.cluster = address
        try:
            yield
        finally:
            args.cluster = "local"


def report(run: dict) -> dict:
    """Print one timed child's line; return it."""
    if run["mode"] == "floor":
        print(f"  floor {run['wall_s']:6.1f} s wall (in process {run['in_process_s']:.1f} s: "
              "Ray start-up, one batch to each idle actor, shutdown)", flush=True)
    else:
        print(f"  {run['mode']:5s} {run['wall_s']:6.1f} s wall (extract_features "
              f"{run['extract_s']:.1f} s, {run['img_per_s']:.1f} img/s model time, engine "
              f"{run['engine']})", flush=True)
    return run


def timed_child(mode: str, args: argparse.Namespace, out: Path, n: int | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, __file__, "--child", mode, "--out", str(out),
               "--n", str(n or args.n), "--backbones", args.backbones,
               "--actors", str(args.actors), "--cluster", args.cluster]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert mode == "floor" or not result["reused"]
    return {"mode": mode, "wall_s": wall, **result}


def write_rate(dim: int, rows: int, batch: int, folder: Path) -> dict:
    """Seconds and rates of the driver's writes: one write_part per batch, then assemble."""
    from features import parts as part_store

    paths = tuple(folder / f"{k}.jpg" for k in range(rows))
    ids = tuple(str(k) for k in range(rows))
    train = ImageList("train", ids, paths, np.zeros(rows, np.int64), ("a", "b"))
    rng = np.random.default_rng(0)
    values = rng.random((batch, dim), dtype=np.float32)
    parts = folder / "parts"
    start = time.perf_counter()
    for first in range(0, rows, batch):
        chunk = np.arange(first, min(first + batch, rows))
        part_store.write_part(parts, "train", chunk, [ids[r] for r in chunk],
                              values[:len(chunk)], [""] * len(chunk))
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    part_store.assemble(parts, folder / "features.h5", train, no_test_images(), dim, {"bench": 1})
    assemble_s = time.perf_counter() - start
    megabytes = rows * dim * 4 / 1e6
    return {"rows": rows, "dim": dim, "mb": megabytes, "write_s": write_s,
            "assemble_s": assemble_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="photos (default 400)")
    parser.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES),
                        help="comma-separated (default: the harness's default backbones)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; the best is kept")
    parser.add_argument("--head", action="store_true",
                        help="start a Ray head on this machine first (`ray start --head`, not "
                             "timed) and connect the Ray runs to it, as on a running cluster")
    parser.add_argument("--cluster", default="local", help=argparse.SUPPRESS)
    parser.add_argument("--actors", type=int, choices=(1, 2), default=1,
                        help="Ray CPU actors: 1 of every core (default) or 2 of 1 thread")
    parser.add_argument("--write-rows", type=int, default=16384,
                        help="synthetic rows for the write-rate measurement")
    parser.add_argument("--child", choices=("local", "ray", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "floor":
        floor_child(args)
        return
    if args.child:
        child(args)
        return
    if not DATA.is_dir():
        sys.exit(f"{DATA} not found: this bench needs ../shared's genuine photos "
                 "(or HARNESS_SHARED)")
    from features.backbones import get_backbone

    dim = max(get_backbone(b).feature_dim for b in args.backbones.split(","))
    with tempfile.TemporaryDirectory(prefix="ray-overhead-") as tmp:
        folder = Path(tmp)
        timed_child("local", args, folder / "warm", n=4)  # caches the OpenVINO conversion
        runs: dict[str, list[dict]] = {"local": [], "ray": [], "again": [], "floor": []}
        for _ in range(args.repeats):
            runs["local"].append(report(timed_child("local", args, folder / "local")))
            # A fresh head for the Ray run and for the floor: Ray Data leaves its helper
            # actors (detached) on a head, and a run that finds them skips their start. With
            # --head a second Ray run on the first one's head measures that reuse.
            with head_for_ray_runs(args):
                runs["ray"].append(report(timed_child("ray", args, folder / "ray")))
                if args.head:
                    again = timed_child("ray", args, folder / "ray")
                    runs["again"].append(report({**again, "mode": "again"}))
            with head_for_ray_runs(args):
                runs["floor"].append(report(timed_child("floor", args, folder / "floor")))
        local, ray = (min(runs[mode], key=lambda r: r["wall_s"]) for mode in ("local", "ray"))
        # In-process seconds: the interpreter's start is paid by the local run as well.
        floors = [r["in_process_s"] for r in runs["floor"]]
        floor_s = min(floors)
        rate = write_rate(dim, args.write_rows, 32, folder / "write")
    ratio = ray["wall_s"] / local["wall_s"]
    print(f"\n{args.n} photos, {args.backbones} (weights none), batch 32, "
          f"{args.actors} Ray CPU actor(s), best of {args.repeats} fresh processes each"
          f"{'; the Ray runs connect to a head started beforehand' if args.head else ''}:")
    print(f"local s  {local['wall_s']:7.1f}   (engine {local['engine']}, "
          f"{local['img_per_s']:.1f} img/s model time)")
    print(f"ray s    {ray['wall_s']:7.1f}   (engine {ray['engine']}, "
          f"{ray['img_per_s']:.1f} img/s model time per actor)")
    print(f"ratio    {ratio:7.3f}   target <= 1.15: {'PASS' if ratio <= 1.15 else 'MISS'}")
    if runs["again"]:
        again = min(runs["again"], key=lambda r: r["wall_s"])
        print(f"again s  {again['wall_s']:7.1f}   (a second Ray run on the same head: Ray "
              f"Data's helper actors already up; ratio {again['wall_s'] / local['wall_s']:.3f})")
    ray_part = "connect to the head" if args.head else "local Ray"
    print(f"floor s  {floor_s:7.1f}   (in a fresh process: {ray_part}, one batch to each idle "
          f"actor, shutdown; {min(floors):.1f}-{max(floors):.1f} s over the rounds)")
    print(f"lowest   {(local['wall_s'] + floor_s) / local['wall_s']:7.3f}   "
          f"(local s + floor s) / local s; the Ray run adds "
          f"{ray['wall_s'] - local['wall_s'] - floor_s:.1f} s over the floor")
    total = rate["write_s"] + rate["assemble_s"]
    print(f"driver writes, {rate['rows']} rows x {rate['dim']} float32 ({rate['mb']:.0f} MB), "
          "batches of 32:")
    print(f"  write_part  {rate['mb'] / rate['write_s']:7.0f} MB/s  "
          f"{rate['rows'] / rate['write_s']:8.0f} rows/s")
    print(f"  assemble    {rate['mb'] / rate['assemble_s']:7.0f} MB/s  "
          f"{rate['rows'] / rate['assemble_s']:8.0f} rows/s")
    print(f"  both        {rate['mb'] / total:7.0f} MB/s  {rate['rows'] / total:8.0f} rows/s")


if __name__ == "__main__":
    main()
