"""Read-only listings through the kaggle client: own submissions, limits, the leaderboard."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from competition.kaggle_api import RetryPolicy, call_with_retry, classify

logger = logging.getLogger(__name__)

MAX_PAGES = 50


@dataclass(frozen=True)
class RemoteSubmission:
    """One of the user's submissions as Kaggle lists it (scores parsed, "" -> None)."""

    ref: str
    description: str
    file_name: str
    date: str
    status: str  # "PENDING", "COMPLETE" or "ERROR"
    public_score: float | None
    private_score: float | None
    error_description: str


def parse_score(text: Any) -> float | None:
    """Kaggle's score strings ("0.04123", "" or None) as a float or None."""
    try:
        return float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _status_name(value: Any) -> str:
    name = getattr(value, "name", str(value))
    return name.rsplit(".", 1)[-1].replace("SUBMISSION_STATUS_", "").upper()


def list_submissions(api: Any, slug: str, *, retry: RetryPolicy, sleep=time.sleep,
                     page_size: int = 100) -> list[RemoteSubmission]:
    """Every submission of the user to `slug`, newest first (all pages, at most MAX_PAGES)."""
    from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

    def one_page(token: str) -> Any:
        request = ApiListSubmissionsRequest()
        request.competition_name = slug
        request.page_size = page_size
        request.page_token = token
        with api.build_kaggle_client() as kaggle:
            return kaggle.competitions.competition_api_client.list_submissions(request)

    found: list[RemoteSubmission] = []
    token = ""
    for _ in range(MAX_PAGES):
        response = call_with_retry(lambda t=token: one_page(t), what="list your submissions",
                                   slug=slug, retry=retry, sleep=sleep)
        for item in response.submissions or []:
            found.append(RemoteSubmission(
                ref=str(item.ref),
                description=item.description or "",
                file_name=item.file_name or "",
                date=item.date.isoformat(timespec="seconds") if item.date else "",
                status=_status_name(item.status),
                public_score=parse_score(item.public_score),
                private_score=parse_score(item.private_score),
                error_description=item.error_description or "",
            ))
        token = response.next_page_token or ""
        if not token:
            break
    return found


def remaining_today(api: Any, slug: str) -> int | None:
    """How many submissions Kaggle still allows today, or None when the client cannot tell."""
    try:
        limits = api.competition_get_submission_limits(slug)
    except Exception as exc:  # noqa: BLE001 - optional information; the upload decides
        logger.info("could not read the submission limits of %s (%s); going on",
                    slug, classify(exc).message)
        return None
    return int(limits.num_allowed_now)


def leaderboard_scores(api: Any, slug: str, *, retry: RetryPolicy, sleep=time.sleep,
                       page_size: int = 200) -> tuple[list[float], bool]:
    """The public leaderboard's team scores (in Kaggle's order) and whether the list is whole."""
    from kagglesdk.competitions.types.competition_api_service import ApiGetLeaderboardRequest

    def one_page(token: str) -> Any:
        request = ApiGetLeaderboardRequest()
        request.competition_name = slug
        request.page_size = page_size
        request.page_token = token
        with api.build_kaggle_client() as kaggle:
            return kaggle.competitions.competition_api_client.get_leaderboard(request)

    scores: list[float] = []
    token = ""
    for _ in range(MAX_PAGES):
        response = call_with_retry(lambda t=token: one_page(t), what="read the leaderboard",
                                   slug=slug, retry=retry, sleep=sleep)
        scores += [s for s in (parse_score(r.score) for r in response.submissions or [])
                   if s is not None]
        token = response.next_page_token or ""
        if not token:
            return scores, True
    return scores, False


def ledger_fields(found: RemoteSubmission) -> dict[str, Any]:
    """Ledger columns for a submission as Kaggle lists it."""
    status = {"COMPLETE": "complete", "ERROR": "error"}.get(found.status, "submitted")
    return {
        "status": status,
        "kaggle_ref": found.ref,
        "public_score": found.public_score,
        "private_score": found.private_score,
        "error": (found.error_description or "scoring failed") if status == "error" else None,
    }
