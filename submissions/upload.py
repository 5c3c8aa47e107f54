"""Upload a validated submission to Kaggle, prove it arrived, and never leave a false ledger row.

A submission is three calls of Kaggle's API (kagglesdk 0.1.x, through the official client's
`KaggleApi`): StartSubmissionUpload answers with a URL, the file is PUT there, CreateSubmission
records it. The harness makes the three calls itself rather than `KaggleApi.competition_submit`,
which turns every failed transfer into one message ("Could not submit to competition": the
HTTP status is lost, the CLI exits 0) and does not say which step failed. The step decides
what is true afterwards:

- Before CreateSubmission nothing can have been recorded. A transient failure (5xx, 429,
  network) is retried at once after the backoff, without reading Kaggle's list; a permanent one
  (a 403 on the transfer, a 401, ...) fails the upload at once with Kaggle's status and text.
- CreateSubmission's answer can be lost after Kaggle recorded the submission. After a
  transient failure there the outcome is unknown until the submissions list has been read:
  listed means done, absent means nothing was recorded and the next try may go.
- Only while the list cannot be read is the outcome truly unknown: the ledger row stays
  `pending` and the error says so. The next `harness upload` of the same file reads the list
  first: listed, the row becomes complete (and the file counts as uploaded); absent, the row
  becomes `failed` and the upload goes ahead.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from base.errors import HarnessError
from base.hashing import file_sha256
from base.kaggle_client import (
    DEFAULT_RETRY,
    KaggleFailure,
    RetryPolicy,
    classify,
    failure_error,
    kaggle_session,
    local_only_error,
    require_credentials,
    scrub,
    status_failure,
)
from competition.spec import CompetitionSpec
from submissions.ledger import Ledger, LedgerRow, now_utc
from submissions.remote import (
    RemoteSubmission,
    ledger_fields,
    list_submissions,
    remaining_today,
)
from submissions.writer import validate_submission

logger = logging.getLogger(__name__)

__all__ = ["submission_message", "upload_submission"]


def submission_message(ensemble: str, cv_score: float | None, sha256: str) -> str:
    """The description Kaggle stores: `NAME cv=<score> <hash8>` (unique per file)."""
    cv = "NA" if cv_score is None else f"{cv_score:.5f}"
    return f"{ensemble} cv={cv} {sha256[:8]}"


def submissions_page(slug: str) -> str:
    """Where a user sees their submissions to `slug` on kaggle.com."""
    return f"https://www.kaggle.com/competitions/{slug}/submissions"


def _describe(step: str, failure: KaggleFailure) -> str:
    status = f" answered HTTP {failure.status}" if failure.status else " failed"
    return f"{step}{status}: {failure.message}"


def _transfer(url: str, path: Path) -> KaggleFailure | None:
    """PUT the file to the URL that StartSubmissionUpload gave, as the client does (no
    credentials go with it); None when stored, else what went wrong (transient or not)."""
    import requests

    try:
        with path.open("rb") as handle:
            response = requests.put(url, data=handle, timeout=(30, 600))
    except requests.RequestException as exc:
        return KaggleFailure("transient", None, scrub(f"{type(exc).__name__}: {exc}"))
    if response.status_code in (200, 201):
        return None
    text = " ".join(response.text.split())[:200] or response.reason or "no reason given"
    return status_failure(response.status_code, text)


class _Attempt:
    """One upload of one file: the ledger row, what Kaggle listed before, what was sent.

    `maybe_sent` is True exactly while a CreateSubmission may have been recorded and Kaggle's
    list has not been read since: it is set before each CreateSubmission and cleared by a
    definite answer or by a clean listing without the submission.
    """

    def __init__(self, api: Any, spec: CompetitionSpec, csv_path: Path, message: str,
                 ledger: Ledger, row: LedgerRow, retry: RetryPolicy, sleep) -> None:
        self.api, self.spec, self.csv_path, self.message = api, spec, csv_path, message
        self.ledger, self.row, self.retry, self.sleep = ledger, row, retry, sleep
        self.maybe_sent = False
        self.before: set[str] = set()
        self.last = "no attempt made"

    def listed(self, ref: str | None) -> RemoteSubmission | None:
        """Our submission among those listed now and not before (by ref, else description)."""
        for item in list_submissions(self.api, self.spec.slug, retry=self.retry,
                                     sleep=self.sleep):
            if item.ref in self.before:
                continue
            if (ref and item.ref == ref) or (not ref and item.description == self.message):
                return item
        return None

    def settle(self) -> RemoteSubmission | None:
        """After a CreateSubmission without a definite answer: is it on Kaggle? Absent from a
        clean listing means it was never recorded; an unreadable list leaves it unknown."""
        try:
            found = self.listed(None)
        except HarnessError as exc:
            raise self.unknown(str(exc)) from None
        if found is None:
            self.maybe_sent = False
            logger.info("%s is not in your submissions list: the failed try recorded nothing",
                        self.csv_path.name)
        return found

    def unknown(self, problem: str) -> HarnessError:
        slug, row_id = self.spec.slug, self.row.id
        self.ledger.update(row_id, status="pending",
                           error=scrub(f"outcome unknown: {self.last}; then {problem}"))
        return HarnessError(
            f"outcome unknown: {self.last}, and your submissions list could not be read to see "
            f"whether Kaggle recorded {self.csv_path.name} anyway ({problem}); ledger row {row_id} "
            f"stays pending. Look for {self.message!r} on {submissions_page(slug)}, or rerun "
            "the same `harness upload` later: it reads the list first and uploads only if the "
            "submission is not there")

    def done(self, found: RemoteSubmission) -> LedgerRow:
        row = self.ledger.update(self.row.id, **ledger_fields(found))
        # Said once, by the caller (`harness upload` prints the row).
        logger.debug("uploaded %s to %s as submission %s (%s): %s", self.csv_path.name,
                     self.spec.slug, found.ref, row.status, self.message)
        return row

    def fail(self, status: str, error: str, exc: HarnessError) -> HarnessError:
        self.ledger.update(self.row.id, status=status, error=scrub(error))
        return exc

    def refused(self, step: str, failure: KaggleFailure) -> HarnessError:
        """A definite, permanent answer: nothing was recorded; the ledger row says why."""
        name, slug, row_id = self.csv_path.name, self.spec.slug, self.row.id
        if step == "the file transfer" and failure.kind in ("auth", "forbidden", "not_found"):
            return self.fail("failed", _describe(step, failure), HarnessError(
                f"Kaggle refused the transfer of {name} for {slug} (HTTP {failure.status}: "
                f"{failure.message}); nothing was submitted. A refusal is not retried: check "
                f"that {slug} still accepts submissions and that you accepted its rules "
                f"(https://www.kaggle.com/c/{slug}/rules), then rerun (ledger row {row_id})"))
        if failure.kind in ("auth", "forbidden", "not_found"):
            return self.fail("failed", _describe(step, failure),
                             failure_error(failure, slug, "upload a submission"))
        return self.fail("rejected", failure.message, HarnessError(
            f"Kaggle rejected {name} for {slug}: {failure.message} (ledger row {row_id})"))

    def submit_once(self) -> LedgerRow | None:
        """One try of the three steps: the row when listed, None after a transient failure
        (described in `self.last`); raises on a refusal."""
        from kagglesdk.competitions.types.competition_api_service import (
            ApiCreateSubmissionRequest,
            ApiStartSubmissionUploadRequest,
        )

        slug, path = self.spec.slug, self.csv_path
        with self.api.build_kaggle_client() as kaggle:
            client = kaggle.competitions.competition_api_client
            start = ApiStartSubmissionUploadRequest()
            start.competition_name = slug
            start.file_name = path.name
            start.content_length = path.stat().st_size
            start.last_modified_epoch_seconds = int(path.stat().st_mtime)
            try:
                started = client.start_submission_upload(start)
            except Exception as exc:  # noqa: BLE001 - classified right here
                failure = classify(exc)
                if failure.transient:
                    self.last = _describe("StartSubmissionUpload", failure)
                    return None
                raise self.refused("StartSubmissionUpload", failure) from None
            failure = _transfer(started.create_url, path)
            if failure is not None:
                if failure.transient:
                    self.last = _describe("the file transfer", failure)
                    return None
                raise self.refused("the file transfer", failure)
            create = ApiCreateSubmissionRequest()
            create.competition_name = slug
            create.blob_file_tokens = started.token
            create.submission_description = self.message
            self.maybe_sent = True
            try:
                response = client.create_submission(create)
            except Exception as exc:  # noqa: BLE001 - classified right here
                failure = classify(exc)
                if failure.transient or failure.status is None:
                    # No definite answer: Kaggle may have recorded it (a lost answer).
                    self.last = _describe("CreateSubmission", failure)
                    return None
                self.maybe_sent = False  # Kaggle answered no: nothing was recorded
                raise self.refused("CreateSubmission", failure) from None
        ref = str(response.ref) if response.ref else None
        if ref is None:
            # A 200 answer that carries only a message: Kaggle said no.
            self.maybe_sent = False
            text = scrub(response.message or "") or "no submission was created"
            raise self.fail("rejected", text, HarnessError(
                f"Kaggle did not accept {path.name} for {slug}: {text} (ledger row {self.row.id})"))
        unread = None
        for poll in range(min(3, max(1, self.retry.attempts))):
            if poll:
                self.sleep(self.retry.delay(poll))
            try:
                found = self.listed(ref)
            except HarnessError as exc:
                unread = str(exc)
                break
            if found:
                return self.done(found)
        why = (f"your submissions list could not be read to confirm it ({unread})" if unread
               else "it is not in your submissions list yet")
        self.ledger.update(self.row.id, kaggle_ref=ref,
                           error=scrub(f"Kaggle answered with this ref, but {why}"))
        raise HarnessError(
            f"Kaggle answered submission {ref} for {path.name}, but {why}; run `harness "
            f"leaderboard` later to confirm it (ledger row {self.row.id})")

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
        tries = max(1, self.retry.attempts)
        for attempt in range(1, tries + 1):
            if attempt > 1:
                delay = self.retry.delay(attempt - 1)
                logger.warning("upload of %s failed (%s); retry %d/%d in %.1f s", name,
                               self.last, attempt - 1, tries - 1, delay)
                self.sleep(delay)
                if self.maybe_sent:
                    found = self.settle()
                    if found:
                        logger.info("the earlier try had been recorded (submission %s)",
                                    found.ref)
                        return self.done(found)
            row = self.submit_once()
            if row is not None:
                return row
        if self.maybe_sent:
            found = self.settle()
            if found:
                return self.done(found)
        raise self.fail("failed", self.last, HarnessError(
            f"could not upload {name} to {slug} after {tries} tries (last: {self.last}); "
            f"Kaggle recorded nothing, so rerunning is safe; try again later "
            f"(ledger row {row_id}, failed)"))


def _settle_pending(spec: CompetitionSpec, ledger: Ledger, sha: str, *, block: bool,
                    retry: RetryPolicy, sleep) -> list[LedgerRow]:
    """Settle earlier `pending` rows of this file with Kaggle's list; the rows that count as
    uploaded afterwards. Listed: the row takes Kaggle's status; absent from a clean listing:
    `failed` (never recorded). Raises (when `block`) while an outcome stays unknown."""
    slug = spec.slug
    rows = ledger.uploaded_with_hash(slug, sha)
    pending = [r for r in rows if r.status == "pending"]
    if not pending:
        return rows
    first = pending[0]
    try:
        with kaggle_session() as api:
            remote = list_submissions(api, slug, retry=retry, sleep=sleep)
    except HarnessError as exc:
        if not block:
            logger.warning("could not settle pending ledger row(s) %s: %s",
                           ", ".join(str(r.id) for r in pending), exc)
            return rows
        raise HarnessError(
            f"{Path(first.file_path).name} may already be on Kaggle: ledger row {first.id} "
            f"({first.created_at}) is pending, its outcome unknown, and your submissions list "
            f"could not be read to settle it ({exc}). Look for {first.description!r} on "
            f"{submissions_page(slug)}; rerun when Kaggle answers (the list is read first), or "
            "pass --force if it is not there") from None
    claimed = {r.kaggle_ref for r in ledger.rows(slug) if r.kaggle_ref and r.status != "pending"}
    for row in pending:
        if row.kaggle_ref:
            found = next((s for s in remote if s.ref == row.kaggle_ref), None)
        else:  # oldest unclaimed submission with this description
            found = next((s for s in reversed(remote)
                          if s.description == row.description and s.ref not in claimed), None)
        if found is not None:
            claimed.add(found.ref)
            ledger.update(row.id, **ledger_fields(found))
            logger.info("ledger row %d (pending) is on Kaggle as submission %s (%s)", row.id,
                        found.ref, found.status.lower())
        elif row.kaggle_ref:
            if block:
                raise HarnessError(
                    f"Kaggle answered submission {row.kaggle_ref} for ledger row {row.id} but "
                    f"does not list it; look on {submissions_page(slug)} and pass --force to "
                    "upload the file again")
        else:
            ledger.update(row.id, status="failed", error=f"not in your submissions list at "
                          f"{now_utc()}: Kaggle never recorded it")
            logger.info("ledger row %d (pending) is not in your submissions list: Kaggle never "
                        "recorded it; marked failed", row.id)
    return ledger.uploaded_with_hash(slug, sha)


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
        force: Upload even if a file with the same sha256 was uploaded before (or may have
            been: a `pending` row whose outcome the submissions list cannot settle).
        retry: Backoff for transient failures (5xx, 429, timeouts), of every step.
        sleep: Injected for tests.

    Returns:
        The ledger row: status `submitted` (listed, not scored yet), `complete` (scored) or
        `error` (Kaggle could not score it), with Kaggle's ref.

    Raises:
        HarnessError: invalid CSV, duplicate file, local-only competition, no credentials,
            Kaggle's refusal (e.g. daily limit, a 403 on the transfer), transient failures
            after every retry, or an outcome that Kaggle's list cannot settle (row `pending`).
    """
    if not spec.downloadable:
        raise local_only_error(spec.slug, "upload")
    csv_path = Path(csv_path)
    validate_submission(csv_path, spec, data_dir)
    sha = file_sha256(csv_path)
    message = submission_message(ensemble, cv_score, sha)
    ledger = Ledger(ledger_path)
    earlier = _settle_pending(spec, ledger, sha, block=not force, retry=retry, sleep=sleep)
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
        # A crash or Ctrl-C: pending (outcome unknown) if a CreateSubmission may have gone out.
        sent = attempt is not None and attempt.maybe_sent
        ledger.update(row.id, status="pending" if sent else "failed",
                      error=scrub(f"interrupted: {type(exc).__name__}: {exc}"))
        raise
