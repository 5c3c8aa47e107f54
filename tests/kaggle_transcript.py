"""Download -> upload -> leaderboard against the loopback fake Kaggle, printed as a transcript.

Run: python -m tests.kaggle_transcript [WORKDIR]
Everything goes through the real kaggle client; only the server is fake.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from base.errors import HarnessError
from base.kaggle_client import RetryPolicy
from competition.download import download_competition
from competition.spec import get_spec
from submissions.leaderboard import format_leaderboard, refresh_leaderboard
from submissions.upload import upload_submission
from tests.fake_kaggle import (
    TEST_IDS,
    FakeKaggle,
    logloss_scorer,
    redux_zip,
    running_env_without_proxy_bypass,
)


def main(root: Path) -> None:
    spec = get_spec("dogs-vs-cats-redux-kernels-edition")
    fake = FakeKaggle(files={spec.slug: redux_zip()}, scorer=logloss_scorer,
                      leaderboard=[("first", 0.03), ("second", 0.05), ("third", 0.2),
                                   ("fourth", 0.69)]).start()
    env = running_env_without_proxy_bypass()
    env.update(fake.client_env(root / "home"))
    os.environ.clear()
    os.environ.update(env)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
    for noisy in ("kaggle", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    work = root / "work"
    retry = RetryPolicy(attempts=4, initial_delay=0.2, jitter=0.0)

    print(f"$ harness download   # fake Kaggle on 127.0.0.1:{fake.port}")
    files = download_competition(spec, work / "data", retry=retry)
    print(f"{len(files)} files: {', '.join(sorted(p.name for p in files))}")
    print("$ harness download   # again")
    download_competition(spec, work / "data", retry=retry)

    predictions = {"resnet50": {"1": 0.7, "2": 0.3, "10": 0.6},
                   "blend": {"1": 0.97, "2": 0.04, "10": 0.9}}
    cv = {"resnet50": 0.31, "blend": 0.045}
    fake.fail_next = {"StartSubmissionUpload": [503]}  # one transient failure, retried
    for name, values in predictions.items():
        csv = work / "submissions" / f"{spec.slug}-{name}.csv"
        csv.parent.mkdir(parents=True, exist_ok=True)
        csv.write_text("id,label\n" + "".join(f"{i},{values[i]}\n" for i in TEST_IDS))
        print(f"$ harness upload --ensemble {name}")
        row = upload_submission(spec, csv, ensemble=name, cv_score=cv[name],
                                data_dir=work / "data", ledger_path=work / "ledger.sqlite",
                                retry=retry)
        print(f"ledger row {row.id}: {row.status} ref={row.kaggle_ref} "
              f"public={row.public_score} description={row.description!r}")
    print("$ harness upload --ensemble blend   # same file again")
    try:
        upload_submission(spec, csv, ensemble="blend", cv_score=cv["blend"],
                          data_dir=work / "data", ledger_path=work / "ledger.sqlite", retry=retry)
    except HarnessError as error:
        print(f"error: {error}")
    print("$ harness leaderboard")
    report = refresh_leaderboard(spec, work / "ledger.sqlite", work / "submissions")
    print(format_leaderboard(report))
    fake.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
