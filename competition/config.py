"""The typed configuration, loaded from one TOML file (default `harness.toml`).

Every value has a default; the command line may override the most common ones
(competition, data_dir, workspace, weights_dir, backbones). Unknown keys are errors
with a suggestion, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from base.errors import HarnessError
from base.workspace import Workspace
from competition.spec import CATALOG, CompetitionSpec, get_spec

DEFAULT_CONFIG = Path("harness.toml")
DEFAULT_BACKBONES = ("resnet50", "inception_v3", "xception")
TTA_MODES = ("none", "flip", "crops")
PRECISIONS = ("float32", "mixed", "bfloat16")
# features.engines.ENGINE_CHOICES (competition does not import features; see issue 13).
ENGINES = ("auto", "tensorflow", "openvino", "ray")
HEADS = ("logreg", "dropout")
BLEND_METHODS = ("mean", "weights", "stack")
TEST_PREDICTIONS = ("refit", "fold-mean")


@dataclass(frozen=True)
class FeaturesConfig:
    """How features are extracted.

    `weights` applies to every backbone: "auto" (the demo uses "none", real competitions
    "imagenet"), "imagenet", "none", or a file path; `weights_for` overrides it per
    backbone; `weights_dir` is searched for each backbone's file (see features.weights).
    `batch_size` and `threads` 0 mean "chosen for this machine".
    """

    backbones: tuple[str, ...] = DEFAULT_BACKBONES
    weights: str = "auto"
    weights_for: dict[str, str] = field(default_factory=dict)
    weights_dir: Path | None = None
    batch_size: int = 0
    threads: int = 0
    tta: str = "none"
    precision: str = "float32"
    engine: str = "auto"
    cluster: str = "auto"  # engine "ray": auto | local | ray://HOST:PORT | HOST:PORT


@dataclass(frozen=True)
class EnsembleConfig:
    """One named ensemble: backbones to concatenate, a head and its parameters.

    With `preset` in params, empty backbones / head mean "the preset's".
    """

    name: str
    backbones: tuple[str, ...]
    head: str
    params: dict[str, Any] = field(default_factory=dict)
    tta: str = "none"


@dataclass(frozen=True)
class BlendConfig:
    """A blend of named ensembles' predictions."""

    name: str
    members: tuple[str, ...]
    method: str = "mean"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CVConfig:
    """The one set of stratified folds every ensemble is scored on."""

    folds: int = 5
    seed: int = 0
    test_predictions: str = "refit"
    # Training ids left out of fitting (e.g. mislabelled photos seen on the contact sheet).
    exclude_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubmissionConfig:
    """`clip`: "auto" (bounds chosen on out-of-fold predictions), "none", or [low, high]."""

    clip: str | tuple[float, float] = "auto"


@dataclass(frozen=True)
class Config:
    """The whole run's settings, with paths resolved."""

    spec: CompetitionSpec
    workspace: Workspace
    data_dir: Path
    features: FeaturesConfig
    ensembles: dict[str, EnsembleConfig]
    blends: dict[str, BlendConfig]
    cv: CVConfig
    submission: SubmissionConfig
    source: Path | None = None

    def feature_sets(self) -> list[tuple[str, str]]:
        """Every (backbone, tta) pair that extraction must produce, in a stable order."""
        pairs = [(b, self.features.tta) for b in self.features.backbones]
        for ensemble in self.ensembles.values():
            # Only backbones that are selected: a restricted --backbones skips the rest.
            pairs += [(b, ensemble.tta) for b in ensemble.backbones
                      if b in self.features.backbones]
        return list(dict.fromkeys(pairs))


def _where(source: Path | None) -> str:
    return str(source) if source else "configuration"


def _check_keys(table: dict, allowed: set[str], section: str, source: Path | None) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(allowed))}"
            raise HarnessError(f"{_where(source)}: unknown key {key!r} in {section}{hint}")


def _choice(value: Any, allowed: tuple[str, ...], what: str, source: Path | None) -> str:
    if value not in allowed:
        raise HarnessError(
            f"{_where(source)}: {what} = {value!r} is not one of {', '.join(allowed)}"
        )
    return value


def _int(value: Any, what: str, source: Path | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HarnessError(f"{_where(source)}: {what} must be a whole number, got {value!r}")
    return value


def _table(value: Any, what: str, source: Path | None) -> dict:
    if not isinstance(value, dict):
        raise HarnessError(f"{_where(source)}: {what} must be a table ([{what}]), got {value!r}")
    return value


def _string_list(value: Any, what: str, source: Path | None) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise HarnessError(f"{_where(source)}: {what} must be a non-empty list of names")
    return tuple(dict.fromkeys(value))


def _path(value: str | None, base: Path) -> Path | None:
    if value in (None, ""):
        return None
    path = Path(value).expanduser()
    # normpath, not resolve(): folds "a/../b" for readable messages, keeps symlinks as given.
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def _spec_from(value: Any, source: Path | None) -> CompetitionSpec:
    if isinstance(value, str):
        return get_spec(value)
    if not isinstance(value, dict) or "name" not in value:
        raise HarnessError(
            f"{_where(source)}: competition must be a name ({', '.join(sorted(CATALOG))}) "
            "or a [competition] table with a name"
        )
    table = dict(value)
    name = table.pop("name")
    base = table.pop("base", name if name in CATALOG else "generic-folders")
    if name not in CATALOG:
        # A new slug is a Kaggle competition unless the table says otherwise, even when
        # its layout comes from a local-only generic base.
        table.setdefault("downloadable", True)
    fields = {f.name for f in dataclasses.fields(CompetitionSpec)} - {"slug"}
    _check_keys(table, fields, "[competition]", source)
    if "classes" in table:
        table["classes"] = tuple(table["classes"])
    return dataclasses.replace(get_spec(base), slug=name, **table)


def _features_from(table: dict, base: Path, source: Path | None) -> FeaturesConfig:
    allowed = {f.name for f in dataclasses.fields(FeaturesConfig)}
    _check_keys(table, allowed, "[features]", source)
    weights = table.get("weights", "auto")
    weights_for: dict[str, str] = {}
    if isinstance(weights, dict):
        weights_for, weights = {k: str(v) for k, v in weights.items()}, "auto"
    weights_for.update({k: str(v) for k, v in
                        _table(table.get("weights_for", {}), "features.weights_for",
                               source).items()})
    return FeaturesConfig(
        backbones=_string_list(table.get("backbones", list(DEFAULT_BACKBONES)),
                               "[features] backbones", source),
        weights=str(weights),
        weights_for=weights_for,
        weights_dir=_path(table.get("weights_dir"), base),
        batch_size=_int(table.get("batch_size", 0), "[features] batch_size", source),
        threads=_int(table.get("threads", 0), "[features] threads", source),
        tta=_choice(table.get("tta", "none"), TTA_MODES, "[features] tta", source),
        precision=_choice(table.get("precision", "float32"), PRECISIONS,
                          "[features] precision", source),
        engine=_choice(table.get("engine", "auto"), ENGINES, "[features] engine", source),
        cluster=_cluster(table.get("cluster", "auto"), source),
    )


def _cluster(value: Any, source: Path | None) -> str:
    # The same rule as features.ray_engine.check_cluster (competition does not import
    # features): a typo fails at load time, not after the images are listed.
    text = value.strip() if isinstance(value, str) else ""
    host, _, port = text.removeprefix("ray://").rpartition(":")
    if text in ("auto", "local") or (host and port.isdigit()):
        return text
    raise HarnessError(f"{_where(source)}: [features] cluster = {value!r} is not \"auto\", "
                       "\"local\", \"ray://HOST:PORT\" or \"HOST:PORT\" (a `ray start --head`)")


def _ensembles_from(tables: dict, default_tta: str, source: Path | None) -> dict:
    ensembles = {}
    for name, table in tables.items():
        section = f"[ensembles.{name}]"
        table = dict(_table(table, f"ensembles.{name}", source))
        # A preset (resolved by the ensembles stage) supplies backbones and head itself.
        if "preset" not in table:
            for required in ("backbones", "head"):
                if required not in table:
                    raise HarnessError(f"{_where(source)}: {section} needs {required} = ...")
        backbones = table.pop("backbones", None)
        head = table.pop("head", None)
        ensembles[name] = EnsembleConfig(
            name=name,
            backbones=() if backbones is None
            else _string_list(backbones, f"{section} backbones", source),
            head="" if head is None else _choice(head, HEADS, f"{section} head", source),
            tta=_choice(table.pop("tta", default_tta), TTA_MODES, f"{section} tta", source),
            params=table,
        )
    return ensembles


def _blends_from(tables: dict, source: Path | None) -> dict:
    blends = {}
    for name, table in tables.items():
        section = f"[blends.{name}]"
        table = dict(_table(table, f"blends.{name}", source))
        if "members" not in table:
            raise HarnessError(f"{_where(source)}: {section} needs members = [...]")
        blends[name] = BlendConfig(
            name=name,
            members=_string_list(table.pop("members"), f"{section} members", source),
            method=_choice(table.pop("method", "mean"), BLEND_METHODS, f"{section} method",
                           source),
            params=table,
        )
    return blends


def parse_clip(value: Any, where: str) -> str | tuple[float, float]:
    """A clip setting: "auto", "none" or (low, high) with 0 <= low < high <= 1.

    Shared by [submission] clip and an ensemble's own `clip` parameter.

    Raises:
        HarnessError: naming `where` and the accepted forms.
    """
    if value in ("auto", "none"):
        return value
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            and 0 <= value[0] < value[1] <= 1):
        return (float(value[0]), float(value[1]))
    raise HarnessError(
        f"{where}: clip = {value!r} must be \"auto\", \"none\" or [low, high] "
        "with 0 <= low < high <= 1"
    )


def _exclude_ids(cv_table: dict, source: Path | None) -> tuple[str, ...]:
    """[cv] exclude_ids (a list of ids) plus the ids in exclude_ids_file (one per line,
    `#` comments allowed; relative to the config file), sorted and unique."""
    listed = cv_table.get("exclude_ids", [])
    if not isinstance(listed, list) or not all(isinstance(i, str) for i in listed):
        raise HarnessError(f"{_where(source)}: [cv] exclude_ids must be a list of id strings, "
                           f"e.g. [\"cat.123\"], got {listed!r}")
    ids = set(listed)
    if "exclude_ids_file" in cv_table:
        name = cv_table["exclude_ids_file"]
        if not isinstance(name, str):
            raise HarnessError(f"{_where(source)}: [cv] exclude_ids_file must be a path string")
        path = Path(name)
        if not path.is_absolute() and source is not None:
            path = Path(source).parent / path
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise HarnessError(f"{_where(source)}: [cv] exclude_ids_file {path} cannot be "
                               f"read ({exc.strerror}); fix the path or remove the key") from None
        ids |= {line.split("#", 1)[0].strip() for line in lines} - {""}
    return tuple(sorted(ids))


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read the TOML file at `path` (default `harness.toml` if it exists) and apply overrides.

    Args:
        path: The config file; None means `harness.toml` in the current folder, or
            built-in defaults when there is none.
        overrides: Command-line values that win over the file: competition, data_dir,
            workspace, weights_dir, weights, backbones, tta, precision, batch_size,
            threads (None values are ignored). Relative
            paths here are relative to the current folder. A `weights` override replaces
            the file's weights_dir and weights_for too (the command line wins); together
            with a `weights_dir` override it is refused.

    Raises:
        HarnessError: missing file, TOML syntax error, unknown key or bad value.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v not in (None, "")}
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    raw: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise HarnessError(f"config file {path} does not exist; pass --config PATH")
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise HarnessError(f"{path}: not valid TOML: {exc}") from None
    source = Path(path) if path else None
    base = source.resolve().parent if source else Path.cwd()
    top = {"competition", "workspace", "data_dir", "features", "ensembles", "blends", "cv",
           "submission"}
    _check_keys(raw, top, "the top level", source)

    spec = _spec_from(overrides.get("competition", raw.get("competition", "demo")), source)
    cwd = Path.cwd()
    workspace_root = (_path(overrides.get("workspace"), cwd)
                      or _path(raw.get("workspace"), base)
                      or base / "work" / spec.slug)
    # A data_dir in the file belongs to the file's competition: a command-line competition
    # without a data_dir uses its own workspace's data folder instead.
    file_data_dir = None if "competition" in overrides else _path(raw.get("data_dir"), base)
    data_dir = _path(overrides.get("data_dir"), cwd) or file_data_dir or workspace_root / "data"

    features_table = dict(_table(raw.get("features", {}), "features", source))
    if "weights" in overrides:
        # --weights is for every backbone: it beats the file's weights_dir and weights_for,
        # which would otherwise be looked up first and silently win.
        if "weights_dir" in overrides:
            raise HarnessError(
                f"--weights {overrides['weights']} and --weights-dir {overrides['weights_dir']} "
                "both choose the weights; give one of them"
            )
        features_table.pop("weights_dir", None)
        features_table.pop("weights_for", None)
    for key in ("weights_dir", "backbones", "weights", "tta", "precision", "batch_size",
                "threads", "engine", "cluster"):
        if key in overrides:
            value = overrides[key]
            features_table[key] = str(Path(value).resolve()) if key == "weights_dir" else value
    features = _features_from(features_table, base, source)

    ensembles = _ensembles_from(_table(raw.get("ensembles", {}), "ensembles", source),
                                features.tta, source)
    blends = _blends_from(_table(raw.get("blends", {}), "blends", source), source)
    clash = sorted(set(ensembles) & set(blends))
    if clash:
        raise HarnessError(f"{_where(source)}: {clash[0]!r} names both an ensemble and a blend; "
                           "rename one (their predictions are saved under the name)")
    cv_table = _table(raw.get("cv", {}), "cv", source)
    _check_keys(cv_table, {"folds", "seed", "test_predictions", "exclude_ids",
                           "exclude_ids_file"}, "[cv]", source)
    cv = CVConfig(
        folds=_int(cv_table.get("folds", 5), "[cv] folds", source),
        seed=_int(cv_table.get("seed", 0), "[cv] seed", source),
        test_predictions=_choice(cv_table.get("test_predictions", "refit"), TEST_PREDICTIONS,
                                 "[cv] test_predictions", source),
        exclude_ids=_exclude_ids(cv_table, source),
    )
    if cv.folds < 2:
        raise HarnessError(f"{_where(source)}: [cv] folds must be at least 2, got {cv.folds}")
    submission_table = _table(raw.get("submission", {}), "submission", source)
    _check_keys(submission_table, {"clip"}, "[submission]", source)
    submission = SubmissionConfig(clip=parse_clip(submission_table.get("clip", "auto"),
                                                  f"{_where(source)}: [submission]"))
    return Config(
        spec=spec,
        workspace=Workspace(workspace_root),
        data_dir=data_dir,
        features=features,
        ensembles=ensembles,
        blends=blends,
        cv=cv,
        submission=submission,
        source=source,
    )
