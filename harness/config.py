"""The whole run's configuration: one TOML file (default `harness.toml`) plus the command line.

Every value has a default. Each stage parses and checks its own sections against its own
registries (competition.spec, features.settings, ensembles.settings); this module reads the
file, applies the command-line overrides and assembles the sections, then runs the
ensembles stage's check of every ensemble and blend (heads, parameters, members, presets,
backbones). So every value, and `--ensemble NAME`, is checked here, before any extraction;
unknown keys are errors with a suggestion, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.config import check_keys, read_toml, resolve_path, table, where
from base.errors import HarnessError
from base.workspace import Workspace
from competition.spec import CompetitionSpec, spec_from_config
from ensembles.run import check_ensembles, configured_ensembles
from ensembles.settings import (
    BlendConfig,
    CVConfig,
    EnsembleConfig,
    SubmissionConfig,
    parse_blends,
    parse_cv,
    parse_ensembles,
    parse_submission,
)
from features.backbones import get_backbone
from features.settings import FeaturesConfig, parse_features

DEFAULT_CONFIG = Path("harness.toml")
TOP_LEVEL = {"competition", "workspace", "data_dir", "features", "ensembles", "blends", "cv",
             "submission"}
# Command-line values that replace a [features] key.
FEATURE_OVERRIDES = ("weights_dir", "backbones", "weights", "tta", "precision", "batch_size",
                     "threads", "engine", "cluster")


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
        # A `_maps` entry's maps are cached without TTA (the finetune head's default; an
        # ensemble's tta = "flip" adds the mirror images' file below).
        pairs = [(b, "none" if get_backbone(b).maps_of else self.features.tta)
                 for b in self.features.backbones]
        for ensemble in configured_ensembles(self).values():  # presets resolved, tta too
            # Only backbones that are selected: a restricted --backbones skips the rest.
            pairs += [(b, ensemble.tta) for b in ensemble.backbones
                      if b in self.features.backbones]
        return list(dict.fromkeys(pairs))


def _features_table(raw: dict, overrides: dict[str, Any], source: Path | None) -> dict:
    features = dict(table(raw.get("features", {}), "features", source))
    if "weights" in overrides:
        # --weights is for every backbone: it beats the file's weights_dir and weights_for,
        # which would otherwise be looked up first and silently win.
        if "weights_dir" in overrides:
            raise HarnessError(
                f"--weights {overrides['weights']} and --weights-dir {overrides['weights_dir']} "
                "both choose the weights; give one of them"
            )
        features.pop("weights_dir", None)
        features.pop("weights_for", None)
    for key in FEATURE_OVERRIDES:
        if key in overrides:
            value = overrides[key]
            features[key] = str(Path(value).resolve()) if key == "weights_dir" else value
    return features


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read the TOML file at `path` (default `harness.toml` if it exists), apply overrides
    and check everything.

    Args:
        path: The config file; None means `harness.toml` in the current folder, or
            built-in defaults when there is none.
        overrides: Command-line values that win over the file: competition, data_dir,
            workspace, and the FEATURE_OVERRIDES keys (None values are ignored); `ensemble`
            (`--ensemble NAME`) must name a configured ensemble or blend. Relative paths here
            are relative to the current folder. A `weights` override replaces the file's
            weights_dir and weights_for too (the command line wins); together with a
            `weights_dir` override it is refused.

    Raises:
        HarnessError: missing file, TOML syntax error, unknown key or name, or a bad value.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v not in (None, "")}
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    raw: dict[str, Any] = read_toml(path) if path is not None else {}
    source = Path(path) if path else None
    base = source.resolve().parent if source else Path.cwd()
    check_keys(raw, TOP_LEVEL, "the top level", source)

    spec = spec_from_config(overrides.get("competition", raw.get("competition", "demo")), source)
    cwd = Path.cwd()
    workspace_root = (resolve_path(overrides.get("workspace"), cwd)
                      or resolve_path(raw.get("workspace"), base)
                      or base / "work" / spec.slug)
    # A data_dir in the file belongs to the file's competition: a command-line competition
    # without a data_dir uses its own workspace's data folder instead.
    file_data_dir = None if "competition" in overrides else resolve_path(raw.get("data_dir"),
                                                                         base)
    data_dir = (resolve_path(overrides.get("data_dir"), cwd) or file_data_dir
                or workspace_root / "data")

    features = parse_features(_features_table(raw, overrides, source), base, source)
    ensembles = parse_ensembles(table(raw.get("ensembles", {}), "ensembles", source),
                                features.tta, source)
    blends = parse_blends(table(raw.get("blends", {}), "blends", source), source)
    clash = sorted(set(ensembles) & set(blends))
    if clash:
        raise HarnessError(f"{where(source)}: {clash[0]!r} names both an ensemble and a blend; "
                           "rename one (their predictions are saved under the name)")
    config = Config(
        spec=spec,
        workspace=Workspace(workspace_root),
        data_dir=data_dir,
        features=features,
        ensembles=ensembles,
        blends=blends,
        cv=parse_cv(table(raw.get("cv", {}), "cv", source), source),
        submission=parse_submission(table(raw.get("submission", {}), "submission", source),
                                    source),
        source=source,
    )
    try:
        check_ensembles(config)  # every one: `submit --ensemble NAME` still fits them all
    except HarnessError as exc:
        raise HarnessError(f"{where(source)}: {exc}") from None
    if "ensemble" in overrides:
        try:
            check_ensembles(config, [overrides["ensemble"]])
        except HarnessError as exc:
            raise HarnessError(f"--ensemble: {exc}") from None
    return config
