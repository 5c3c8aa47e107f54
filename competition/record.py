"""The competition's record in the Kaggle API: what its Evaluation page's metric is called.

`harness init` asks for it, because the files of a download cannot tell the metric. The
record comes from ListCompetitions searched by the slug (the API has no "get one
competition" call); the entry whose ref is the slug, or ends with "/<slug>", is the one.
"""

from __future__ import annotations

from base.errors import HarnessError
from base.kaggle_client import RetryPolicy, call_with_retry, kaggle_session

# `harness init` waits for this answer: two quick tries, not an upload's patient five.
INIT_RETRY = RetryPolicy(attempts=2, initial_delay=1.0)


def _is_slug(ref: str, slug: str) -> bool:
    return ref.rstrip("/") == slug or ref.rstrip("/").endswith(f"/{slug}")


def kaggle_evaluation_metric(slug: str, *, retry: RetryPolicy = INIT_RETRY) -> str:
    """Kaggle's name of `slug`'s evaluation metric ("" when the record has none).

    Raises:
        HarnessError: no credentials, Kaggle unreachable, or no competition `slug`.
    """
    from kagglesdk.competitions.types.competition_api_service import (
        ApiListCompetitionsRequest,
    )
    from kagglesdk.competitions.types.competition_enums import CompetitionListTab, HostSegment

    with kaggle_session() as api:
        # The slug first, then its words (a search may match titles rather than slugs).
        for search in dict.fromkeys((slug, slug.replace("-", " "))):
            request = ApiListCompetitionsRequest()
            request.search = search
            # Every group and category: closed ones too (the CLI's `--category all`).
            request.group = CompetitionListTab.COMPETITION_LIST_TAB_EVERYTHING
            request.category = HostSegment.HOST_SEGMENT_UNSPECIFIED
            request.page_size = 50

            def listing(request=request):
                with api.build_kaggle_client() as kaggle:
                    return kaggle.competitions.competition_api_client.list_competitions(
                        request)

            response = call_with_retry(listing, what="read the competition's record",
                                       slug=slug, retry=retry)
            for record in response.competitions or []:
                if _is_slug(record.ref or "", slug):
                    return record.evaluation_metric or ""
    raise HarnessError(f"Kaggle lists no competition {slug!r}; check the slug (the last part "
                       f"of the competition's URL, https://www.kaggle.com/c/SLUG)")
