"""The harness from Python, for a notebook cell: `from harness import run`.

    from harness import run
    result = run("dogs-vs-cats-redux-kernels-edition", data_dir="/kaggle/input/...",
                 weights_dir="/kaggle/input/my-weights", workspace="/kaggle/working/work",
                 submission_csv="/kaggle/working/submission.csv")
    result.table          # every ensemble and blend, best first (the CV table)
    result.submission     # the chosen CSV (copied to submission_csv when given)

The same checks, caching and resumption as `make submit`: it is `harness.pipeline.submit`
with the configuration built from these arguments (and a config file when given). Progress
bars are tqdm's `auto` ones (widgets in a notebook, text in a terminal); plots are drawn on
figures of their own, so a notebook's matplotlib backend is never switched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from base.atomic import atomic_path


@dataclass(frozen=True)
class RunResult:
    """What `run` made.

    Attributes:
        table: The CV table (pandas DataFrame, best first), as `make ensembles` prints it.
        submission: The chosen ensemble's validated CSV (`submission_csv` when given).
        pick: The chosen ensemble's name, and `why` it was chosen.
        csvs: Every ensemble's validated CSV under the workspace, the pick's first.
        seconds: Wall-clock seconds of each stage.
    """

    table: Any
    submission: Path
    pick: str
    why: str
    csvs: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def in_kaggle_notebook() -> bool:
    """Whether this process runs in a Kaggle notebook (Kaggle sets this variable there)."""
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE"))


def kaggle_root_now() -> Path:
    """The notebook root: $HARNESS_KAGGLE_ROOT (read now, not at import) or /kaggle."""
    return Path(os.environ.get("HARNESS_KAGGLE_ROOT", "/kaggle"))


def notebook_paths(competition: str | None, data_dir: Any, workspace: Any,
                   submission_csv: Any, kaggle_root: Path | None = None) -> tuple:
    """(data_dir, workspace, submission_csv) of a Kaggle notebook, each given value kept:
    `<root>/input/<competition>`, `<root>/working/harness`, `<root>/working/submission.csv`.
    The demo has no input folder: it is generated in the workspace (input is read-only).

    Raises:
        HarnessError: neither a competition nor a data folder to read.
    """
    from base.errors import HarnessError

    kaggle_root = kaggle_root or kaggle_root_now()
    if data_dir is None and competition != "demo":
        if not competition:
            raise HarnessError("in a Kaggle notebook, name the competition (its slug, the "
                               "folder under /kaggle/input) or give the data folder")
        data_dir = kaggle_root / "input" / competition
    working = kaggle_root / "working"
    return (data_dir, workspace if workspace is not None else working / "harness",
            submission_csv if submission_csv is not None else working / "submission.csv")


def run(competition: str | None = None, *, config: str | Path | None = None,
        data_dir: str | Path | None = None, weights_dir: str | Path | None = None,
        weights: str | None = None, workspace: str | Path | None = None,
        backbones: Sequence[str] | str | None = None, ensemble: str | None = None,
        submission_csv: str | Path | None = None, progress: bool = True,
        time_limit: str | float | None = None, notebook: bool | None = None,
        kaggle_root: str | Path | None = None) -> RunResult:
    """features -> ensembles -> validated CSVs, as `harness submit`; returns the table and
    the chosen CSV.

    Args:
        competition: A catalog slug (`harness competitions`) or the config's; default demo.
        config: A TOML config file (default: `harness.toml` in the current folder, if any).
        data_dir, weights_dir, weights, workspace, backbones: As the command-line options
            of the same names; they win over the config.
        ensemble: Submit this ensemble or blend instead of the pick.
        submission_csv: Also copy the chosen CSV here (a notebook's `submission.csv`).
        progress: Show progress bars.
        time_limit: "9h", "90m" or seconds: after the first batches, the extraction stops
            if it would take longer, naming the backbones to drop (features.budget).
        notebook: Kaggle-notebook defaults (None: when `in_kaggle_notebook()`): the data
            read from `<kaggle_root>/input/<competition>` and never written to, the
            workspace `<kaggle_root>/working/harness`, the pick copied to
            `<kaggle_root>/working/submission.csv`; explicit arguments still win. The test
            images are listed anew on every run (a scoring run swaps in the hidden test
            set): their features and predictions are computed for the ids present.
        kaggle_root: Where the notebook's input/ and working/ are (None: the variable
            HARNESS_KAGGLE_ROOT, to simulate a notebook elsewhere, or /kaggle).

    Raises:
        HarnessError: any bad input, with the one-line message the CLI prints.
    """
    from ensembles.report import report_table
    from features.budget import parse_duration
    from harness import pipeline
    from harness.config import load_config

    limit = parse_duration(time_limit) if time_limit is not None else None  # before any work
    if in_kaggle_notebook() if notebook is None else notebook:
        data_dir, workspace, submission_csv = notebook_paths(
            competition, data_dir, workspace, submission_csv,
            Path(kaggle_root) if kaggle_root is not None else None)

    overrides = {"competition": competition, "data_dir": _text(data_dir),
                 "weights_dir": _text(weights_dir), "weights": weights,
                 "workspace": _text(workspace), "ensemble": ensemble,
                 "backbones": " ".join(backbones) if isinstance(backbones, (list, tuple))
                 else backbones}
    settings = load_config(Path(config) if config is not None else None, overrides)
    done = pipeline.submit(settings, ensemble=ensemble, progress=progress, time_limit=limit)
    chosen = done.paths[0]
    if submission_csv is not None:
        chosen = copy_submission(chosen, Path(submission_csv))
    return RunResult(table=report_table(done.results), submission=chosen, pick=done.pick.name,
                     why=done.why, csvs=list(done.paths), seconds=dict(done.seconds))


def copy_submission(source: Path, target: Path) -> Path:
    """`source` copied to `target` atomically (a half-written submission.csv is never
    there to be scored); returns `target`."""
    with atomic_path(target) as tmp:  # it makes the folder too
        shutil.copyfile(source, tmp)
    return target


def _text(value: str | Path | None) -> str | None:
    return None if value is None else str(value)
