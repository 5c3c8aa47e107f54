"""Compare local CV with the leaderboard: fetch scores, update the ledger, print and plot.

`refresh_leaderboard` lists the user's submissions through the kaggle client, joins them with
the ledger (by Kaggle ref, else by the description `NAME cv=<score> <hash8>`, which also
identifies submissions made before the ledger existed), stores the scores in the ledger,
finds where the best public score would rank on the public leaderboard (and, once the
competition has ended, the best private score on the private one), and draws CV score against
public score, one labelled point per ensemble.

Like is compared with like: Kaggle answers with the private leaderboard by default once there
is one, so the public leaderboard is asked for explicitly. The user's own team is on the
leaderboard too; it is never counted as a rival (found by its team name, which Kaggle lists
with each submission; without one, by the row that holds the user's own best score).
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from base.errors import HarnessError
from base.figures import save_png
from base.kaggle_client import DEFAULT_RETRY, RetryPolicy, kaggle_session, local_only_error
from competition.spec import CompetitionSpec
from submissions.ledger import Ledger, LedgerRow
from submissions.remote import (
    RemoteSubmission,
    leaderboard_rows,
    ledger_fields,
    list_submissions,
)

logger = logging.getLogger(__name__)

COLUMNS = ["ensemble", "cv_score", "public_score", "gap", "private_score", "status", "ref",
           "date", "ledger_id", "description"]
_DESCRIPTION = re.compile(r"^(?P<name>\S+) cv=(?P<cv>\S+) [0-9a-f]{8}$")


@dataclass(frozen=True)
class LeaderboardReport:
    """What `harness leaderboard` shows.

    Attributes:
        competition, metric, lower_is_better: From the spec.
        table: One row per submission on Kaggle (COLUMNS), best public score first;
            `gap` is public minus CV.
        png_path: The CV-vs-public scatter, or None when no submission has both scores.
        rank_text: Where the best public score would rank on the public leaderboard, and
            the best private score on the private one once it exists (one line each), or
            why that is unknown.
        best_public, rank, teams: The public numbers behind rank_text (None / 0 when
            unknown); `teams` counts the user's own team once.
        best_private, private_rank, private_teams: The same on the private leaderboard.
    """

    competition: str
    metric: str
    lower_is_better: bool
    table: pd.DataFrame
    png_path: Path | None
    rank_text: str
    best_public: float | None = None
    rank: int | None = None
    teams: int = 0
    best_private: float | None = None
    private_rank: int | None = None
    private_teams: int = 0


@dataclass(frozen=True)
class _Standing:
    """Where one score would rank on one leaderboard."""

    text: str
    best: float | None = None
    rank: int | None = None
    teams: int = 0


def _match(rows: list[LedgerRow], item: RemoteSubmission, used: set[int]) -> LedgerRow | None:
    for row in reversed(rows):
        if row.id not in used and row.kaggle_ref == item.ref:
            return row
    for row in reversed(rows):  # newest attempt first: a forced re-upload shares the text
        if row.id not in used and not row.kaggle_ref and row.description == item.description:
            return row
    return None


def _from_description(description: str) -> tuple[str, float | None]:
    """(ensemble, cv) parsed from `NAME cv=<score> <hash8>`, else (description, None)."""
    found = _DESCRIPTION.match(description.strip())
    if not found:
        return description or "(no description)", None
    try:
        return found["name"], float(found["cv"])
    except ValueError:
        return found["name"], None


def _join(ledger: Ledger, slug: str, remote: list[RemoteSubmission]) -> pd.DataFrame:
    rows = ledger.rows(slug)
    used: set[int] = set()
    records = []
    for item in remote:
        row = _match(rows, item, used)
        if row is not None:
            used.add(row.id)
            row = ledger.update(row.id, **ledger_fields(item))
            ensemble, cv = row.ensemble, row.cv_score
        else:
            ensemble, cv = _from_description(item.description)
        gap = (item.public_score - cv
               if item.public_score is not None and cv is not None else math.nan)
        records.append({
            "ensemble": ensemble, "cv_score": cv, "public_score": item.public_score, "gap": gap,
            "private_score": item.private_score, "status": item.status.lower(), "ref": item.ref,
            "date": item.date, "ledger_id": row.id if row else None,
            "description": item.description,
        })
    unmatched = [r for r in rows if r.id not in used and r.status == "pending"]
    if unmatched:
        logger.warning("%d ledger row(s) still pending and not on Kaggle: %s", len(unmatched),
                       ", ".join(str(r.id) for r in unmatched))
    table = pd.DataFrame.from_records(records, columns=COLUMNS)
    return table.astype({"cv_score": float, "public_score": float, "gap": float,
                         "private_score": float})


def _rivals(rows: list[tuple[str, float]], own_team: str, own_best: float) -> list[float]:
    """The other teams' scores: the user's own team's row left out."""
    if own_team:
        return [score for name, score in rows if name != own_team]
    scores = [score for _, score in rows]
    # No team name listed: the user's row, if there, holds their best score. Leaving out one
    # row with that score never changes the rank (a tie is not better), only the count.
    for i, score in enumerate(scores):
        if math.isclose(score, own_best, rel_tol=0, abs_tol=5e-6):
            return scores[:i] + scores[i + 1:]
    return scores


def _standing(spec: CompetitionSpec, table: pd.DataFrame, board: str,
              rows: list[tuple[str, float]] | None, whole: bool, own_team: str,
              problem: str | None) -> _Standing:
    """Where the best `board` ("public"/"private") score would rank on that leaderboard."""
    column = f"{board}_score"
    scored = table.dropna(subset=[column]).sort_values(
        column, ascending=spec.lower_is_better, kind="stable")
    if scored.empty:
        return _Standing(f"no {board} score yet")
    best = scored.iloc[0]
    score = float(best[column])
    head = f"best {board} {score:.5f} ({best.ensemble})"
    if rows is None:
        return _Standing(f"{head}; {board} leaderboard unavailable ({problem})", score)
    rivals = _rivals(rows, own_team, score)
    if spec.lower_is_better:
        better = sum(s < score for s in rivals)
    else:
        better = sum(s > score for s in rivals)
    rank, teams = better + 1, len(rivals) + 1  # the user's team counted once
    of = f"{teams}" if whole else f"at least {teams}"
    return _Standing(f"{head} would rank {rank} of {of} teams on the {board} leaderboard "
                     f"(top {100 * rank / teams:.1f}%)", score, rank, teams)


def _unranked(table: pd.DataFrame) -> str | None:
    """Why there is nothing to rank, or None when some submission has a public score."""
    if table.empty:
        return "no submission on Kaggle yet, so nothing to rank (`harness upload` sends one)"
    if table.public_score.notna().any():
        return None
    scoring = int((table.status == "pending").sum())
    if scoring:
        return f"no public score yet: {scoring} submission(s) still being scored by Kaggle"
    return "no public score: Kaggle could not score any submission (see the status column)"


def _plot(spec: CompetitionSpec, table: pd.DataFrame, path: Path) -> Path | None:
    from matplotlib.figure import Figure  # not pyplot: base.figures

    both = table.dropna(subset=["cv_score", "public_score"])
    if both.empty:
        return None
    # One point per ensemble: its best public score.
    both = both.drop_duplicates(subset=["ensemble"], keep="first")
    figure = Figure(figsize=(6, 5), dpi=100)
    axes = figure.add_subplot()
    axes.scatter(both.cv_score, both.public_score, color="tab:blue")
    for item in both.itertuples():
        axes.annotate(item.ensemble, (item.cv_score, item.public_score),
                      textcoords="offset points", xytext=(4, 4), fontsize=8)
    low = min(both.cv_score.min(), both.public_score.min())
    high = max(both.cv_score.max(), both.public_score.max())
    pad = (high - low) * 0.1 or 0.01
    axes.plot([low - pad, high + pad], [low - pad, high + pad], "--", color="grey",
              linewidth=0.8, label="public = CV")
    better = "lower" if spec.lower_is_better else "higher"
    axes.set_xlabel(f"CV {spec.metric} ({better} is better)")
    axes.set_ylabel(f"public leaderboard {spec.metric}")
    axes.set_title(f"{spec.slug}: CV vs public score")
    axes.legend(loc="best", fontsize=8)
    return save_png(figure, path)


def refresh_leaderboard(
    spec: CompetitionSpec,
    ledger_path: Path,
    out_dir: Path,
    *,
    retry: RetryPolicy = DEFAULT_RETRY,
    sleep=time.sleep,
) -> LeaderboardReport:
    """Fetch the user's submissions and the leaderboard, update the ledger, draw the plot.

    Args:
        spec: The competition; `spec.lower_is_better` orders the table.
        ledger_path: The SQLite ledger (created if missing).
        out_dir: Where `<slug>-cv-vs-public.png` goes.

    Returns:
        The report; print it with `format_leaderboard`.

    Raises:
        HarnessError: local-only competition, credentials, or listing failures.
    """
    if not spec.downloadable:
        raise local_only_error(spec.slug, "compare with a leaderboard")
    ledger = Ledger(ledger_path)
    problem = None
    boards: dict[str, tuple[list[tuple[str, float]] | None, bool]] = {}
    with kaggle_session() as api:
        remote = list_submissions(api, spec.slug, retry=retry, sleep=sleep)
        # Private scores are listed only once the competition has a private leaderboard.
        ended = any(item.private_score is not None for item in remote)
        if any(item.public_score is not None for item in remote):
            try:
                boards["public"] = leaderboard_rows(api, spec.slug, public=True, retry=retry,
                                                    sleep=sleep)
                if ended:
                    boards["private"] = leaderboard_rows(api, spec.slug, public=False,
                                                         retry=retry, sleep=sleep)
            except HarnessError as exc:
                problem = str(exc)
    own_team = next((item.team_name for item in remote if item.team_name), "")
    table = _join(ledger, spec.slug, remote)
    table = table.sort_values("public_score", ascending=spec.lower_is_better,
                              na_position="last", kind="stable").reset_index(drop=True)
    why_not = _unranked(table)
    public = private = _Standing(why_not or "")
    if why_not is None:
        public = _standing(spec, table, "public", *boards.get("public", (None, False)),
                           own_team, problem)
        if ended:
            private = _standing(spec, table, "private", *boards.get("private", (None, False)),
                                own_team, problem)
    text = "\n".join(dict.fromkeys(s.text for s in (public, private) if s.text))
    png = _plot(spec, table, Path(out_dir) / f"{spec.slug}-cv-vs-public.png")
    # Said once, by the caller (`harness leaderboard` prints the report).
    logger.debug("%s: %d submission(s); %s", spec.slug, len(table), text)
    return LeaderboardReport(spec.slug, spec.metric, spec.lower_is_better, table, png, text,
                             public.best, public.rank, public.teams,
                             private.best, private.rank, private.teams)


def format_leaderboard(report: LeaderboardReport) -> str:
    """The report as text: a header, the table (CV, public, gap), the rank line, the plot."""
    better = "lower" if report.lower_is_better else "higher"
    header = (f"{report.competition}: {report.metric} ({better} is better), "
              f"{len(report.table)} submission(s)")
    lines = [header]
    if not report.table.empty:
        shown = report.table[["ensemble", "cv_score", "public_score", "gap", "private_score",
                              "status", "ref", "date"]]
        lines.append(shown.to_string(index=False, na_rep="-",
                                     float_format=lambda v: f"{v:.5f}"))
    lines.append(report.rank_text)
    if report.png_path is not None:
        lines.append(f"plot: {report.png_path}")
    return "\n".join(lines)
