"""`harness`: the command line over every stage (the only code that sees them all).

    harness [options] competitions | backbones | demo-data | download | features |
                      ensembles | submit | upload | leaderboard

Every verb reads the same configuration (`--config`, default `harness.toml`) and takes
the same overrides. A `HarnessError` becomes a one-line message and exit status 2; a
traceback is shown only with `--verbose`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from base.errors import HarnessError
from base.logs import configure_logging
from features.engines import ENGINE_CHOICES
from features.settings import PRECISIONS
from harness.config import Config, load_config

logger = logging.getLogger("harness")


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard wants i/n such as 1/4, got {text!r}") from None
    if not 1 <= index <= count:
        raise argparse.ArgumentTypeError(f"--shard {text}: need 1 <= i <= n")
    return index, count


def _common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options accepted before and after the verb (`harness -v submit` = `harness submit -v`)."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--config", type=Path, default=default,
                        help="TOML configuration (default: harness.toml if present)")
    parser.add_argument("--competition", default=default,
                        help="competition name from `harness competitions`")
    parser.add_argument("--data-dir", default=default,
                        help="folder with the competition's files in Kaggle's layout")
    parser.add_argument("--workspace", default=default,
                        help="where artifacts go (default: work/<competition>)")
    parser.add_argument("--weights-dir", default=default,
                        help="folder with local weight files, one per backbone")
    parser.add_argument("--weights", default=default,
                        help="imagenet | none | auto | a weights file, for every backbone")
    parser.add_argument("--backbones", default=default,
                        help="comma-separated backbones to use (default: from the config)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        default=argparse.SUPPRESS if suppress else False,
                        help="debug logging and tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true",
                        default=argparse.SUPPRESS if suppress else False,
                        help="warnings and errors only, no progress bars")


_ENGINE_HELP = ("inference engine of the feature extraction: auto (OpenVINO on a CPU, "
                "TensorFlow on a GPU), tensorflow, openvino, ray")
_CLUSTER_HELP = ("with --engine ray: auto (a running cluster, else a local Ray), local, "
                 "ray://HOST:PORT (Ray Client) or HOST:PORT (a `ray start --head`)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per stage."""
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Pretrained-CNN features, ensembles and Kaggle submissions.",
    )
    _common_options(parser, suppress=False)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        _common_options(sub, suppress=True)
        return sub

    verb("competitions", "list the built-in competitions")
    verb("backbones", "list the available backbones")
    verb("demo-data", "generate the offline demo competition's images")
    download = verb("download", "download and unpack the competition's files with the kaggle client")
    download.add_argument("--force", action="store_true", help="download again")

    features = verb("features", "extract and cache GAP features for every backbone")
    features.add_argument("--force", action="store_true", help="rebuild even if cached")
    features.add_argument("--shard", type=_shard,
                          help="extract only shard i of n (1/4 ... 4/4), then --merge n")
    features.add_argument("--merge", type=int, metavar="N",
                          help="assemble N finished shards into the feature files")
    features.add_argument("--batch-size", type=int, default=0, help="images per batch (0: auto)")
    features.add_argument("--threads", type=int, default=0, help="compute threads (0: auto)")
    features.add_argument("--precision", choices=PRECISIONS,
                          help="mixed: float16 compute on GPUs (float32 on a CPU); bfloat16: "
                               "1.7-2x faster on CPUs with AVX512_BF16; features change slightly")
    features.add_argument("--tta", choices=("none", "flip", "crops"),
                          help="test-time augmentation of the default feature set")
    features.add_argument("--engine", choices=ENGINE_CHOICES, help=_ENGINE_HELP)
    features.add_argument("--cluster", help=_CLUSTER_HELP)

    ensembles = verb("ensembles", "cross-validate every ensemble and blend, print the table")
    ensembles.add_argument("--only", nargs="+", metavar="NAME", help="run only these")
    ensembles.add_argument("--force", action="store_true", help="refit even if unchanged")

    submit = verb("submit", "features -> ensembles -> validated submission CSVs")
    submit.add_argument("--ensemble", help="write only this ensemble's CSV")
    submit.add_argument("--engine", choices=ENGINE_CHOICES, help=_ENGINE_HELP)
    submit.add_argument("--cluster", help=_CLUSTER_HELP)

    upload = verb("upload", "upload a validated CSV with the kaggle client and verify it")
    upload.add_argument("--ensemble", help="which ensemble (default: best CV score)")
    upload.add_argument("--file", type=Path, help="upload this CSV instead of an ensemble's")
    upload.add_argument("--cv", type=float, help="CV score to record with --file (only)")
    upload.add_argument("--force", action="store_true", help="upload even an already-uploaded file")

    verb("leaderboard", "fetch your scores and compare them with CV scores")
    return parser


def _load(args: argparse.Namespace) -> Config:
    overrides = {
        "competition": args.competition,
        "data_dir": args.data_dir,
        "workspace": args.workspace,
        "weights_dir": args.weights_dir,
        "weights": args.weights,
        "backbones": args.backbones,
        # Only `harness features` has these; elsewhere the config's values stand.
        "tta": getattr(args, "tta", None),
        "precision": getattr(args, "precision", None),
        "engine": getattr(args, "engine", None),
        "cluster": getattr(args, "cluster", None),
        "batch_size": getattr(args, "batch_size", None) or None,
        "threads": getattr(args, "threads", None) or None,
    }
    return load_config(args.config, overrides)


class _Timer:
    """Wall-clock seconds per stage, printed at the end of `submit`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, func, *args, **kwargs):
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            self.seconds[name] = time.perf_counter() - start

    def summary(self) -> str:
        return "  ".join(f"{name} {seconds:.1f}s" for name, seconds in self.seconds.items())


def _import_tensorflow(args: argparse.Namespace) -> None:
    """Import TensorFlow quietly (see features.runtime.import_tensorflow_quietly).
    Called after the cheap input checks, so that bad input fails fast."""
    from features.runtime import import_tensorflow_quietly

    import_tensorflow_quietly(verbose=args.verbose)


# --- verbs -----------------------------------------------------------------------------

def cmd_competitions(config: Config, args: argparse.Namespace) -> None:
    from competition.spec import CATALOG

    for slug, spec in sorted(CATALOG.items()):
        print(f"{slug:38s} {spec.task:10s} {spec.metric:9s} {spec.description}")


def cmd_backbones(config: Config, args: argparse.Namespace) -> None:
    from features.backbones import BACKBONES

    for name, spec in BACKBONES.items():
        print(f"{name:14s} {spec.input_size:4d} px  {spec.feature_dim:5d} features")


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


def cmd_demo_data(config: Config, args: argparse.Namespace) -> None:
    from competition.demo import generate_demo

    print(generate_demo(config.data_dir))


def cmd_download(config: Config, args: argparse.Namespace) -> None:
    from competition.download import download_competition

    files = download_competition(config.spec, config.data_dir, force=args.force)
    print(f"{len(files)} file(s) in {config.data_dir}")


def run_features(config: Config, args: argparse.Namespace) -> object:
    """Extract (or reuse) every feature set the configuration needs, after checking every
    ensemble and blend (and `--ensemble NAME`), so a typo fails before hours of work."""
    from competition.images import check_sample_submission, list_test_images
    from ensembles.run import check_ensembles

    wanted = getattr(args, "ensemble", None)
    check_ensembles(config, [wanted] if wanted else None)

    ensure_data(config)
    check_sample_submission(config.spec, config.data_dir,
                            list_test_images(config.spec, config.data_dir))
    from features.backbones import get_backbone
    from features.weights import resolve_weights

    # Unknown backbones and missing weight files fail here, before TensorFlow's seconds
    # of start-up.
    for backbone, _ in config.feature_sets():
        get_backbone(backbone)
        resolve_weights(backbone, config.features, config.spec)
    # TensorFlow is imported by the extraction itself, and only when something is left to
    # compute: reusing cached files takes well under a second.
    from features.extract import extract_for_config, merge_shards

    merge = getattr(args, "merge", None)
    if merge:
        for backbone, tta in config.feature_sets():
            print(merge_shards(config.workspace.features_dir, backbone, tta, merge))
        return None
    return extract_for_config(config, force=getattr(args, "force", False),
                              shard=getattr(args, "shard", None),
                              progress=not args.quiet)


def cmd_features(config: Config, args: argparse.Namespace) -> None:
    run_features(config, args)


def run_ensembles(config: Config, args: argparse.Namespace) -> list:
    """Cross-validate the ensembles and blends, print and save the comparison table."""
    _import_tensorflow(args)
    from ensembles.report import format_table, report_table
    from ensembles.run import run_ensembles as run

    results = run(config, names=getattr(args, "only", None),
                  force=getattr(args, "force", False), progress=not args.quiet)
    print(format_table(report_table(results)))
    return results


def cmd_ensembles(config: Config, args: argparse.Namespace) -> None:
    run_ensembles(config, args)


def write_submission_for(config: Config, result) -> Path:
    """Write and validate the CSV of one ensemble result; returns its path."""
    from submissions.writer import submission_path, write_submission

    path = submission_path(config.workspace.submissions_dir, config.spec, result.name)
    return write_submission(path, config.spec, config.data_dir, result.test_ids,
                            result.test_proba, result.classes, result.clip)


def _pick(results: list, name: str | None) -> list:
    """`results` (best first), or only the one called `name`."""
    chosen = [r for r in results if name in (None, r.name)]
    if name and not chosen:
        known = ", ".join(r.name for r in results) or "none"
        raise HarnessError(f"unknown ensemble {name!r}; known: {known}")
    return chosen


def cmd_submit(config: Config, args: argparse.Namespace) -> None:
    timer = _Timer()
    timer.run("features", run_features, config, args)
    results = timer.run("ensembles", run_ensembles, config, args)
    from ensembles.select import choose_submission

    chosen = _pick(results, args.ensemble)  # best CV score first, as run_ensembles returns
    if args.ensemble:
        pick, why = chosen[0], "named with --ensemble"
    else:
        pick, why = choose_submission(results)
        chosen = [pick] + [r for r in chosen if r is not pick]
    paths = timer.run("submissions", lambda: [write_submission_for(config, r) for r in chosen])
    for path in paths:
        print(f"validated: {path}")
    print(f"submission: {pick.name} -> {paths[0]} ({why})")
    print(f"stage times: {timer.summary()}")


def _chosen_upload(config: Config, args: argparse.Namespace) -> tuple[Path, str, float | None]:
    """The CSV to upload, its ensemble name and CV score: --file, --ensemble, or the best."""
    if args.file:
        return args.file, args.ensemble or args.file.stem, args.cv
    if args.cv is not None:
        raise HarnessError("--cv goes with --file; an ensemble's CSV carries its own CV score")
    from ensembles.results import load_result, result_path
    from ensembles.run import configured_ensembles

    names = list(configured_ensembles(config)) + list(config.blends)
    results = [load_result(config.workspace.ensembles_dir, name) for name in names
               if result_path(config.workspace.ensembles_dir, name).is_file()]
    if not results:
        raise HarnessError("no ensemble results yet; run `harness submit` (make submit) first")
    from ensembles.select import choose_submission

    chosen = _pick(results, args.ensemble)[0] if args.ensemble else \
        choose_submission(results)[0]  # the same rule as `harness submit`
    # Written again from the saved predictions, so the file always matches the CV score
    # in its message (a CSV left from an earlier fit would not).
    return write_submission_for(config, chosen), chosen.name, chosen.cv_score


def cmd_upload(config: Config, args: argparse.Namespace) -> None:
    from submissions.upload import upload_submission

    path, ensemble, cv_score = _chosen_upload(config, args)
    row = upload_submission(config.spec, path, ensemble=ensemble, cv_score=cv_score,
                            data_dir=config.data_dir, ledger_path=config.workspace.ledger_path,
                            force=args.force)
    score = "" if row.public_score is None else f", public score {row.public_score}"
    print(f"uploaded {path.name} as {row.description!r}: {row.status}, ref {row.kaggle_ref}{score}")


def cmd_leaderboard(config: Config, args: argparse.Namespace) -> None:
    from submissions.leaderboard import format_leaderboard, refresh_leaderboard

    report = refresh_leaderboard(config.spec, config.workspace.ledger_path,
                                 config.workspace.submissions_dir)
    print(format_leaderboard(report))


COMMANDS = {
    "competitions": cmd_competitions,
    "backbones": cmd_backbones,
    "demo-data": cmd_demo_data,
    "download": cmd_download,
    "features": cmd_features,
    "ensembles": cmd_ensembles,
    "submit": cmd_submit,
    "upload": cmd_upload,
    "leaderboard": cmd_leaderboard,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `harness` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        COMMANDS[args.verb](_load(args), args)
    except HarnessError as exc:
        if args.verbose:
            logger.exception("error")
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; rerun the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
