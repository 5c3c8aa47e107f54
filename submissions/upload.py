"""Upload a validated submission through the official `kaggle` client, and prove it arrived.

The client can report a failed upload and still look successful (the CLI exits 0 on a failed
file transfer, or on a refusal carried in a 200 answer), and an answer lost on the way back
can hide a submission that Kaggle did record. So an upload counts as done only when a new
submission with our description shows up in the submissions list, and before every retry the
list is read again so a recorded submission is never sent twice.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from competition.errors import HarnessError
from competition.hashing import file_sha256
from competition.kaggle_api import (
    DEFAULT_RETRY,
    KaggleFailure,
    RetryPolicy,
    classify,
    failure_error,
    kaggle_session,
    local_only_error,
    require_credentials,
    scrub,
)
from competition.spec import CompetitionSpec
from submissions.ledger import Ledger, LedgerRow
from submissions.remote import (
    RemoteSubmission,
    ledger_fields,
    list_submissions,
    remaining_today,
)
from submissions.writer import validate_submission

logger = logging.getLogger(__name__)

# What KaggleApi.competition_submit answers when the PUT of the file failed.
UPLOAD_FAILED_MESSAGE = "Could not submit to competition"

__all__ = ["RetryPolicy", "file_sha256", "submission_message", "upload_submission"]


def submission_message(ensemble: str, cv_score: float | None, sha256: str) -> str:
    """The description Kaggle stores: `NAME cv=<score> <hash8>` (unique per file)."""
    cv = "NA" if cv_score is None else f"{cv_score:.5f}"
    return f"{ensemble} cv={cv} {sha256[:8]}"


class _Attempt:
    """One upload of one file: the ledger row, what Kaggle listed before, what was sent."""

    def __init__(self, api: Any, spec: CompetitionSpec, csv_path: Path, message: str,
                 ledger: Ledger, row: LedgerRow, retry: RetryPolicy, sleep) -> None:
        self.api, self.spec, self.csv_path, self.message = api, spec, csv_path, message
        self.ledger, self.row, self.retry, self.sleep = ledger, row, retry, sleep
        self.maybe_sent = False
        self.before: set[str] = set()

    def find_new(self, ref: str | None, polls: int = 1) -> RemoteSubmission | None:
        """Our submission among those listed now and not before (by ref, else description)."""
        for poll in range(polls):
            if poll:
                self.sleep(self.retry.delay(poll))
            for item in list_submissions(self.api, self.spec.slug, retry=self.retry,
                                         sleep=self.sleep):
                if item.ref in self.before:
                    continue
                if (ref and item.ref == ref) or (not ref and item.description == self.message):
                    return item
        return None

    def done(self, found: RemoteSubmission) -> LedgerRow:
        row = self.ledger.update(self.row.id, **ledger_fields(found))
        logger.info("uploaded %s to %s as submission %s (%s): %s", self.csv_path.name,
                    self.spec.slug, found.ref, row.status, self.message)
        return row

    def fail(self, status: str, error: str, exc: HarnessError) -> HarnessError:
        self.ledger.update(self.row.id, status=status, error=scrub(error))
        return exc

    def run(self) -> LedgerRow:
        slug, name, row_id = self.spec.slug, self.csv_path.name, self.row.id
        self.before = {s.ref for s in list_submissions(self.api, slug, retry=self.retry,
                                                       sleep=self.sleep)}
        left = remaining_today(self.api, slug)
        if left is not None and left <= 0:
            raise self.fail("rejected", "daily submission limit reached (0 left today)", HarnessError(
                f"Kaggle allows no more submissions to {slug} today (daily limit reached); "
                f"{name} was not uploaded (ledger row {row_id}); try again after 00:00 UTC"))
        if left is not None:
            logger.info("%s: %d submission(s) left today before this one", slug, left)
        last = KaggleFailure("transient", None, "no attempt made")
        for attempt in range(1, max(1, self.retry.attempts) + 1):
            if attempt > 1:
                delay = self.retry.delay(attempt - 1)
                logger.warning("upload of %s failed (%s); retry %d/%d in %.1f s", name,
                               last.message, attempt - 1, self.retry.attempts - 1, delay)
                self.sleep(delay)
                # The failed try's answer may have been lost after Kaggle recorded it.
                found = self.find_new(None)
                if found:
                    logger.info("the earlier try had been recorded (submission %s)", found.ref)
                    return self.done(found)
            self.maybe_sent = True
            try:
                response = self.api.competition_submit(str(self.csv_path), self.message, slug,
                                                       quiet=True)
            except Exception as exc:  # noqa: BLE001 - classified right here
                last = classify(exc)
                if last.transient:
                    continue
                if last.kind in ("auth", "forbidden", "not_found"):
                    raise self.fail("failed", last.message,
                                    failure_error(last, slug, "upload a submission")) from None
                raise self.fail("rejected", last.message, HarnessError(
                    f"Kaggle rejected {name} for {slug}: {last.message} (ledger row {row_id})"
                )) from None
            ref = str(response.ref) if response.ref else None
            found = self.find_new(ref, polls=min(3, max(1, self.retry.attempts)))
            if found:
                return self.done(found)
            text = scrub(response.message or "")
            if text == UPLOAD_FAILED_MESSAGE:
                last = KaggleFailure("transient", None, "the transfer of the file failed")
                continue
            if ref is None:
                # A 200 answer that carries only a message: the client "succeeds", Kaggle said no.
                raise self.fail("rejected", text or "no submission was created", HarnessError(
                    f"Kaggle did not accept {name} for {slug}: {text or 'no submission created'} "
                    f"(ledger row {row_id})"))
            self.ledger.update(row_id, kaggle_ref=ref,
                               error="Kaggle answered with this ref but does not list it yet")
            raise HarnessError(
                f"Kaggle answered submission {ref} for {name} but does not list it yet; "
                f"run `harness leaderboard` later to confirm it (ledger row {row_id})")
        found = self.find_new(None)
        if found:
            return self.done(found)
        raise self.fail("failed", last.message, HarnessError(
            f"could not upload {name} to {slug} after {self.retry.attempts} tries (last: "
            f"{'HTTP ' + str(last.status) + ': ' if last.status else ''}{last.message}); "
            f"it is not in your submissions list; try again later (ledger row {row_id})"))


def upload_submission(
    spec: CompetitionSpec,
    csv_path: Path,
    *,
    ensemble: str,
    cv_score: float | None,
    data_dir: Path,
    ledger_path: Path,
    force: bool = False,
    retry: RetryPolicy = DEFAULT_RETRY,
    sleep=time.sleep,
) -> LedgerRow:
    """Validate, upload and verify one submission; every attempt leaves a truthful ledger row.

    Args:
        spec: The competition (its slug is the Kaggle competition name).
        csv_path: The submission CSV (checked against the sample submission first).
        ensemble: The ensemble's name, first word of the description.
        cv_score: Its cross-validation score (in the description and the ledger).
        data_dir: Where the sample submission is.
        ledger_path: The SQLite ledger (config.workspace.ledger_path).
        force: Upload even if a file with the same sha256 was uploaded before.
        retry: Backoff for transient failures (5xx, 429, timeouts, failed transfers).
        sleep: Injected for tests.

    Returns:
        The ledger row: status `submitted` (listed, not scored yet), `complete` (scored) or
        `error` (Kaggle could not score it), with Kaggle's ref.

    Raises:
        HarnessError: invalid CSV, duplicate file, local-only competition, no credentials,
            Kaggle's refusal (e.g. daily limit), or transient failures after every retry.
    """
    if not spec.downloadable:
        raise local_only_error(spec.slug, "upload")
    csv_path = Path(csv_path)
    validate_submission(csv_path, spec, data_dir)
    sha = file_sha256(csv_path)
    message = submission_message(ensemble, cv_score, sha)
    ledger = Ledger(ledger_path)
    earlier = ledger.uploaded_with_hash(spec.slug, sha)
    if earlier and not force:
        first = earlier[-1]
        raise HarnessError(
            f"{csv_path} (sha256 {sha[:8]}) was already uploaded to {spec.slug} as "
            f"{first.ensemble!r} on {first.created_at} (ledger row {first.id}, {first.status}); "
            "pass --force to upload the same file again"
        )
    require_credentials()
    row = ledger.add_pending(competition=spec.slug, ensemble=ensemble, cv_score=cv_score,
                             file_path=csv_path.resolve(), sha256=sha, description=message)
    attempt: _Attempt | None = None
    try:
        with kaggle_session() as api:
            attempt = _Attempt(api, spec, csv_path, message, ledger, row, retry, sleep)
            return attempt.run()
    except HarnessError as exc:
        if ledger.get(row.id).status == "pending":
            # Still pending: if something may have been sent, its outcome is unknown.
            sent = attempt is not None and attempt.maybe_sent
            ledger.update(row.id, status="pending" if sent else "failed", error=scrub(str(exc)))
        raise
    except BaseException as exc:
        # A crash or Ctrl-C: the row stays pending (outcome unknown) with the reason.
        ledger.update(row.id, error=scrub(f"interrupted: {type(exc).__name__}: {exc}"))
        raise
