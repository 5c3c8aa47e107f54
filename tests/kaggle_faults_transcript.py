"""`harness upload` / `harness leaderboard` under injected faults, printed as a transcript.

Run: python -m tests.kaggle_faults_transcript [SCENARIO ...]   (default: all)
Scenarios: pending, unknown, rank, forbidden, transfer, empty. Every command is the real `harness` CLI
(a subprocess, real retry delays) driving the real kaggle client; only the server is fake.
After each command: exit code, seconds, the requests the fake received, the ledger rows.
"""

from __future__ import annotations

import collections
import shlex
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from tests.cli_runner import run_harness
from tests.fake_kaggle import (
    TEST_IDS,
    FakeKaggle,
    logloss_scorer,
    running_env_without_proxy_bypass,
)

SLUG = "dogs-vs-cats-redux-kernels-edition"


class Session:
    """A fresh fake Kaggle and workspace; `harness(...)` runs one command and prints it."""

    def __init__(self, root: Path, fake: FakeKaggle) -> None:
        self.root, self.fake = root, fake.start()
        self.env = running_env_without_proxy_bypass()
        self.env.update(fake.client_env(root / "home"))
        data = root / "data"
        data.mkdir(parents=True)
        (data / "sample_submission.csv").write_text(
            "id,label\n" + "".join(f"{i},0.5\n" for i in TEST_IDS))

    def csv(self, name: str, values: dict[str, float]) -> Path:
        path = self.root / f"{name}.csv"
        path.write_text("id,label\n" + "".join(f"{i},{values[i]}\n" for i in TEST_IDS))
        return path

    def harness(self, *args: str) -> None:
        common = ["--competition", SLUG, "--data-dir", "data", "--workspace", "ws"]
        print(f"$ harness {shlex.join(args[:1] + tuple(common) + args[1:])}")
        before = len(self.fake.calls)
        start = time.monotonic()
        done = run_harness(*args[:1], *common, *args[1:], cwd=self.root, env=self.env)
        seconds = time.monotonic() - start
        for line in (done.stderr + done.stdout).rstrip().splitlines():
            print(f"  {line}")
        calls = collections.Counter(self.fake.calls[before:])
        print(f"  [exit {done.returncode}, {seconds:.0f} s, {sum(calls.values())} requests: "
              + ", ".join(f"{name} {n}" for name, n in sorted(calls.items())) + "]")
        ledger = self.root / "ws" / "ledger.sqlite"
        if ledger.is_file():
            with sqlite3.connect(ledger) as db:
                for row in db.execute("SELECT id, status, kaggle_ref, error FROM uploads"):
                    print(f"  [ledger row {row[0]}: {row[1]}, ref {row[2]}, error {row[3]!r}]")
        print(f"  [Kaggle holds {len(self.fake.submissions)} submission(s)]")

    def stop(self) -> None:
        self.fake.stop()


def pending(root: Path) -> None:
    """The one CreateSubmission gets a 500 before any work; a later listing is clean; later
    tries never reach CreateSubmission; then the listing fails. Rerun as advised."""
    fake = FakeKaggle(scorer=logloss_scorer, fail_next={
        "CreateSubmission": [500], "StartSubmissionUpload": [None] + [503] * 4,
        "ListSubmissions": [None, None] + [503] * 10})
    run = Session(root, fake)
    csv = run.csv("blend", {"1": 0.9, "2": 0.1, "10": 0.8})
    run.harness("upload", "--file", str(csv), "--ensemble", "blend", "--cv", "0.05")
    fake.fail_next = {}
    print("# Kaggle answers again; rerun as advised")
    run.harness("upload", "--file", str(csv), "--ensemble", "blend", "--cv", "0.05")
    run.stop()


def unknown(root: Path) -> None:
    """CreateSubmission gets a 500 and the submissions list cannot be read afterwards: the
    outcome is truly unknown. Rerun while the list is still unreadable, then once it is back."""
    fake = FakeKaggle(scorer=logloss_scorer, fail_next={
        "CreateSubmission": [500], "ListSubmissions": [None] + [503] * 5})
    run = Session(root, fake)
    csv = run.csv("blend", {"1": 0.9, "2": 0.1, "10": 0.8})
    run.harness("upload", "--file", str(csv), "--ensemble", "blend", "--cv", "0.05")
    fake.fail_next = {"ListSubmissions": [503] * 5}
    print("# rerun while the list is still unreadable")
    run.harness("upload", "--file", str(csv), "--ensemble", "blend", "--cv", "0.05")
    print("# rerun once Kaggle answers again")
    run.harness("upload", "--file", str(csv), "--ensemble", "blend", "--cv", "0.05")
    run.stop()


def rank(root: Path) -> None:
    """A finished competition: the default leaderboard is the private one, and it holds the
    user's own team."""
    fake = FakeKaggle(scorer=logloss_scorer,
                      leaderboard=[("a", 0.04), ("b", 0.07), ("c", 0.2), ("d", 0.5), ("e", 0.9)],
                      private_leaderboard=[("a", 0.05), ("b", 0.08), ("c", 0.12), ("d", 0.15),
                                           ("e", 0.2)])
    run = Session(root, fake)
    csv = run.csv("blend", {"1": 0.75, "2": 0.25, "10": 0.8})  # public 0.288, private 0.223
    run.harness("upload", "--file", str(csv), "--ensemble", "blend", "--cv", "0.05")
    run.harness("leaderboard")
    run.stop()


def forbidden(root: Path) -> None:
    """Kaggle's file storage refuses the transfer with a 403, every time."""
    run = Session(root, FakeKaggle(scorer=logloss_scorer, fail_put=1000, put_status=403))
    run.harness("upload", "--file", str(run.csv("blend", {"1": 0.9, "2": 0.1, "10": 0.8})))
    run.stop()


def transfer(root: Path) -> None:
    """Two transfers fail with a 503 (transient), the third goes through."""
    run = Session(root, FakeKaggle(scorer=logloss_scorer, fail_put=2, put_status=503))
    run.harness("upload", "--file", str(run.csv("blend", {"1": 0.9, "2": 0.1, "10": 0.8})))
    run.stop()


def empty(root: Path) -> None:
    """No submission yet; then one that Kaggle is still scoring."""
    run = Session(root, FakeKaggle(leaderboard=[("a", 0.04)]))
    run.harness("leaderboard")
    run.harness("upload", "--file", str(run.csv("blend", {"1": 0.9, "2": 0.1, "10": 0.8})))
    run.harness("leaderboard")
    run.stop()


SCENARIOS = {"pending": pending, "unknown": unknown, "rank": rank, "forbidden": forbidden, "transfer": transfer,
             "empty": empty}


def main(names: list[str]) -> None:
    for name in names or list(SCENARIOS):
        print(f"## {name}: {SCENARIOS[name].__doc__.split(chr(10))[0]}")
        with tempfile.TemporaryDirectory() as tmp:
            SCENARIOS[name](Path(tmp))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
