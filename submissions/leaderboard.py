"""Compare local CV with the leaderboard: fetch scores, update the ledger, print and plot.

`refresh_leaderboard` lists the user's submissions through the kaggle client, joins them with
the ledger (by Kaggle ref, else by the description `NAME cv=<score> <hash8>`, which also
identifies submissions made before the ledger existed), stores the scores in the ledger,
finds where the best public score would rank on the public leaderboard, and draws CV score
against public score, one labelled point per ensemble.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from competition.atomic import atomic_path
from competition.errors import HarnessError
from competition.kaggle_api import DEFAULT_RETRY, RetryPolicy, kaggle_session, local_only_error
from competition.spec import CompetitionSpec
from submissions.ledger import Ledger, LedgerRow
from submissions.remote import (
    RemoteSubmission,
    leaderboard_scores,
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
        rank_text: One line: where the best public score would rank, or why unknown.
        best_public, rank, teams: The numbers behind rank_text (None / 0 when unknown).
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


def _rank_text(spec: CompetitionSpec, table: pd.DataFrame, scores: list[float] | None,
               whole: bool, problem: str | None) -> tuple[str, float | None, int | None, int]:
    scored = table.dropna(subset=["public_score"])
    if scored.empty:
        return "no public score yet (submissions still scoring?)", None, None, 0
    best = scored.iloc[0]
    head = f"best public {best.public_score:.5f} ({best.ensemble})"
    if scores is None:
        return f"{head}; leaderboard unavailable ({problem})", best.public_score, None, 0
    if spec.lower_is_better:
        better = sum(s < best.public_score for s in scores)
    else:
        better = sum(s > best.public_score for s in scores)
    rank = better + 1
    teams = len(scores)
    of = f"{teams}" if whole else f"at least {teams}"
    percent = f" (top {100 * rank / max(teams, rank):.1f}%)" if teams else ""
    return (f"{head} would rank {rank} of {of} teams on the public leaderboard{percent}",
            best.public_score, rank, teams)


def _plot(spec: CompetitionSpec, table: pd.DataFrame, path: Path) -> Path | None:
    from matplotlib.figure import Figure  # no pyplot: no global state, Agg canvas

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
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


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
    with kaggle_session() as api:
        remote = list_submissions(api, spec.slug, retry=retry, sleep=sleep)
        try:
            scores, whole = leaderboard_scores(api, spec.slug, retry=retry, sleep=sleep)
        except HarnessError as exc:
            scores, whole, problem = None, False, str(exc)
    table = _join(ledger, spec.slug, remote)
    table = table.sort_values("public_score", ascending=spec.lower_is_better,
                              na_position="last", kind="stable").reset_index(drop=True)
    text, best, rank, teams = _rank_text(spec, table, scores, whole, problem)
    png = _plot(spec, table, Path(out_dir) / f"{spec.slug}-cv-vs-public.png")
    logger.info("%s: %d submission(s); %s", spec.slug, len(table), text)
    return LeaderboardReport(spec.slug, spec.metric, spec.lower_is_better, table, png, text,
                             best, rank, teams)


def format_leaderboard(report: LeaderboardReport) -> str:
    """The report as text: a header, the table (CV, public, gap), the rank line, the plot."""
    better = "lower" if report.lower_is_better else "higher"
    header = (f"{report.competition}: {report.metric} ({better} is better), "
              f"{len(report.table)} submission(s)")
    lines = [header]
    if report.table.empty:
        lines.append("no submissions on Kaggle yet")
    else:
        shown = report.table[["ensemble", "cv_score", "public_score", "gap", "private_score",
                              "status", "ref", "date"]]
        lines.append(shown.to_string(index=False, na_rep="-",
                                     float_format=lambda v: f"{v:.5f}"))
    lines.append(report.rank_text)
    if report.png_path is not None:
        lines.append(f"plot: {report.png_path}")
    return "\n".join(lines)
