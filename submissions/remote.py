"""Read-only listings through the kaggle client: own submissions, limits, the leaderboard."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from base.kaggle_client import RetryPolicy, call_with_retry, classify

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
    team_name: str = ""


def parse_score(text: Any) -> float | None:
    """Kaggle's score strings ("0.04123", "" or None) as a float or None."""
    try:
        return float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _status_name(value: Any) -> str:
    name = getattr(value, "name", str(value))
    return name.rsplit(".", 1)[-1].replace("SUBMISSION_STATUS_", "").upper()


def _all_pages(api: Any, slug: str, request: Any, method: str, what: str, *,
               retry: RetryPolicy, sleep) -> tuple[list[Any], bool]:
    """Every page's items of a paged competitions API call (at most MAX_PAGES pages),
    and whether the list is whole. Each page is retried on its own."""
    items: list[Any] = []
    token = ""
    for _ in range(MAX_PAGES):
        request.page_token = token

        def one_page() -> Any:
            with api.build_kaggle_client() as kaggle:
                return getattr(kaggle.competitions.competition_api_client, method)(request)

        response = call_with_retry(one_page, what=what, slug=slug, retry=retry, sleep=sleep)
        items += list(response.submissions or [])
        token = response.next_page_token or ""
        if not token:
            return items, True
    return items, False


def list_submissions(api: Any, slug: str, *, retry: RetryPolicy, sleep=time.sleep,
                     page_size: int = 100) -> list[RemoteSubmission]:
    """Every submission of the user to `slug`, newest first (all pages, at most MAX_PAGES)."""
    from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

    request = ApiListSubmissionsRequest()
    request.competition_name = slug
    request.page_size = page_size
    items, _ = _all_pages(api, slug, request, "list_submissions", "list your submissions",
                          retry=retry, sleep=sleep)
    return [RemoteSubmission(
        ref=str(item.ref),
        description=item.description or "",
        file_name=item.file_name or "",
        date=item.date.isoformat(timespec="seconds") if item.date else "",
        status=_status_name(item.status),
        public_score=parse_score(item.public_score),
        private_score=parse_score(item.private_score),
        error_description=item.error_description or "",
        team_name=item.team_name or "",
    ) for item in items]


def remaining_today(api: Any, slug: str) -> int | None:
    """How many submissions Kaggle still allows today, or None when the client cannot tell."""
    try:
        limits = api.competition_get_submission_limits(slug)
    except Exception as exc:  # noqa: BLE001 - optional information; the upload decides
        logger.info("could not read the submission limits of %s (%s); going on",
                    slug, classify(exc).message)
        return None
    return int(limits.num_allowed_now)


def leaderboard_rows(api: Any, slug: str, *, public: bool, retry: RetryPolicy,
                     sleep=time.sleep, page_size: int = 200) -> tuple[list[tuple[str, float]], bool]:
    """A leaderboard's (team name, score) rows, in Kaggle's order, and whether the list is whole.

    Kaggle answers with the private leaderboard once the competition has one, else the public
    one; `public=True` asks for the public one in any case (`overridePublic`). So the private
    leaderboard is `public=False` only when the competition has one (its scores are listed).
    """
    from kagglesdk.competitions.types.competition_api_service import ApiGetLeaderboardRequest

    request = ApiGetLeaderboardRequest()
    request.competition_name = slug
    request.page_size = page_size
    if public:
        request.override_public = True
    which = "public" if public else "default (private once it exists)"
    rows, whole = _all_pages(api, slug, request, "get_leaderboard",
                             f"read the {which} leaderboard", retry=retry, sleep=sleep)
    scored = [(r.team_name or "", parse_score(r.score)) for r in rows]
    return [(name, score) for name, score in scored if score is not None], whole


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
