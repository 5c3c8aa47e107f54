"""`harness`: the command line over every stage (the only code that sees them all).

    harness [options] competitions | backbones | demo-data | download | features |
                      ensembles | submit | upload | leaderboard

The CLI only parses arguments, calls `harness.pipeline` and prints. Every verb but the
listings (`competitions`, `backbones`, which need no config) reads the same configuration
(`--config`, default `harness.toml`) with the same overrides, checked as it loads. A
`HarnessError` becomes a one-line message and exit status 2; a traceback is shown only
with `--verbose`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from base.errors import HarnessError
from base.logs import configure_logging
from features.engines import ENGINE_CHOICES
from features.settings import PRECISIONS, TTA_MODES
from harness import pipeline
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


def _duration(text: str) -> float:
    from features.budget import parse_duration

    try:
        return parse_duration(text)
    except HarnessError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_TIME_LIMIT_HELP = ("e.g. 9h (a Kaggle notebook's limit): after the first batches, stop "
                    "the extraction if it would take longer, naming the backbones to drop")


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
_CLUSTER_HELP = ("with --engine ray: auto (a running cluster, else a local Ray), local or "
                 "HOST:PORT (the head of a cluster this machine is part of)")


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
    init = verb("init", "propose a [competition] table from a downloaded data folder")
    init.add_argument("data", type=Path, metavar="DATA_DIR",
                      help="the competition's unpacked files")
    init.add_argument("--name", default="", help="the Kaggle slug (default: the folder's name)")
    init.add_argument("--output", type=Path,
                      help="the config to write (default: NAME.toml here)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    verb("backbones", "list the available backbones")
    wheels = verb("wheelhouse", "build a folder of wheels to install the harness offline "
                                "(a Kaggle dataset)")
    wheels.add_argument("dest", type=Path, metavar="DIR", help="the folder to write")
    wheels.add_argument("--no-download", action="store_true",
                        help="only the harness's own wheel (no network)")
    verb("demo-data", "generate the offline demo competition's images")
    download = verb("download", "download and unpack the competition's files with the kaggle client")
    download.add_argument("--force", action="store_true", help="download again")

    features = verb("features", "extract and cache GAP features (or a _maps entry's maps) "
                                   "for every backbone")
    features.add_argument("--force", action="store_true", help="rebuild even if cached")
    features.add_argument("--time-limit", type=_duration, metavar="DURATION",
                          help=_TIME_LIMIT_HELP)
    features.add_argument("--shard", type=_shard,
                          help="extract only shard i of n (1/4 ... 4/4), then --merge n")
    features.add_argument("--merge", type=int, metavar="N",
                          help="assemble N finished shards into the feature files")
    features.add_argument("--batch-size", type=int, default=0, help="images per batch (0: auto)")
    features.add_argument("--threads", type=int, default=0, help="compute threads (0: auto)")
    features.add_argument("--precision", choices=PRECISIONS,
                          help="mixed: float16 compute on GPUs (float32 on a CPU); bfloat16: "
                               "1.7-2x faster on CPUs with AVX512_BF16; int8 (--engine "
                               "openvino): NNCF-quantised, 2.6x faster with VNNI (bench/README.md); "
                               "features change slightly")
    features.add_argument("--tta", choices=TTA_MODES,
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
    submit.add_argument("--time-limit", type=_duration, metavar="DURATION",
                        help=_TIME_LIMIT_HELP)
    submit.add_argument("--kaggle-notebook", action="store_true",
                        help="Kaggle notebook defaults: data from /kaggle/input/COMPETITION "
                             "(read only), workspace /kaggle/working/harness, the pick "
                             "copied to /kaggle/working/submission.csv")

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
        "ensemble": getattr(args, "ensemble", None) if getattr(args, "file", None) is None
        else None,
        # Only `harness features` has these; elsewhere the config's values stand.
        "tta": getattr(args, "tta", None),
        "precision": getattr(args, "precision", None),
        "engine": getattr(args, "engine", None),
        "cluster": getattr(args, "cluster", None),
        "batch_size": getattr(args, "batch_size", None) or None,
        "threads": getattr(args, "threads", None) or None,
    }
    return load_config(args.config, overrides)


# --- verbs: parse, call harness.pipeline, print ---------------------------------------------

def cmd_wheelhouse(args: argparse.Namespace) -> None:
    from harness.wheelhouse import build_wheelhouse

    wheels = build_wheelhouse(args.dest, download=not args.no_download)
    print(f"wrote {len(wheels)} wheels and ASSUMED.txt to {args.dest}; upload it as a Kaggle "
          "dataset, then in the notebook: !pip install --no-index --find-links "
          "/kaggle/input/DATASET kaggle-image-harness")


def cmd_competitions(args: argparse.Namespace) -> None:
    from competition.spec import CATALOG

    width = max(len(slug) for slug in CATALOG)
    for slug, spec in sorted(CATALOG.items()):
        print(f"{slug:{width}s}  {spec.task:10s}  {spec.metric:15s}  {spec.description}")


def cmd_init(args: argparse.Namespace) -> None:
    import os

    from competition.infer import propose, to_toml
    from competition.spec import CATALOG

    proposal = propose(args.data, args.name)
    output = args.output or Path(f"{proposal.name}.toml")
    if output.exists() and not args.force:
        raise HarnessError(f"{output} exists; pass --force to overwrite it, or --output "
                           "another file")
    if proposal.same_as != proposal.name:
        _ask_kaggle_for_metric(proposal)
    data_dir = Path(os.path.relpath(args.data.resolve(), output.resolve().parent))
    output.write_text(to_toml(proposal, data_dir.as_posix()))
    spec = proposal.spec()
    print(f"wrote {output}: {spec.task}, {spec.train_layout} layout (train: {spec.train_dir}, "
          f"test: {spec.test_dir}), submission {spec.submission_shape}, metric {spec.metric}")
    for note in proposal.notes:
        print(f"  check {note}")
    if proposal.name not in CATALOG:
        print("  check name: the Kaggle slug (the competition's URL), for download/upload")
    print(f"next: harness submit --config {output}")


def _ask_kaggle_for_metric(proposal) -> None:
    """The metric from the competition's Kaggle record, when credentials allow asking;
    otherwise (or when Kaggle cannot answer) the guess stays, with a note saying why."""
    from base.kaggle_client import has_credentials
    from competition.infer import adopt_kaggle_metric
    from competition.record import kaggle_evaluation_metric

    def say_why(reason: str) -> None:
        proposal.notes = [f"{n} ({reason})" if n.startswith("metric:") else n
                          for n in proposal.notes]

    if not has_credentials():
        say_why("no Kaggle credentials, so its record was not read")
        return
    try:
        kaggle_name = kaggle_evaluation_metric(proposal.name)
    except HarnessError as exc:
        say_why(f"its Kaggle record could not be read: {exc}")
        return
    if kaggle_name:
        adopt_kaggle_metric(proposal, kaggle_name)
    else:
        say_why("its Kaggle record names no metric")


def cmd_backbones(args: argparse.Namespace) -> None:
    from features.backbones import KNOWN_BACKBONES

    for name, spec in KNOWN_BACKBONES.items():
        what = (f"{'x'.join(map(str, spec.map_shape))} maps at the "
                f"{'input' if spec.cut_input else 'output'} of {spec.cut} (finetune head)"
                if spec.maps_of else "GAP features")
        print(f"{name:18s} {spec.input_size:4d} px  {spec.feature_dim:6d} {what}")


def cmd_demo_data(args: argparse.Namespace) -> None:
    from competition.demo import generate_demo

    print(generate_demo(_load(args).data_dir))


def cmd_download(args: argparse.Namespace) -> None:
    from competition.download import download_competition

    config = _load(args)
    files = download_competition(config.spec, config.data_dir, force=args.force)
    print(f"{len(files)} file(s) in {config.data_dir}")


def cmd_features(args: argparse.Namespace) -> None:
    outcome = pipeline.extract(_load(args), force=args.force, shard=args.shard,
                               merge=args.merge, progress=not args.quiet,
                               time_limit=args.time_limit)
    if args.merge:
        for path in outcome:
            print(path)


def _print_table(results: list) -> None:
    from ensembles.report import format_table, report_table

    print(format_table(report_table(results)))


def cmd_ensembles(args: argparse.Namespace) -> None:
    _print_table(pipeline.fit_ensembles(_load(args), names=args.only, force=args.force,
                                        progress=not args.quiet))


def cmd_submit(args: argparse.Namespace) -> None:
    from harness.api import copy_submission, notebook_paths

    copy_to = None
    if args.kaggle_notebook:
        config = _load(args)  # the competition, from the command line or the config
        args.data_dir, args.workspace, copy_to = notebook_paths(
            config.spec.slug, args.data_dir, args.workspace, None)
    done = pipeline.submit(_load(args), ensemble=args.ensemble, progress=not args.quiet,
                           on_results=_print_table, time_limit=args.time_limit)
    for path in done.paths:
        print(f"validated: {path}")
    chosen = copy_submission(done.paths[0], copy_to) if copy_to else done.paths[0]
    print(f"submission: {done.pick.name} -> {chosen} ({done.why})")
    print("stage times: " + "  ".join(f"{name} {seconds:.1f}s"
                                      for name, seconds in done.seconds.items()))


def cmd_upload(args: argparse.Namespace) -> None:
    path, row = pipeline.upload(_load(args), file=args.file, ensemble=args.ensemble,
                                cv=args.cv, force=args.force)
    score = "" if row.public_score is None else f", public score {row.public_score}"
    print(f"uploaded {path.name} as {row.description!r}: {row.status}, ref {row.kaggle_ref}{score}")


def cmd_leaderboard(args: argparse.Namespace) -> None:
    print(pipeline.leaderboard(_load(args)))


COMMANDS = {
    "competitions": cmd_competitions,
    "wheelhouse": cmd_wheelhouse,
    "backbones": cmd_backbones,
    "demo-data": cmd_demo_data,
    "download": cmd_download,
    "features": cmd_features,
    "ensembles": cmd_ensembles,
    "submit": cmd_submit,
    "init": cmd_init,
    "upload": cmd_upload,
    "leaderboard": cmd_leaderboard,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `harness` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        COMMANDS[args.verb](args)
    except HarnessError as exc:
        if logging.getLogger().isEnabledFor(logging.DEBUG):  # --verbose or HARNESS_LOG=debug
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
