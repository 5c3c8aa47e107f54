"""TensorFlow runtime choices for extraction: threads, device, precision, batch size.

Imported only when features must actually be computed (TensorFlow's import is slow).
Every choice is logged, so a run's log says what it ran on.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from base.errors import HarnessError
from features.fold import fold_batch_norm
from features.vocabulary import PRECISIONS

logger = logging.getLogger(__name__)

# Keras dtype policy per precision: mixed = float16 compute (GPUs; on a CPU it falls back to
# float32), bfloat16 = bfloat16 compute anywhere. Measured by bench/precision.py on a CPU
# with AVX512_BF16, Xception with ImageNet weights on 1,200 photos: 1.74x the float32
# throughput, features within 1.5% (median; worst 3.8%) of each row's largest value, and
# the same CV log loss (0.0145 vs 0.0146).
POLICIES = {"float32": "float32", "mixed": "mixed_float16", "bfloat16": "mixed_bfloat16"}
CPU_BATCH = 32  # measured: batch 16 and 32 run at the same img/s on CPU; 32 amortises overhead
GPU_BATCH_PER_REPLICA = 128


@dataclass
class Runtime:
    """What the extraction runs on.

    Attributes:
        strategy: A tf.distribute strategy (MirroredStrategy on GPUs, the default one on CPU).
        replicas: Number of devices in sync.
        gpus: Number of GPUs visible.
        precision: "float32", "mixed" (float16, only on GPU) or "bfloat16".
        batch_size: Images per batch (global, over all replicas).
        map_threads: Parallel calls of the decode map (one per core when 0).
    """

    strategy: Any
    replicas: int
    gpus: int
    precision: str
    batch_size: int
    map_threads: int


def configure(batch_size: int = 0, threads: int = 0, precision: str = "float32") -> Runtime:
    """Pick threads, device strategy, precision and batch size for this machine.

    Args:
        batch_size: 0 chooses (32 on CPU, 128 per GPU).
        threads: 0 keeps TensorFlow's defaults (all cores); N sets intra-op threads to N,
            inter-op threads to 2 and N parallel decode calls.
        precision: "float32", "mixed" (float16 compute, GPUs only; float32 on a CPU) or
            "bfloat16" (bfloat16 compute on any device).
    """
    if precision not in PRECISIONS:
        raise HarnessError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    import tensorflow as tf

    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(2)
        except RuntimeError:
            # TensorFlow fixes its thread pools when the runtime starts; in a process that
            # already ran TF (tests, notebooks) the setting cannot change any more.
            logger.warning("threads=%d not applied: TensorFlow's runtime is already running",
                           threads)
    gpus = len(tf.config.list_physical_devices("GPU"))
    if gpus:
        strategy = tf.distribute.MirroredStrategy()
        replicas = strategy.num_replicas_in_sync
    else:
        strategy = tf.distribute.get_strategy()
        replicas = 1
    used_precision = precision
    if precision == "mixed" and not gpus:
        logger.info("precision=mixed asked for but no GPU is visible: using float32 on CPU")
        used_precision = "float32"
    if precision == "float32" and not gpus and cpu_has_bf16():
        logger.info("this CPU computes bfloat16 natively: --precision bfloat16 extracted "
                    "Xception 1.74x faster with the same CV log loss (bench/precision.py)")
    if precision == "bfloat16" and not gpus and not cpu_has_bf16():
        logger.warning("precision=bfloat16 on a CPU without AVX512_BF16 or AMX: bfloat16 is "
                       "emulated there and is usually slower than float32")
    if batch_size <= 0:
        batch_size = GPU_BATCH_PER_REPLICA * replicas if gpus else CPU_BATCH
    runtime = Runtime(strategy, replicas, gpus, used_precision, batch_size, max(threads, 0))
    logger.info(
        "extraction runtime: %s, %s, precision %s, batch %d, threads %s (intra-op %s), "
        "oneDNN %s",
        f"{gpus} GPU(s)" if gpus else "CPU only",
        f"MirroredStrategy x{replicas}" if gpus else "default strategy",
        used_precision, batch_size, threads or "auto",
        tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
        os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    )
    return runtime


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512_BF16 or AMX; Linux only)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


RANDOM_INIT_SEED = 0


@contextlib.contextmanager
def seeded_random_init() -> Iterator[None]:
    """Make weights=None models identical in every process, while building inside it.

    A resumed run (or a shard, or a per-backbone run) must compute the same features as
    an uninterrupted one, so "random init" means "random init from seed 0". Keras draws
    initializer seeds from Python's `random`, so the seed must hold during the build;
    Python's and NumPy's global states are restored afterwards for the caller.
    """
    import random

    import keras
    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(RANDOM_INIT_SEED)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class Forward:
    """A backbone's preprocess + forward pass as one compiled function (GAP features out).

    The model's BatchNormalization layers are folded into their convolutions (see
    features.fold: same function, 10-22% faster per backbone on CPU). `tf.function` around
    the model call measured faster than `model.predict` on CPU (no per-call
    dataset/callback machinery); with several GPUs the batch is split into contiguous
    per-replica slices so that gathering keeps the row order.
    """

    def __init__(self, spec: Any, weights: str | None, runtime: Runtime) -> None:
        import keras
        import tensorflow as tf

        self.spec = spec
        self.runtime = runtime
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(POLICIES[runtime.precision])
        try:
            seed = seeded_random_init() if weights is None else contextlib.nullcontext()
            with seed, runtime.strategy.scope():
                self.model, folded = fold_batch_norm(spec.build(weights))
        finally:
            keras.mixed_precision.set_global_policy(previous)
        logger.info("%s: %d BatchNormalization layers folded into their convolutions",
                    spec.name, folded)
        model = self.model
        preprocess = getattr(spec.preprocess, "target", lambda: spec.preprocess)()

        def step(x: Any) -> Any:
            return tf.cast(model(preprocess(x), training=False), tf.float32)

        # One trace for every batch size (the last batch is smaller): retracing costs seconds.
        size = spec.input_size
        self._step = tf.function(step if runtime.replicas <= 1 else _mirrored(step, runtime),
                                 input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        # Trace and optimise the graph now (seconds per backbone), so that the first batch
        # does not pay for it and per-backbone model time measures compute only.
        self(tf.zeros([1, size, size, 3], tf.float32))

    def __call__(self, images: Any) -> Any:
        """GAP features (B, D) float32 of a batch of RGB 0-255 float images (B, S, S, 3)."""
        return self._step(images)


def _mirrored(step: Any, runtime: Runtime) -> Any:
    """`step` over all replicas: each computes an equal contiguous slice of the batch, and
    the slices are gathered in replica order, so row i of the output is image i.

    Every replica receives the whole batch and cuts its own slice (a batch of images is
    small next to the compute it feeds). The batch is padded to a multiple of the replica
    count with zero images, whose rows are dropped: a replica must never get an empty
    slice, because a convolution on 0 images returns a wrongly shaped result on CPU
    (measured: "Incompatible shapes: [0,224,224,3] vs. [8]"). Run only on two logical CPUs
    (tests/test_features_runtime.py), not on GPUs.
    """
    import tensorflow as tf

    strategy, replicas = runtime.strategy, runtime.replicas

    def replica_step(images: Any) -> Any:
        per = tf.shape(images)[0] // replicas
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return step(images[replica * per:(replica + 1) * per])

    def distributed(images: Any) -> Any:
        count = tf.shape(images)[0]
        padding = (-count) % replicas
        padded = tf.pad(images, [[0, padding], [0, 0], [0, 0], [0, 0]])
        gathered = strategy.gather(strategy.run(replica_step, args=(padded,)), axis=0)
        return gathered[:count]

    return distributed
