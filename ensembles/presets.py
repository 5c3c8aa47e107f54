"""Built-in ensembles: the seed recipe preset and the default set for a backbone list.

A config names a preset with `preset = "seed004"` inside an `[ensembles.NAME]` table; the
table's own keys override the preset's parameters. When the config defines no ensembles,
`default_ensembles` supplies one per backbone plus the concatenation of all of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from base.errors import HarnessError
from ensembles.settings import EnsembleConfig
from features.backbones import get_backbone

SEED_BACKBONES = ("resnet50", "inception_v3", "xception")

# The seed recipe exactly: GAP features of ResNet50 + InceptionV3 + Xception concatenated,
# Dropout(0.5) -> Dense(1, sigmoid), Keras 2 "adadelta" (learning rate 1.0), 8 epochs,
# batch 128, Keras' validation_split=0.2 (so it trained on 80% of the rows), no feature
# standardisation, predictions clipped to [0.005, 0.995].
PRESETS: dict[str, EnsembleConfig] = {
    "seed004": EnsembleConfig(
        name="seed004", backbones=SEED_BACKBONES, head="dropout",
        params={"dropout": 0.5, "epochs": 8, "optimizer": "adadelta", "learning_rate": 1.0,
                "batch_size": 128, "validation_split": 0.2, "standardize": False,
                "clip": [0.005, 0.995]},
    ),
}


def resolve_preset(ensemble: EnsembleConfig) -> EnsembleConfig:
    """`ensemble` with its preset's parameters filled in (its own keys win).

    Raises:
        HarnessError: unknown preset name, naming the ensemble and the known presets.
    """
    params: dict[str, Any] = dict(ensemble.params)
    name = params.pop("preset", None)
    if name is None:
        return ensemble
    if name not in PRESETS:
        raise HarnessError(f"ensemble {ensemble.name!r}: unknown preset {name!r}; known: "
                           f"{', '.join(sorted(PRESETS))}")
    preset = PRESETS[name]
    merged = {**preset.params, **params}
    return dataclasses.replace(ensemble, params=merged,
                               backbones=ensemble.backbones or preset.backbones,
                               head=ensemble.head or preset.head)


def default_ensembles(backbones: tuple[str, ...], tta: str = "none",
                      linear: str = "logreg") -> dict[str, EnsembleConfig]:
    """One linear head (`linear`: logreg, or ridge for value targets) per backbone; with
    several backbones, also all of them concatenated with the linear head and with the
    dropout head; and `seed004` when its three backbones are all present. A `_maps` entry
    (cached maps, not features) gets the finetune head instead, alone and without TTA."""
    maps = [b for b in backbones if get_backbone(b).maps_of]
    backbones = tuple(b for b in backbones if b not in maps)
    ensembles = {f"{b}-{linear}": EnsembleConfig(f"{b}-{linear}", (b,), linear, {}, tta)
                 for b in backbones}
    if len(backbones) > 1:
        n = len(backbones)
        ensembles[f"all{n}-{linear}"] = EnsembleConfig(f"all{n}-{linear}", tuple(backbones),
                                                       linear, {}, tta)
        ensembles[f"all{n}-dropout"] = EnsembleConfig(
            f"all{n}-dropout", tuple(backbones), "dropout", {}, tta)
    if set(SEED_BACKBONES) <= set(backbones):
        ensembles["seed004"] = dataclasses.replace(PRESETS["seed004"], tta=tta)
    for b in maps:
        name = f"{get_backbone(b).maps_of}-finetune"
        ensembles[name] = EnsembleConfig(name, (b,), "finetune", {}, "none")
    return ensembles
