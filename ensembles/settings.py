"""The ensembles stage's sections of the configuration: `[ensembles.*]`, `[blends.*]`,
`[cv]` and `[submission] clip` (the bounds are chosen out of fold, here).

Heads and blend methods, and their parameters, come from the stage's registries
(ensembles.registry.HEADS, ensembles.blend.BLEND_METHODS); `ensembles.run.check_ensembles`
checks the assembled sections against them when the configuration loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from base.config import check_keys, choice, name_list, table, where, whole_number
from base.errors import HarnessError
from base.workspace import Workspace
from competition.spec import CompetitionSpec
from ensembles.blend import BLEND_METHODS
from ensembles.registry import HEADS
from ensembles.run_params import CLIP_FORMS, clip_setting
from features.settings import TTA_MODES, FeaturesConfig

# How test predictions are made: one refit on all training rows, or the folds' mean.
TEST_PREDICTIONS = {"refit": "one more fit on every training row",
                    "fold-mean": "the mean of the fold models' predictions"}


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
    # A labels-CSV column whose rows sharing a value (a driver, a patient) stay in one fold.
    group_column: str = ""


@dataclass(frozen=True)
class SubmissionConfig:
    """`clip`: "auto" (bounds chosen on out-of-fold predictions), "none", or [low, high]."""

    clip: str | tuple[float, float] = "auto"


class EnsemblesRun(Protocol):
    """What the ensembles stage reads of the whole run's configuration (harness.config.Config
    has it all)."""

    spec: CompetitionSpec
    workspace: Workspace
    data_dir: Path
    features: FeaturesConfig
    ensembles: dict[str, EnsembleConfig]
    blends: dict[str, BlendConfig]
    cv: CVConfig
    submission: SubmissionConfig


def parse_ensembles(tables: dict, default_tta: str, source: Path | None
                    ) -> dict[str, EnsembleConfig]:
    """The `[ensembles.NAME]` tables (their head parameters are checked by check_ensembles)."""
    ensembles = {}
    for name, raw in tables.items():
        section = f"[ensembles.{name}]"
        raw = dict(table(raw, f"ensembles.{name}", source))
        # A preset (resolved by the ensembles stage) supplies backbones and head itself.
        if "preset" not in raw:
            for required in ("backbones", "head"):
                if required not in raw:
                    raise HarnessError(f"{where(source)}: {section} needs {required} = ...")
        backbones = raw.pop("backbones", None)
        head = raw.pop("head", None)
        ensembles[name] = EnsembleConfig(
            name=name,
            backbones=() if backbones is None
            else name_list(backbones, f"{section} backbones", source),
            head="" if head is None else choice(head, HEADS, f"{section} head", source),
            # Maps are cached without TTA unless the table asks (flip doubles disk and time).
            tta=choice(raw.pop("tta", "none" if head == "finetune" else default_tta),
                       TTA_MODES, f"{section} tta", source),
            params=raw,
        )
    return ensembles


def parse_blends(tables: dict, source: Path | None) -> dict[str, BlendConfig]:
    """The `[blends.NAME]` tables."""
    blends = {}
    for name, raw in tables.items():
        section = f"[blends.{name}]"
        raw = dict(table(raw, f"blends.{name}", source))
        if "members" not in raw:
            raise HarnessError(f"{where(source)}: {section} needs members = [...]")
        blends[name] = BlendConfig(
            name=name,
            members=name_list(raw.pop("members"), f"{section} members", source),
            method=choice(raw.pop("method", "mean"), BLEND_METHODS, f"{section} method",
                          source),
            params=raw,
        )
    return blends


def _exclude_ids(raw: dict, source: Path | None) -> tuple[str, ...]:
    """[cv] exclude_ids (a list of ids) plus the ids in exclude_ids_file (one per line,
    `#` comments allowed; relative to the config file), sorted and unique."""
    listed = raw.get("exclude_ids", [])
    if not isinstance(listed, list) or not all(isinstance(i, str) for i in listed):
        raise HarnessError(f"{where(source)}: [cv] exclude_ids must be a list of id strings, "
                           f"e.g. [\"cat.123\"], got {listed!r}")
    ids = set(listed)
    if "exclude_ids_file" in raw:
        name = raw["exclude_ids_file"]
        if not isinstance(name, str):
            raise HarnessError(f"{where(source)}: [cv] exclude_ids_file must be a path string")
        path = Path(name)
        if not path.is_absolute() and source is not None:
            path = Path(source).parent / path
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise HarnessError(f"{where(source)}: [cv] exclude_ids_file {path} cannot be "
                               f"read ({exc.strerror}); fix the path or remove the key") from None
        ids |= {line.split("#", 1)[0].strip() for line in lines} - {""}
    return tuple(sorted(ids))


def parse_cv(raw: dict, source: Path | None) -> CVConfig:
    """The `[cv]` table."""
    check_keys(raw, {"folds", "seed", "test_predictions", "exclude_ids", "exclude_ids_file",
                     "group_column"}, "[cv]", source)
    group = raw.get("group_column", "")
    if not isinstance(group, str):
        raise HarnessError(f"{where(source)}: [cv] group_column must be a column name "
                           f"(a string), got {group!r}")
    cv = CVConfig(
        folds=whole_number(raw.get("folds", 5), "[cv] folds", source),
        seed=whole_number(raw.get("seed", 0), "[cv] seed", source),
        test_predictions=choice(raw.get("test_predictions", "refit"), TEST_PREDICTIONS,
                                "[cv] test_predictions", source),
        exclude_ids=_exclude_ids(raw, source),
        group_column=group,
    )
    if cv.folds < 2:
        raise HarnessError(f"{where(source)}: [cv] folds must be at least 2, got {cv.folds}")
    return cv


def parse_submission(raw: dict, source: Path | None) -> SubmissionConfig:
    """The `[submission]` table."""
    check_keys(raw, {"clip"}, "[submission]", source)
    clip = clip_setting(raw.get("clip", "auto"))
    if clip is None:
        raise HarnessError(f"{where(source)}: [submission]: clip = {raw['clip']!r} must be "
                           f"{CLIP_FORMS}")
    return SubmissionConfig(clip=clip)
