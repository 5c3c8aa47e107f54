"""The Ray executor (features.ray_engine) on a real local Ray, real tiny JPEGs, real HDF5.

One local Ray (2 CPUs) serves the whole module. Every Ray-made file is compared with the
file a local run makes from the same images (same inference engine on both sides: "auto"
resolves to the same one for a CPU-only cluster and this CPU), by ids, labels and features.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from base.errors import HarnessError
from features.extract import extract_features
from features.ray_engine import KILL_ONCE_ENV, check_cluster
from features.shards import merge_shards
from features.store import feature_path, load_split, read_attrs, read_bad
from features.weights import WeightsChoice
from tests.features_fixtures import (
    BAD_KINDS,
    UNREADABLE,
    bad_image_bytes,
    image_lists,
    make_dataset,
)
from tests.ray_head import free_port, ray_head, ray_node

ray = pytest.importorskip("ray")

NONE = WeightsChoice(None, "none")
MOBILE = [("mobilenet_025", "none")]
TWO = [("mobilenet_025", "none"), ("resnet50", "none")]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def local_ray(tmp_path_factory):
    """One local Ray for the module; the caches are set before it starts so that its
    workers (which inherit this environment) share them with the in-process runs."""
    cache = tmp_path_factory.mktemp("cache")
    saved = os.environ.get("HARNESS_CACHE_DIR")
    os.environ["HARNESS_CACHE_DIR"] = str(cache)
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("HARNESS_CACHE_DIR", None)
        else:
            os.environ["HARNESS_CACHE_DIR"] = saved


def run(train, test, out, requests=MOBILE, **kwargs):
    kwargs.setdefault("batch_size", 2)
    kwargs.setdefault("progress", False)
    return extract_features(train, test, requests, {b: NONE for b, _ in requests}, out,
                            **kwargs)


def same_file(a: Path, b: Path, rel: float = 1e-6) -> float:
    """Assert equal ids, labels and features (within `rel` of their scale); return the
    largest relative difference."""
    worst = 0.0
    for split in ("train", "test"):
        x, y = load_split(a, split), load_split(b, split)
        assert list(x.ids) == list(y.ids)
        if split == "train":
            assert list(x.labels) == list(y.labels)
        scale = float(np.abs(y.features).max())
        assert scale > 0 and x.features.shape == y.features.shape
        np.testing.assert_allclose(x.features, y.features, rtol=rel, atol=rel * scale)
        worst = max(worst, float(np.abs(x.features - y.features).max()) / scale)
    assert read_bad(a) == read_bad(b)
    return worst


def rows_sent(caplog) -> int:
    found = re.findall(r"ray: (\d+) rows in", caplog.text)
    return int(found[-1]) if found else 0


def test_ray_file_equals_local_file_and_each_reuses_the_other(tmp_path, caplog):
    data = make_dataset(tmp_path / "data", n_train=6, n_test=5)
    train, test = image_lists(data)
    caplog.set_level(logging.INFO, logger="features")
    on_ray = run(train, test, tmp_path / "ray", requests=TWO, engine="ray")
    assert rows_sent(caplog) == 11
    local = run(train, test, tmp_path / "local", requests=TWO)
    for backbone, _ in TWO:
        a, b = on_ray.result(backbone).path, local.result(backbone).path
        worst = same_file(a, b)
        ra, rb = read_attrs(a), read_attrs(b)
        assert (ra["executor"], rb["executor"]) == ("ray", "local")
        assert ra["engine"] == rb["engine"] == on_ray.engine == local.engine
        assert ra["fingerprint"] == rb["fingerprint"]
        print(f"\n{backbone}: ray == local: {len(load_split(a, 'train').ids)} train + "
              f"{len(load_split(a, 'test').ids)} test ids, labels equal, engine "
              f"{ra['engine']}, max |ray - local| / scale = {worst:.1e}")
    # A Ray-made file is reused by a local run, and a local file by a Ray run: no compute.
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("*.h5")}
    caplog.clear()
    assert all(r.reused for r in run(train, test, tmp_path / "ray", requests=TWO))
    assert all(r.reused for r in run(train, test, tmp_path / "local", requests=TWO,
                                     engine="ray"))
    assert rows_sent(caplog) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("*.h5")} == mtimes
    assert ray.is_initialized()  # the runs used this module's Ray and left it running


def test_a_killed_worker_is_restarted_and_its_batch_retried(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", n_train=8, n_test=4)
    train, test = image_lists(data)
    marker = tmp_path / "worker-killed"
    monkeypatch.setenv(KILL_ONCE_ENV, str(marker))
    report = run(train, test, tmp_path / "ray", engine="ray")
    assert marker.exists()  # a worker did die mid-run (os._exit in its first batch)
    monkeypatch.delenv(KILL_ONCE_ENV)
    local = run(train, test, tmp_path / "local")
    same_file(report.results[0].path, local.results[0].path)


DRIVER = textwrap.dedent("""
    import os, signal, sys, threading, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from features.extract import extract_features
    from features.weights import WeightsChoice
    from tests.features_fixtures import image_lists
    data, out, address = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]

    def killer():
        # A real SIGKILL of the driver once some parts exist: no cleanup runs.
        while True:
            if len(list((out / ".partial").glob("*/train-*.npz"))) >= 3:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.001)

    threading.Thread(target=killer, daemon=True).start()
    train, test = image_lists(data)
    extract_features(train, test, [("mobilenet_025", "none")],
                     {"mobilenet_025": WeightsChoice(None, "none")}, out, batch_size=1,
                     progress=False, engine="ray", cluster=address)
    print("FINISHED")
""")


def test_a_killed_driver_resumes_from_its_parts(tmp_path, local_ray, caplog):
    data = make_dataset(tmp_path / "data", n_train=30, n_test=6)
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out = tmp_path / "killed"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(script), str(ROOT), str(data), str(out),
                           local_ray], capture_output=True, text=True, timeout=240, env=env,
                          check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "FINISHED" not in proc.stdout
    assert not feature_path(out, "mobilenet_025").exists()
    kept = len(list((out / ".partial").glob("*/*.npz")))
    assert kept >= 3
    train, test = image_lists(data)
    caplog.set_level(logging.INFO, logger="features")
    resumed = run(train, test, out, batch_size=1, engine="ray")
    assert "resuming:" in caplog.text
    assert 0 < rows_sent(caplog) <= 36 - kept  # the kept parts' rows are not sent again
    clean = run(train, test, tmp_path / "clean", batch_size=1)
    same_file(resumed.results[0].path, clean.results[0].path)


# A driver of its own (argv: repository, data, out, cluster): MobileNet on Ray, batches of
# 2, the harness's log on stderr.
RAY_DRIVER = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from features.extract import extract_features
    from features.weights import WeightsChoice
    from tests.features_fixtures import image_lists
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    train, test = image_lists(Path(sys.argv[2]))
    extract_features(train, test, [("mobilenet_025", "none")],
                     {"mobilenet_025": WeightsChoice(None, "none")}, Path(sys.argv[3]),
                     batch_size=2, progress=False, engine="ray", cluster=sys.argv[4])
    print("FINISHED")
""")


def machine_env(home: Path, token: bool = False) -> dict[str, str]:
    """This environment as another machine's: its own HOME (holding a Ray auth token when
    `token`), and neither this process's RAY_AUTH_* (the module's Ray set RAY_AUTH_MODE)
    nor RAY_ADDRESS."""
    if token:
        (home / ".ray").mkdir(parents=True)
        (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env["HOME"] = str(home)
    return env


def _processes_with_env(entry: bytes) -> list[int]:
    """Live processes whose environment holds `entry` (inherited by every Ray process and
    worker a driver starts; their command lines are renamed, their environments are not)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if entry in environ and state != "Z":
            found.append(int(pid))
    return found


@pytest.fixture
def short_tmp():
    """A temp folder of a short path (Ray's socket paths under it must fit a Unix socket
    name), this test's alone, removed afterwards."""
    folder = tempfile.mkdtemp(prefix="hr-", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_ray_the_run_started_leaves_no_process_behind(tmp_path, short_tmp):
    """cluster "local" starts a Ray for the run and stops it (its monitor killed first,
    features.ray_engine.shutdown): once the driver has exited, none of its processes is left.
    "local" is a new Ray even where RAY_ADDRESS names another (here Ray Client's, which
    would fail). Ray's lines that only repeat or mislead (its token advice, Ray Data's
    "execution finished") are not printed."""
    data = make_dataset(tmp_path / "data", n_train=4, n_test=2)
    ray_tmp = short_tmp  # Ray's own temp folder
    # A HOME of its own: as on a user's machine, the local Ray creates a token there and
    # turns token authentication on.
    env = machine_env(tmp_path / "home")
    env.update(RAY_TMPDIR=ray_tmp, TF_CPP_MIN_LOG_LEVEL="3", RAY_ADDRESS="ray://127.0.0.1:1")
    proc = subprocess.run([sys.executable, "-c", RAY_DRIVER, str(ROOT), str(data),
                           str(tmp_path / "out"), "local"], capture_output=True, text=True,
                          timeout=300, env=env, check=False)
    assert proc.returncode == 0 and "FINISHED" in proc.stdout, proc.stderr[-3000:]
    assert read_attrs(feature_path(tmp_path / "out", "mobilenet_025"))["executor"] == "ray"
    # Ray's doing, not the harness's: it shows the token check below is not vacuous.
    assert (tmp_path / "home" / ".ray" / "auth_token").exists()
    assert "Token authentication is enabled" not in proc.stderr, proc.stderr[-3000:]
    assert "execution finished" not in proc.stderr, proc.stderr[-3000:]
    entry = f"RAY_TMPDIR={ray_tmp}".encode()
    deadline = time.monotonic() + 30  # workers exit on their own once their raylet is gone
    while _processes_with_env(entry) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _processes_with_env(entry)
    assert not left, [Path(f"/proc/{p}/cmdline").read_bytes()[:120] for p in left]


def test_bad_images_are_handled_as_locally(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=3, n_test=2)
    for k, kind in enumerate(BAD_KINDS):
        (data / "train" / f"square.{20 + k}.jpg").write_bytes(bad_image_bytes(kind, seed=k))
        (data / "test" / f"{20 + k}.jpg").write_bytes(bad_image_bytes(kind, seed=k))
    train, test = image_lists(data)
    on_ray = run(train, test, tmp_path / "ray", batch_size=4, engine="ray").results[0]
    local = run(train, test, tmp_path / "local", batch_size=4).results[0]
    unreadable = {f"{20 + k}" for k, kind in enumerate(BAD_KINDS) if kind in UNREADABLE}
    assert set(on_ray.failed) == set(local.failed) == unreadable
    assert set(on_ray.skipped) == set(local.skipped) == {f"square.{i}" for i in unreadable}
    same_file(on_ray.path, local.path)  # includes the [id, reason] tables
    failed = load_split(on_ray.path, "test")
    assert np.all(failed.features[failed.failed] == 0)


def test_shards_on_ray_merge_into_the_local_file(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=5, n_test=3)
    train, test = image_lists(data)
    out = tmp_path / "sharded"
    for i in (1, 2):
        report = run(train, test, out, shard=(i, 2), engine="ray")
        assert report.results[0].path.name == f"mobilenet_025.shard-{i}-of-2.h5"
    merged = merge_shards(out, "mobilenet_025", "none", 2)
    local = run(train, test, tmp_path / "local").results[0].path
    same_file(merged, local)
    assert run(train, test, out).results[0].reused  # the merged file is the full one


def test_cluster_setting_is_checked():
    for good in ("auto", "local", "10.0.0.5:6379", "head.example:6379"):
        assert check_cluster(good) == good
    for bad in ("head", "http://head:8265"):  # any scheme:// would mean Ray Client
        with pytest.raises(HarnessError, match=r"is not valid: \[features\] cluster"):
            check_cluster(bad)
    from harness.config import load_config

    # Ray Client cannot drive Ray Data (it fails mid-run): refused when the config loads.
    for client in ("ray://head:10001", "Ray://10.0.0.5:10001"):
        with pytest.raises(HarnessError) as refused:
            load_config(None, {"cluster": client, "engine": "ray"})
        message = str(refused.value)
        assert f"cluster {client!r}: Ray Data does not run over Ray Client" in message
        assert 'cluster = "HEAD_IP:6379"' in message and "\n" not in message


def test_the_cli_runs_on_the_cluster_it_is_given(tmp_path, local_ray):
    from competition.demo import generate_demo
    from tests.cli_runner import mobilenet_toml, run_harness

    (tmp_path / "harness.toml").write_text(
        mobilenet_toml('competition = "demo"\nworkspace = "ws"', heads={"logreg": ""}))
    generate_demo(tmp_path / "ws" / "data", n_train=12, n_test=4)
    env = dict(os.environ)  # HOME holds Ray's auth token for the module's cluster
    bad = run_harness("features", "--engine", "ray", "--cluster", "nowhere", cwd=tmp_path,
                      env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "cluster 'nowhere' is not valid" in bad.stderr
    # "auto" follows RAY_ADDRESS; one that names Ray Client is refused before any work.
    client = run_harness("features", "--engine", "ray", cwd=tmp_path,
                         env={**env, "RAY_ADDRESS": "ray://127.0.0.1:1"})
    assert client.returncode == 2 and len(client.stderr.strip().splitlines()) == 1, client.stderr
    assert "RAY_ADDRESS='ray://127.0.0.1:1': Ray Data does not run over Ray Client" in (
        client.stderr)
    assert not (tmp_path / "ws" / "features").exists() or not any(
        (tmp_path / "ws" / "features").iterdir())
    dashboard = run_harness("features", "--engine", "ray", cwd=tmp_path,
                            env={**env, "RAY_ADDRESS": "http://127.0.0.1:8265"})
    assert dashboard.returncode == 2 and len(dashboard.stderr.strip().splitlines()) == 1, (
        dashboard.stderr)
    assert dashboard.stderr.strip().endswith(
        "RAY_ADDRESS='http://127.0.0.1:8265' is not a Ray head's HOST:PORT: unset it, or set "
        '[features] cluster (--cluster) is "auto", "local" or "HOST:PORT" (the head of a '
        "cluster this machine is part of, started with `ray start --head`)")
    done = run_harness("-q", "features", "--engine", "ray", "--cluster", local_ray,
                       cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    attrs = read_attrs(feature_path(tmp_path / "ws" / "features", "mobilenet_025"))
    assert attrs["complete"] and attrs["executor"] == "ray"


class _OverlapProbe:
    """A map_batches class that records how many of its calls run at the same moment."""

    def __init__(self):
        import threading

        self.lock, self.running, self.peak = threading.Lock(), 0, 0

    def __call__(self, batch):
        import time

        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.3)
        with self.lock:
            self.running -= 1
        return {"peak": np.full(len(batch["id"]), self.peak)}


@pytest.mark.parametrize("calls", [1, 2])
def test_each_actor_of_the_pool_runs_as_many_batches_at_once_as_asked(calls):
    # GPU actors take two batches at once (one decodes while the other runs the models) and
    # CPU actors one. Ray Data runs an actor's calls one at a time unless its threads are
    # real (a pool setting that actor_pool turns on for two).
    from features.ray_engine import actor_pool

    mapped = ray.data.range(8, override_num_blocks=8).map_batches(
        _OverlapProbe, batch_size=None, batch_format="numpy", compute=actor_pool(1, calls))
    peaks = [int(p) for b in mapped.iter_batches(batch_size=None, batch_format="numpy")
             for p in b["peak"]]
    assert max(peaks) == calls


def test_a_head_with_token_authentication_is_joined_with_this_machines_token(tmp_path):
    # `ray start --head` where a token exists turns token authentication on; a driver given
    # HOST:PORT sent no token unless RAY_AUTH_MODE=token was set by hand, and was refused.
    env = machine_env(tmp_path / "home", token=True)
    driver = textwrap.dedent("""
        import sys
        from base.errors import HarnessError
        from features import ray_engine
        try:
            ray_engine.connect(sys.argv[1])
        except HarnessError as exc:
            raise SystemExit(str(exc))
        import ray
        print("cpus", int(ray.cluster_resources()["CPU"]))
        ray_engine.shutdown()
    """)
    with ray_head(1, env) as address:
        joined = subprocess.run([sys.executable, "-c", driver, address], env=env, cwd=ROOT,
                                check=False, capture_output=True, text=True, timeout=120)
        assert joined.returncode == 0 and "cpus 1" in joined.stdout, joined.stderr[-2000:]
        # No token on this "machine"; Ray retries a refused connection for 20 s by default
        # (its RAY_gcs_server_port_wait_time_s): 3 tries are enough to be refused.
        stranger = dict(env, HOME=str(tmp_path / "stranger"), RAY_gcs_server_port_wait_time_s="3")
        refused = subprocess.run([sys.executable, "-c", driver, address], env=stranger,
                                 cwd=ROOT, check=False, capture_output=True, text=True,
                                 timeout=120)
        assert refused.returncode == 1
        assert "uses token authentication and refused this machine" in refused.stderr
        assert "~/.ray/auth_token" in refused.stderr.strip().splitlines()[-1]


def test_a_cluster_of_two_nodes_runs_an_actor_on_each_and_writes_the_local_file(tmp_path):
    # As the README sets a cluster up: a head (token authentication on: this "machine" has a
    # token), a second node joined with the token and RAY_AUTH_MODE=token, and a driver on
    # the head's machine given HOST:PORT. One CPU per node and one per actor: the plan's two
    # actors can only run one on each node.
    data = make_dataset(tmp_path / "data", n_train=6, n_test=4)
    env = machine_env(tmp_path / "home", token=True)
    with ray_head(1, env) as address, ray_node(address, 1, dict(env, RAY_AUTH_MODE="token")):
        command = [sys.executable, "-c", RAY_DRIVER, str(ROOT), str(data),
                   str(tmp_path / "ray"), address]
        done = subprocess.run(command, env=env, cwd=ROOT, check=False, capture_output=True,
                              text=True, timeout=300)
        again = subprocess.run(command, env=env, cwd=ROOT, check=False, capture_output=True,
                               text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # A run that only reuses its files never connects.
    assert again.returncode == 0 and "up to date, reused" in again.stderr, again.stderr[-3000:]
    assert "ray: connecting" not in again.stderr
    assert "ray: 10 rows in 5 batches on 2 actor(s) of 1 CPU(s)" in done.stderr
    # Asking for the cluster's GPUs and running the jobs share one connection.
    assert done.stderr.count(f"ray: connecting to {address}") == 1, done.stderr[-3000:]
    train, test = image_lists(data)
    on_ray = feature_path(tmp_path / "ray", "mobilenet_025")
    same_file(on_ray, run(train, test, tmp_path / "local").results[0].path)
    assert read_attrs(on_ray)["executor"] == "ray"


CLIENT_DRIVER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import ray
    from base.errors import HarnessError
    from features.extract import extract_features
    from features.weights import WeightsChoice
    from tests.features_fixtures import image_lists
    for attempt in range(3):  # a notebook's own Ray Client connection
        try:
            ray.init(sys.argv[1])
            break
        except ConnectionError:  # Ray Client's own start (seen once in four runs), not
            ray.shutdown()       # what this test is about: try again
            time.sleep(2)
    else:
        raise SystemExit("Ray Client did not start")
    train, test = image_lists(Path(sys.argv[2]))
    try:
        extract_features(train, test, [("mobilenet_025", "none")],
                         {"mobilenet_025": WeightsChoice(None, "none")}, Path(sys.argv[3]),
                         batch_size=2, progress=False, engine="ray")
    except HarnessError as exc:
        raise SystemExit(f"REFUSED {exc}")
""")


def test_a_process_connected_through_ray_client_is_refused_in_one_line(tmp_path):
    # Ray Data fails mid-run over Ray Client; a notebook that connected with ray://
    # gets one line before any work instead.
    data = make_dataset(tmp_path / "data", n_train=2, n_test=1)
    env = machine_env(tmp_path / "home")  # no token: a head without authentication
    port = free_port()
    with ray_head(1, env, client_port=port):
        done = subprocess.run([sys.executable, "-c", CLIENT_DRIVER, f"ray://127.0.0.1:{port}",
                               str(data), str(tmp_path / "out")], env=env, cwd=ROOT,
                              check=False, capture_output=True, text=True, timeout=300)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith(
        "REFUSED this process is connected to Ray through Ray Client: Ray Data does not run "
        "over Ray Client"), done.stderr[-3000:]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.h5"))
