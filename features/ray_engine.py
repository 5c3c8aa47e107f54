"""The Ray executor: the same extraction on a Ray cluster (several machines or GPUs).

`harness features --engine ray` (or `[features] engine = "ray"`) plans exactly as a local
run does (features.extract: fingerprints, reuse, the rows the part files already hold),
then sends only the rows still missing to Ray Data: a Dataset of (split, row, path, need)
rows, one block per batch, mapped by an actor pool. Every actor builds the requested
backbones once (one model set per actor: one actor per GPU with `num_gpus=1`, or CPU
actors of `threads` cores each) and runs the local run's own per-batch step on each batch
(features.batch: `image_pixels` -> `resize_views` -> `batch_features`). The results
stream back to this driver, which writes them with the same `parts.write_part` as they
arrive, so a killed driver resumes from its parts like a killed local run, and then
`parts.assemble` writes the same HDF5 file with the same fingerprint: a file made on Ray is
reused by a local run and the other way round. The executor is recorded only in the
file's `executor` attribute.

Ray is the executor, not the inference engine: the engine inside the actors (TensorFlow on
GPU actors; on CPU actors what a local CPU run would use) is decided once, here on the
driver, from the cluster's resources, and is what the fingerprint records.

A worker that dies (killed, out of memory) is restarted by Ray and its batch retried
(`max_restarts` / `max_task_retries` below). Test hook: when the environment variable
HARNESS_RAY_KILL_ONCE names a file that does not exist yet, the first actor batch of the
run creates it and kills its own worker process (tests/test_features_ray.py uses it to
prove the run survives; unset, nothing happens).

Image paths (and weight files) must be readable at the same path on every node: a shared
file system, or the same dataset mounted everywhere (a Kaggle notebook has one machine).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import numpy as np

from base.errors import HarnessError, first_line
from base.logs import quiet_tensorflow_import
from competition.images import ImageList
from features import parts as part_store
from features.vocabulary import CLUSTER_HELP, NO_RAY_CLIENT, check_cluster, is_ray_client

logger = logging.getLogger(__name__)

KILL_ONCE_ENV = "HARNESS_RAY_KILL_ONCE"
RETRIES = 4  # restarts of a dead actor, and retries of the batch it held
# Batches a GPU actor works on at once: one decodes on the CPU while the other holds the
# GPU. A CPU actor takes one at a time: its engine already runs every core it reserved, and
# two at once gained nothing here (2 cores, OpenVINO, 400 photos: Xception 1.47 s a batch
# with two, 1.45 s with one, the first batch back 0.8 s later with two; the three default
# backbones 46.2 and 48.5 s with two, 46.1 and 46.3 s with one; not measured on larger
# nodes or with TensorFlow on CPU actors).
GPU_CALLS_PER_ACTOR = 2
CPU_CALLS_PER_ACTOR = 1
def _check_ray_address() -> None:
    """A one-line HarnessError when RAY_ADDRESS (which "auto" follows) is not a head's
    HOST:PORT that Ray Data can run on."""
    address = os.environ.get("RAY_ADDRESS", "")
    if is_ray_client(address):
        raise HarnessError(f"RAY_ADDRESS={address!r}: {NO_RAY_CLIENT}, or unset RAY_ADDRESS")
    if "://" in address:
        raise HarnessError(f"RAY_ADDRESS={address!r} is not a Ray head's HOST:PORT: unset it, "
                           f"or set {CLUSTER_HELP}")


def _through_ray_client() -> bool:
    """Whether this process's own `ray.init` (a notebook's) went through Ray Client."""
    try:
        from ray.util.client import ray as client

        return bool(client.is_connected())
    except Exception:  # noqa: BLE001 - no client module: not connected through it
        return False


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise HarnessError("engine 'ray' needs Ray Data: pip install 'ray[data]' (it is in "
                           "requirements.lock), or use --engine auto") from exc
    return ray


def _starts_local_ray(cluster: str) -> bool:
    """Whether `cluster` means a Ray started on this machine for the run: "local", or
    "auto" with no cluster reachable."""
    return cluster == "local" or (cluster == "auto" and not _reachable())


def _reachable() -> bool:
    """Whether "auto" finds a cluster: RAY_ADDRESS, or a head running on this machine."""
    if os.environ.get("RAY_ADDRESS"):
        return True
    try:
        from ray._private.services import find_gcs_addresses

        return bool(find_gcs_addresses())
    except Exception:  # noqa: BLE001 - a private helper; without it, start a local Ray
        return False


def _this_machine_gpus() -> int:
    """The GPUs a local Ray would see here, found as Ray finds them (no Ray started)."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        count = int(manager.get_current_node_num_accelerators() or 0)
        visible = manager.get_current_process_visible_accelerator_ids()
        return min(count, len(visible)) if visible is not None else count
    except Exception:  # noqa: BLE001 - private API moved: count them once Ray is up
        return -1


class RaySession:
    """The Ray of one extraction, on the cluster `cluster` names: connected (or started) when
    first needed and not before, so a run that only reuses files never starts it; once, so
    asking for the cluster's GPUs and then running the jobs share one connection; shut down
    by `close` (or at the end of a `with` block) when this session connected it (a
    notebook's own `ray.init` is left alone)."""

    def __init__(self, cluster: str) -> None:
        self.cluster = check_cluster(cluster)
        self._connected = False  # by this session (then `close` shuts it down)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self.close()
        except Exception:
            if exc is None:
                raise
            # The error that ended the run is the one to report, not a failed shutdown.
            logger.debug("ray: shutdown after an error failed", exc_info=True)

    def gpus(self) -> int:
        """GPUs of the cluster (they decide the inference engine and precision).

        A local Ray ("local", or "auto" with no cluster reachable) is this machine: its
        GPUs are counted without starting Ray."""
        ray = _import_ray()
        if not ray.is_initialized() and _starts_local_ray(self.cluster):
            gpus = _this_machine_gpus()
            if gpus >= 0:
                return gpus
        self._connect()
        return int(ray.cluster_resources().get("GPU", 0))

    def run_jobs(self, jobs: Sequence[Any], splits: Mapping[str, ImageList], *, engine: str,
                 batch_size: int, threads: int, precision: str, progress: bool) -> None:
        """Compute every row the jobs lack on Ray and write it to their part folders.

        Args:
            jobs: features.plan's jobs (`done` filled from their part folders).
            splits: {"train": ImageList, "test": ImageList} (already sharded when --shard).
            engine: The inference engine inside the actors.
            batch_size, threads, precision: As for a local run (0 chooses).
            progress: Show a tqdm bar.
        """
        self._connect()
        _run(jobs, splits, engine, batch_size, threads, precision, progress)

    def close(self) -> None:
        """Shut down the Ray this session started or connected, if any."""
        if self._connected:
            self._connected = False
            shutdown()

    def _connect(self) -> None:
        if not self._connected:
            self._connected = connect(self.cluster)


def connect(cluster: str) -> bool:
    """Connect to (or start) the Ray cluster `cluster` names; True when this call started
    or connected it (the caller shuts it down), False when Ray was already initialised
    (a notebook's or a test's own `ray.init`).

    Raises:
        HarnessError: (one line) this process is connected through Ray Client, "auto"
            follows a RAY_ADDRESS that is not a head's HOST:PORT, the cluster cannot be
            reached, or it refused this machine's authentication token.
    """
    cluster = check_cluster(cluster)
    ray = _import_ray()
    if ray.is_initialized():
        if _through_ray_client():
            raise HarnessError(f"this process is connected to Ray through Ray Client: "
                               f"{NO_RAY_CLIENT}")
        return False
    # One line per distinct worker message instead of one per worker (Ray's default),
    # and Ray Data's own progress bars off: the driver shows one tqdm bar like a local run.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Ray warns "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=
    # disabled to opt out" whenever it turns the token on: for a Ray this run starts and
    # stops, or a cluster that requires the token, that advice is noise (docs/design.md: Ray).
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                              "logging_level": logging.WARNING}
    try:
        if _starts_local_ray(cluster):
            # Every core of this machine; `threads` is each actor's share (_plan_actors).
            cpus = os.cpu_count() or 1
            logger.info("ray: starting a local Ray with %d CPUs%s", cpus, "" if cluster == "local"
                        else " (no Ray running here: `ray start --head` keeps one between "
                        "runs and spares each run its start, docs/design.md: Ray)")
            # "local": a new Ray whatever RAY_ADDRESS or a `ray start` on this machine
            # says (no address would follow either, and RAY_ADDRESS=ray://... would even
            # go through Ray Client).
            ray.init(address="local", num_cpus=cpus, **kwargs)
        else:
            if cluster == "auto":
                _check_ray_address()
            address = "auto" if cluster == "auto" else cluster
            if address != "auto":
                _token_auth_if_token_available()
            logger.info("ray: connecting to %s", address)
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        if _refused_token(exc):
            raise HarnessError(
                f"the Ray cluster {cluster!r} uses token authentication and refused this "
                f"machine: copy the head's ~/.ray/auth_token to this machine's "
                f"~/.ray/auth_token (or set RAY_AUTH_TOKEN)") from exc
        raise HarnessError(f"cannot reach the Ray cluster {cluster!r} ({first_line(exc)}); "
                           f"start it with `ray start --head` or fix {CLUSTER_HELP}") from exc
    return True


def _token_auth_if_token_available() -> None:
    """Turn Ray's token authentication on for this driver when a token is at hand
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) and RAY_AUTH_MODE is unset.

    A head that uses token authentication (Ray 2.60's `ray start --head` turns it on where
    a token already exists) refuses a driver without the token. `address="auto"` finds the
    mode in the head's session on the same machine, but an explicit HOST:PORT sends no token
    unless RAY_AUTH_MODE=token. The rule is Ray's own, the one `ray start --head` and
    `ray.init(address="auto")` apply (the token itself is never read or logged here); a
    cluster without authentication ignores the token."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except Exception:  # private API moved: RAY_AUTH_MODE=token still works
        logger.debug("ray: token authentication not set up", exc_info=True)


def _refused_token(exc: BaseException) -> bool:
    """Whether a failed connection (or what caused it) was a refused authentication token."""
    seen: BaseException | None = exc
    while seen is not None:
        if "InvalidAuthToken" in str(seen) or type(seen).__name__ == "AuthenticationError":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _plan_actors(gpus: int, threads: int) -> tuple[int, int, int, int]:
    """(actors, CPUs reserved per actor, GPUs per actor, the actor's `threads` setting).

    One actor per GPU (threads as given: 0 lets it decode on every core), or CPU actors of
    `threads` cores each; with threads 0, one actor per machine, which runs with the
    engine's own thread defaults exactly as a local run there would (on 2 cores one actor
    of 2 threads ran 2.2x faster than two of 1, see bench/ray_overhead.py)."""
    import ray

    if gpus > 0:
        return gpus, 1, 1, threads
    nodes = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    nodes = [c for c in nodes if c >= 1] or [1]
    per_actor = max(1, min(threads if threads > 0 else min(nodes), max(nodes)))
    actors = max(1, sum(c // per_actor for c in nodes))
    whole_machines = threads <= 0 and len(set(nodes)) == 1
    return actors, per_actor, 0, 0 if whole_machines else per_actor


def shutdown() -> None:
    """`ray.shutdown()` for a Ray that `connect` started or connected, 1 s faster for a
    local Ray: its autoscaler monitor is stopped first.

    Ray stops a local Ray's processes in turn (raylet, GCS, then the monitor), each with
    SIGTERM and up to 1 s to exit before SIGKILL. The monitor's SIGTERM handler reports
    "autoscaler failed" to the GCS that is already gone, so it always used the whole second
    (measured: 1.01 s of the 1.34-1.58 s shutdown) and was then killed anyway; here it is
    killed first (a one-machine Ray has nothing to autoscale; no process is left behind).
    Connected to a cluster, this process started no monitor and nothing is killed."""
    import ray

    try:
        from ray._private import ray_constants
        from ray._private.worker import _global_node as node

        monitors = node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []) if (
            node is not None and node.is_head()) else []
        for info in monitors:
            if info.process.poll() is None:
                info.process.kill()
                info.process.wait(timeout=5)
    except Exception:  # private API moved: Ray's own (slower) shutdown below
        logger.debug("ray: monitor not stopped early", exc_info=True)
    ray.shutdown()


def actor_pool(actors: int, calls_per_actor: int) -> Any:
    """Ray Data's fixed pool of `actors` BatchWorkers, each running `calls_per_actor`
    batches at once on real threads (without `enable_true_multi_threading`, Ray Data 2.60
    runs an actor's calls one at a time on one thread whatever the concurrency)."""
    import ray

    return ray.data.ActorPoolStrategy(size=actors,
                                      max_concurrent_calls_per_actor=calls_per_actor,
                                      enable_true_multi_threading=calls_per_actor > 1)


def _retries() -> dict:
    return {"max_restarts": RETRIES, "max_task_retries": RETRIES}


def _quiet_ray_data(ray: Any) -> None:
    """The driver's tqdm bar is the progress: Ray Data's own bars and its per-run log lines
    (and the one warning that says its bars are off) would only repeat it."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    # Its INFO line "Dataset ... execution finished in N seconds" repeats the summary line
    # (and "execution failed" the error the run reports); Ray Data's own log file in the
    # session folder loses them too.
    logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(
        logging.WARNING)


class BatchWorker:
    """One Ray actor: builds every requested backbone once, then maps batches of rows to
    features with the local run's own per-batch step (features.batch.batch_features).

    On a GPU it runs two batches at a time (ActorPoolStrategy's
    `max_concurrent_calls_per_actor`): one decodes and resizes while the other holds the
    models (`self.model_lock`), as a local run's tf.data prefetch overlaps decoding with
    compute. On a CPU it runs one at a time (CPU_CALLS_PER_ACTOR) and the lock is idle.

    Args:
        jobs: (backbone, tta, WeightsChoice) of every job, in the driver's order (bit k
            of a row's `need` is job k).
        sizes: The resized sides the jobs read.
        batch_size, threads, precision: As for a local run, per actor.
        engine: The inference engine the driver chose ("tensorflow" or another of
            features.engines), the one the fingerprint records.
        kill_once: The test hook's marker file ("" off; see the module docstring).
    """

    def __init__(self, jobs: Sequence[tuple[str, str, Any]], sizes: Sequence[int],
                 batch_size: int, threads: int, precision: str, engine: str,
                 kill_once: str = "") -> None:
        from features import runtime as runtime_module
        from features.backbones import get_backbone

        quiet_tensorflow_import()
        self.runtime = runtime_module.configure(batch_size, threads, precision)
        self.jobs = [(get_backbone(name), tta) for name, tta, _ in jobs]
        self.sizes = list(sizes)
        self.kill_once = kill_once
        self.forwards: dict[str, Any] = {}
        for (spec, _), (_, _, weights) in zip(self.jobs, jobs):
            if spec.name not in self.forwards:
                self.forwards[spec.name] = _build_forward(spec, weights, self.runtime, engine)
        self.pool = ThreadPoolExecutor(max(1, threads or (os.cpu_count() or 1)))
        self.model_lock = threading.Lock()  # one batch at a time through the models

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        from features.batch import batch_features, image_pixels, resize_views

        if self.kill_once and not os.path.exists(self.kill_once):
            open(self.kill_once, "w").close()
            os._exit(1)  # the test hook: this worker dies mid-run, Ray restarts it
        min_side = max(self.sizes)
        decoded = list(self.pool.map(lambda p: image_pixels(bytes(p), min_side), batch["path"]))
        views = [resize_views(pixels, self.sizes) for pixels, _ in decoded]
        stacked = {side: tf.stack([v[k] for v in views]) for k, side in enumerate(self.sizes)}
        need = np.bitwise_or.reduce(np.asarray(batch["need"], np.int64))
        wanted = [k for k in range(len(self.jobs)) if need >> k & 1]
        with self.model_lock:
            outs = batch_features([self.jobs[k] for k in wanted], stacked, self.forwards)
        count = len(batch["row"])
        result: dict[str, np.ndarray] = {
            "split": np.asarray(batch["split"]), "row": np.asarray(batch["row"], np.int64),
            "reason": np.asarray([reason for _, reason in decoded], dtype=object),
            "computed": np.full(count, sum(1 << k for k in wanted), np.int64),
            "seconds": np.zeros((count, len(self.jobs)), np.float64),
        }
        for k, (spec, tta) in enumerate(self.jobs):
            result[f"features_{k}"] = np.zeros((count, spec.stored_dim(tta)), np.float32)
        for k, (values, seconds) in zip(wanted, outs):
            result[f"features_{k}"] = values
            result["seconds"][:, k] = seconds / count
        return result


def _build_forward(spec: Any, weights: Any, runtime: Any, engine: str) -> Any:
    """The forward pass of `spec` on `engine`, built as a local run builds it."""
    from features.engines import build_forward

    return build_forward(spec, weights, runtime, engine)


def _blocks(jobs: Sequence[Any], splits: Mapping[str, ImageList], batch_size: int) -> list:
    """One Arrow table per batch of rows still missing, split by split (the same batch
    boundaries as a local run). `need` bit k: job k lacks the row."""
    import pyarrow as pa

    blocks = []
    for split, images in splits.items():
        need = np.zeros(len(images), np.int64)
        for k, job in enumerate(jobs):
            need |= np.where(job.done[split], 0, 1 << k).astype(np.int64)
        rows = np.flatnonzero(need)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            blocks.append(pa.table({
                "split": pa.array([split] * len(chunk), pa.string()),
                "row": pa.array(chunk, pa.int64()),
                # Bytes, not text: a path that is not UTF-8 has no Arrow string form.
                "path": pa.array([os.fsencode(images.paths[r]) for r in chunk], pa.binary()),
                "need": pa.array(need[chunk], pa.int64()),
            }))
    return blocks


def _run(jobs: Sequence[Any], splits: Mapping[str, ImageList], engine: str, batch_size: int,
         threads: int, precision: str, progress: bool) -> None:
    import ray
    from tqdm.auto import tqdm

    from features.batch import view_sizes
    from features.runtime import CPU_BATCH, GPU_BATCH_PER_REPLICA

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if batch_size <= 0:
        batch_size = GPU_BATCH_PER_REPLICA if gpus else CPU_BATCH
    blocks = _blocks(jobs, splits, batch_size)
    total = sum(len(b) for b in blocks)
    if not total:
        return
    actors, cpus, gpus_each, actor_threads = _plan_actors(gpus, threads)
    actors = min(actors, len(blocks))
    logger.info("ray: %d rows in %d batches on %d actor(s) of %d CPU(s)%s, engine %s", total,
                len(blocks), actors, cpus, " + 1 GPU" if gpus_each else "", engine)
    _quiet_ray_data(ray)
    constructor = {
        "jobs": [(job.spec.name, job.tta, job.weights) for job in jobs],
        "sizes": view_sizes(jobs),
        "batch_size": batch_size, "threads": actor_threads, "precision": precision,
        "engine": engine,
        "kill_once": os.environ.get(KILL_ONCE_ENV, ""),
    }
    with warnings.catch_warnings():
        # ray_remote_args_fn is deprecated from Ray 2.60 (removed in 2.64) with no other
        # way yet to bound restarts; requirements.lock pins 2.60.
        warnings.simplefilter("ignore", DeprecationWarning)
        # from_blocks keeps one block per batch and reads their row counts here; from_arrow
        # ran a Ray task per block for the same (measured: 0.45 s -> 0.04 s before the
        # executor starts). It is a DeveloperAPI of the Ray Data that requirements.lock pins.
        mapped = ray.data.from_blocks(blocks).map_batches(
            BatchWorker, fn_constructor_kwargs=constructor, batch_size=None,
            batch_format="numpy",
            compute=actor_pool(actors, GPU_CALLS_PER_ACTOR if gpus_each else
                               CPU_CALLS_PER_ACTOR),
            num_cpus=cpus, num_gpus=gpus_each or None,
            # A dead actor is restarted and the batch it held retried, a bounded number of
            # times (Ray Data's default is forever: a batch that kills every worker hangs).
            ray_remote_args_fn=_retries)
    names = ", ".join(dict.fromkeys(job.spec.name for job in jobs))
    with tqdm(total=total, unit="img", desc=f"ray [{names}]", disable=not progress,
              dynamic_ncols=True) as bar:
        for out in mapped.iter_batches(batch_size=None, batch_format="numpy"):
            _write(jobs, splits, out)
            bar.update(len(out["row"]))


def _write(jobs: Sequence[Any], splits: Mapping[str, ImageList], out: dict) -> None:
    """Write one streamed result batch to the part folders (one part per split and job)."""
    started = time.perf_counter()
    for split in dict.fromkeys(str(s) for s in out["split"]):
        mine = np.asarray([str(s) == split for s in out["split"]])
        rows = out["row"][mine]
        images = splits[split]
        ids = [images.ids[r] for r in rows]
        reasons = [str(r) for r in out["reason"][mine]]
        computed = int(np.bitwise_or.reduce(out["computed"][mine]))
        for k, job in enumerate(jobs):
            if not computed >> k & 1:
                continue
            part_store.write_part(job.folder, split, rows, ids, out[f"features_{k}"][mine],
                                  reasons, job.spec.storage_dtype)
            job.done[split][rows] = True
            job.seconds += float(out["seconds"][mine, k].sum())
            job.computed += len(rows)
    logger.debug("ray: wrote %d rows in %.3f s", len(out["row"]), time.perf_counter() - started)
