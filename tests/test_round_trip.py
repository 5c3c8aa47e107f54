"""The whole product through the CLI against the loopback fake Kaggle and the real client:

    harness download -> harness submit -> harness upload -> harness leaderboard

Every call is a `harness` subprocess, as a user runs it; only the server is fake.
"""

from __future__ import annotations

import sqlite3
import subprocess

import pytest

from tests.cli_runner import mobilenet_toml, run_harness
from tests.fake_kaggle import (
    FakeKaggle,
    logloss_scorer,
    redux_zip,
    running_env_without_proxy_bypass,
)

SLUG = "dogs-vs-cats-redux-kernels-edition"

CONFIG = mobilenet_toml(f'competition = "{SLUG}"\nworkspace = "ws"', heads={"logreg": ""})


@pytest.mark.slow
def test_download_submit_upload_leaderboard(tmp_path):
    fake = FakeKaggle(files={SLUG: redux_zip()}, scorer=logloss_scorer,
                      leaderboard=[("first", 0.03), ("second", 0.5), ("third", 0.9)]).start()
    try:
        env = running_env_without_proxy_bypass()
        env.update(fake.client_env(tmp_path / "home"))
        (tmp_path / "harness.toml").write_text(CONFIG)

        def harness(*args: str) -> subprocess.CompletedProcess:
            result = run_harness(*args, cwd=tmp_path, env=env)
            assert result.returncode == 0, f"harness {args}: {result.stderr[-3000:]}"
            return result

        harness("download")
        assert (tmp_path / "ws" / "data" / "train" / "dog.10.jpg").is_file()
        submit = harness("submit")
        csv = tmp_path / "ws" / "submissions" / f"{SLUG}-mobilenet-logreg.csv"
        assert f"validated: {csv}" in submit.stdout
        upload = harness("upload")
        assert "mobilenet-logreg cv=" in upload.stdout and "complete" in upload.stdout
        assert len(fake.submissions) == 1
        assert fake.submissions[0]["description"].startswith("mobilenet-logreg cv=")
        board = harness("leaderboard")
        assert "mobilenet-logreg" in board.stdout and "would rank" in board.stdout
        assert (tmp_path / "ws" / "submissions" / f"{SLUG}-cv-vs-public.png").is_file()

        logs = "".join(r.stdout + r.stderr for r in (submit, upload, board))
        written = b"".join(p.read_bytes() for p in (tmp_path / "ws").rglob("*") if p.is_file())
        assert fake.key not in logs and fake.key.encode() not in written
        with sqlite3.connect(tmp_path / "ws" / "ledger.sqlite") as db:
            rows = db.execute("select ensemble, status, kaggle_ref, public_score from uploads")
            (ensemble, status, ref, public), = rows.fetchall()
        assert (ensemble, status, ref) == ("mobilenet-logreg", "complete", "1001")
        assert public == pytest.approx(float(fake.submissions[0]["publicScore"]))
    finally:
        fake.stop()
