"""The features stage's section of the configuration (`[features]`) and its vocabulary.

The names it accepts come from the stage's registries: backbones (features.backbones) and
the vocabulary (features.vocabulary: TTA modes, precisions, engines, clusters), so a new
entry in any of them is accepted here without another edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from base.config import check_keys, choice, name_list, resolve_path, table, where, whole_number
from base.errors import HarnessError
from base.workspace import Workspace
from competition.spec import CompetitionSpec
from features.backbones import BACKBONES, KNOWN_BACKBONES
from features.vocabulary import (
    ENGINE_CHOICES,
    PRECISIONS,
    TTA_MODES,
    check_cluster,
    check_precision,
)

DEFAULT_BACKBONES = ("resnet50", "inception_v3", "xception")

@dataclass(frozen=True)
class FeaturesConfig:
    """How features are extracted.

    `weights` applies to every backbone: "auto" (the demo uses "none", real competitions
    "imagenet"), "imagenet", "none", or a file path; `weights_for` overrides it per
    backbone; `weights_dir` is searched for each backbone's file (see features.weights).
    `batch_size` and `threads` 0 mean "chosen for this machine". `engine` and `cluster`:
    see features.engines and features.ray_engine.
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
    cluster: str = "auto"  # engine "ray": auto | local | HOST:PORT (no Ray Client)


class FeaturesRun(Protocol):
    """What the features stage reads of the whole run's configuration (harness.config.Config
    has it all)."""

    spec: CompetitionSpec
    workspace: Workspace
    data_dir: Path
    features: FeaturesConfig

    def feature_sets(self) -> list[tuple[str, str]]:
        """Every (backbone, tta) pair extraction must produce."""


def parse_features(raw: dict, base: Path, source: Path | None) -> FeaturesConfig:
    """The `[features]` table, every value checked against the stage's registries.

    Relative paths are relative to `base` (the config file's folder).

    Raises:
        HarnessError: an unknown key, backbone, TTA mode, precision, engine or cluster, a
            precision the engine cannot compute (int8 off OpenVINO), or a value of the wrong
            type, naming the file and the key.
    """
    check_keys(raw, {f.name for f in fields(FeaturesConfig)}, "[features]", source)
    weights = raw.get("weights", "auto")
    weights_for: dict[str, str] = {}
    if isinstance(weights, dict):
        weights_for, weights = {k: str(v) for k, v in weights.items()}, "auto"
    weights_for.update({k: str(v) for k, v in
                        table(raw.get("weights_for", {}), "features.weights_for",
                              source).items()})
    backbones = name_list(raw.get("backbones", list(DEFAULT_BACKBONES)), "[features] backbones",
                          source)
    for name, what, known in (
            [(b, "[features] backbones (or --backbones)", KNOWN_BACKBONES) for b in backbones]
            + [(b, "[features] weights_for", BACKBONES) for b in weights_for]):
        if name not in known:
            raise HarnessError(f"{where(source)}: {what}: unknown backbone {name!r}; known: "
                               f"{', '.join(known)}")
    cluster: Any = raw.get("cluster", "auto")
    precision = choice(raw.get("precision", "float32"), PRECISIONS, "[features] precision", source)
    engine = choice(raw.get("engine", "auto"), ENGINE_CHOICES, "[features] engine", source)
    try:
        cluster = check_cluster(cluster)
        check_precision(precision, engine)
        if cluster != "auto" and engine != "ray":  # else it would be silently ignored
            raise HarnessError(f"cluster = {cluster!r} is used only by engine \"ray\" (engine "
                               f"is {engine!r}); set engine = \"ray\" (--engine ray), or remove "
                               "cluster (--cluster auto for one run)")
    except HarnessError as exc:  # its message lacks the file's name: add it
        raise HarnessError(f"{where(source)}: {exc}") from None
    return FeaturesConfig(
        backbones=backbones,
        weights=str(weights),
        weights_for=weights_for,
        weights_dir=resolve_path(raw.get("weights_dir"), base),
        batch_size=whole_number(raw.get("batch_size", 0), "[features] batch_size", source),
        threads=whole_number(raw.get("threads", 0), "[features] threads", source),
        tta=choice(raw.get("tta", "none"), TTA_MODES, "[features] tta", source),
        precision=precision,
        engine=engine,
        cluster=cluster,
    )
