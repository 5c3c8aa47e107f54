"""The pipeline the CLI (and a notebook) calls: one function per stage, typed arguments.

competition -> features -> ensembles -> submissions; this module is the one place that
strings the stages together (the CLI only parses arguments, calls these and prints).
Heavy libraries (TensorFlow, Keras) are imported by the stage that needs them, and only
when something is left to compute.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from base.errors import HarnessError
from base.logs import quiet_tensorflow_import
from harness.config import Config


def ensure_data(config: Config) -> None:
    """Make sure the data folder exists: generate the demo, or say how to download."""
    if config.spec.slug == "demo" and not (config.data_dir / "train").is_dir():
        from competition.demo import generate_demo

        generate_demo(config.data_dir)
    elif not config.data_dir.is_dir():
        raise HarnessError(
            f"data folder {config.data_dir} does not exist; run `harness download` "
            f"(make data) or pass --data-dir / DATA_DIR"
        )
    else:
        from competition.download import COMPLETION_RECORD

        archive = config.data_dir / f"{config.spec.slug}.zip"
        if archive.is_file() and not (config.data_dir / COMPLETION_RECORD).is_file():
            raise HarnessError(
                f"{archive} was downloaded but not completely unpacked (no "
                f"{COMPLETION_RECORD}); rerun `harness download` (make data) to finish"
            )


def extract(config: Config, *, force: bool = False, shard: tuple[int, int] | None = None,
            merge: int | None = None, progress: bool = True,
            time_limit: float | None = None) -> Any:
    """Extract (or reuse) every feature set the configuration needs; with `merge`, assemble
    that many finished shards instead. `time_limit` (seconds): stop after the first batches
    when the extraction would not fit (features.budget).

    The config was checked when it loaded; the data, the sample submission and every
    weights file are checked here, before TensorFlow's seconds of start-up.

    Returns:
        The ExtractionReport, or the merged files' paths with `merge`.
    """
    from competition.images import check_sample_submission, list_test_images
    from features.weights import resolve_weights

    ensure_data(config)
    check_sample_submission(config.spec, config.data_dir,
                            list_test_images(config.spec, config.data_dir))
    for backbone, _ in config.feature_sets():
        resolve_weights(backbone, config.features, config.spec)
    # TensorFlow is imported by the extraction itself, and only when something is left to
    # compute: reusing cached files takes well under a second.
    from features.extract import extract_for_config
    from features.shards import merge_shards

    if merge:
        return [merge_shards(config.workspace.features_dir, backbone, tta, merge)
                for backbone, tta in config.feature_sets()]
    return extract_for_config(config, force=force, shard=shard, progress=progress,
                              time_limit=time_limit)


def fit_ensembles(config: Config, *, names: Sequence[str] | None = None, force: bool = False,
                  progress: bool = True) -> list:
    """Cross-validate the ensembles and blends (cached results reused); best first
    (ensembles.select.rank)."""
    quiet_tensorflow_import()  # the Keras heads import TensorFlow
    from ensembles.run import run_ensembles
    from ensembles.select import rank

    return rank(run_ensembles(config, names=names, force=force, progress=progress))


def write_submission_for(config: Config, result: Any) -> Path:
    """Write and validate the CSV of one ensemble result; returns its path."""
    from submissions.writer import submission_path, write_submission

    path = submission_path(config.workspace.submissions_dir, config.spec, result.name)
    return write_submission(path, config.spec, config.data_dir, result.test_ids,
                            result.test_proba, result.classes, result.clip, result.decision)


def pick(results: Sequence[Any], name: str | None) -> tuple[Any, str]:
    """The result to submit and why: the one called `name`, else the selection rule's."""
    from ensembles.select import choose_submission

    if name is None:
        return choose_submission(results)
    for result in results:
        if result.name == name:
            return result, "named with --ensemble"
    known = ", ".join(r.name for r in results) or "none"
    raise HarnessError(f"unknown ensemble {name!r}; known: {known}")


@dataclass
class Submission:
    """What `submit` made: the pick, why, every validated CSV (the pick's first), and the
    wall-clock seconds of each stage."""

    pick: Any
    why: str
    paths: list[Path]
    results: list = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def submit(config: Config, *, ensemble: str | None = None, progress: bool = True,
           on_results: Callable[[list], None] | None = None,
           time_limit: float | None = None) -> Submission:
    """features -> ensembles -> validated CSVs: every result's, or only `ensemble`'s.

    `on_results(results)` is called once the ensembles are fitted, before any CSV is
    written (the CLI prints the CV table there, so a CSV error does not hide it)."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    extract(config, progress=progress, time_limit=time_limit)
    seconds["features"] = time.perf_counter() - start
    start = time.perf_counter()
    results = fit_ensembles(config, progress=progress)
    seconds["ensembles"] = time.perf_counter() - start
    if on_results is not None:
        on_results(results)
    chosen, why = pick(results, ensemble)
    start = time.perf_counter()
    to_write = [chosen] if ensemble else [chosen] + [r for r in results if r is not chosen]
    paths = [write_submission_for(config, r) for r in to_write]
    seconds["submissions"] = time.perf_counter() - start
    return Submission(chosen, why, paths, results, seconds)


def saved_results(config: Config) -> list:
    """The saved results of every configured ensemble and blend, best first."""
    from ensembles.results import load_result, result_path
    from ensembles.run import configured_ensembles
    from ensembles.select import rank

    names = list(configured_ensembles(config)) + list(config.blends)
    return rank([load_result(config.workspace.ensembles_dir, name) for name in names
                 if result_path(config.workspace.ensembles_dir, name).is_file()])


def upload(config: Config, *, file: Path | None = None, ensemble: str | None = None,
           cv: float | None = None, force: bool = False) -> tuple[Path, Any]:
    """Upload a CSV with the kaggle client and verify it; returns (path, ledger row).

    The CSV is `file` (with `cv` as its score), or the saved predictions of `ensemble`, or
    those the selection rule picks (the same rule as `submit`), written again so that the
    file always matches the CV score in its message.
    """
    from submissions.upload import upload_submission

    if file is not None:
        path, name, score = file, ensemble or file.stem, cv
    else:
        if cv is not None:
            raise HarnessError("--cv goes with --file; an ensemble's CSV carries its own CV "
                               "score")
        results = saved_results(config)
        if not results:
            raise HarnessError("no ensemble results yet; run `harness submit` (make submit) "
                               "first")
        chosen, _ = pick(results, ensemble)
        path, name, score = write_submission_for(config, chosen), chosen.name, chosen.cv_score
    row = upload_submission(config.spec, path, ensemble=name, cv_score=score,
                            data_dir=config.data_dir, ledger_path=config.workspace.ledger_path,
                            force=force)
    return path, row


def leaderboard(config: Config) -> str:
    """Fetch the leaderboard scores, join them with the ledger; the printed table."""
    from submissions.leaderboard import format_leaderboard, refresh_leaderboard

    return format_leaderboard(refresh_leaderboard(config.spec, config.workspace.ledger_path,
                                                  config.workspace.submissions_dir))
