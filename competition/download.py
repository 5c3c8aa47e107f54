"""Fetch a competition's files through the official `kaggle` client and unpack them safely.

`download_competition` downloads `<slug>.zip` into the data folder, unpacks it (and the
archives inside it, such as Redux's train.zip / test.zip) with `safe_extract`, and writes a
completion record `.harness-download.json` listing every file and its size. A rerun whose
record still matches the files on disk does nothing and makes no network call.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from base.atomic import atomic_path
from base.errors import HarnessError
from base.kaggle_client import (
    DEFAULT_RETRY,
    RetryPolicy,
    call_with_retry,
    kaggle_session,
    local_only_error,
)
from competition.archives import extract_nested
from competition.spec import CompetitionSpec

logger = logging.getLogger(__name__)

COMPLETION_RECORD = ".harness-download.json"

__all__ = ["COMPLETION_RECORD", "download_competition"]


def _read_record(data_dir: Path, slug: str) -> list[Path] | None:
    """The files of a complete earlier download, or None if any is missing or resized."""
    try:
        record = json.loads((data_dir / COMPLETION_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("competition") != slug:
        return None
    files = []
    for name, size in record.get("files", {}).items():
        path = data_dir / name
        if not path.is_file() or path.stat().st_size != size:
            logger.info("%s changed since the last download (%s); fetching again", path, name)
            return None
        files.append(path)
    return files


def _write_record(data_dir: Path, slug: str, files: list[Path]) -> None:
    record = {
        "competition": slug,
        "completed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {p.relative_to(data_dir).as_posix(): p.stat().st_size for p in files},
    }
    with atomic_path(data_dir / COMPLETION_RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")


def download_competition(
    spec: CompetitionSpec,
    data_dir: Path,
    *,
    force: bool = False,
    retry: RetryPolicy = DEFAULT_RETRY,
    sleep=time.sleep,
) -> list[Path]:
    """Download and unpack the competition's files into `data_dir`.

    Args:
        spec: The competition; `spec.slug` is the Kaggle competition name.
        data_dir: The workspace data folder (config.data_dir).
        force: Download and unpack again even when a complete copy is present.
        retry: Backoff for transient failures of the API call.
        sleep: Injected for tests.

    Returns:
        Every unpacked file (archives inside the download are unpacked too).

    Raises:
        HarnessError: a local-only competition, missing credentials, rules not accepted
            (403, with the rules URL), unknown competition, or an unsafe/corrupt archive.
    """
    if not spec.downloadable:
        raise local_only_error(spec.slug, "download")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if not force:
        present = _read_record(data_dir, spec.slug)
        if present is not None:
            logger.info("%s: already downloaded and unpacked (%d files); skipping "
                        "(--force to fetch again)", data_dir, len(present))
            return present

    archive = data_dir / f"{spec.slug}.zip"
    with kaggle_session() as api:
        logger.info("downloading %s into %s", spec.slug, data_dir)
        # The client skips the transfer itself when a complete, newer archive is present.
        call_with_retry(
            # Its progress bar follows the log level (`harness -q` shows warnings only).
            lambda: api.competition_download_files(
                spec.slug, path=str(data_dir), force=force,
                quiet=not logger.isEnabledFor(logging.INFO)),
            what="download the competition files", slug=spec.slug, retry=retry, sleep=sleep,
        )
    if not archive.is_file():
        found = sorted(p.name for p in data_dir.iterdir() if p.suffix == ".zip")
        raise HarnessError(
            f"the kaggle client did not write {archive} (zip files there: {found or 'none'}); "
            f"try `kaggle competitions download -c {spec.slug} -p {data_dir}`"
        )
    files = extract_nested(archive, data_dir, force=force)
    _write_record(data_dir, spec.slug, files)
    logger.info("%s: %d files ready in %s", spec.slug, len(files), data_dir)
    return files
