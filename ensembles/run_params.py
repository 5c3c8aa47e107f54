"""The parameters the run stage itself reads from an ensemble's or a blend's table.

An `[ensembles.NAME]` table mixes its head's parameters (the schema in ensembles.registry.HEADS)
with these; a `[blends.NAME]` table mixes its method's (ensembles.blend.BLEND_METHODS) with
the clip ones. Like the registries' schemas they are `Param`s, checked when the config
loads, and read here into one typed `RunOptions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from base.config import Param, check_params, non_negative_number, one_of
from ensembles.calibrate import CALIBRATIONS
from ensembles.cv import DEFAULT_CLIP_PRIOR
from ensembles.finetune_images import AUGMENTATIONS

CLIP_FORMS = "\"auto\", \"none\" or [low, high] with 0 <= low < high <= 1"
# Out-of-fold temperature scaling for every ensemble unless its table says otherwise.
DEFAULT_CALIBRATION = "none"


def clip_setting(value: Any) -> str | tuple[float, float] | None:
    """A clip setting as the run uses it ("auto", "none" or (low, high)); None when
    `value` is none of CLIP_FORMS. Shared by [submission] clip and the `clip` parameter."""
    if value in ("auto", "none"):
        return value
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            and 0 <= value[0] < value[1] <= 1):
        return (float(value[0]), float(value[1]))
    return None


ENSEMBLE_RUN_PARAMS: dict[str, Param] = {
    "clip": Param(lambda v: clip_setting(v) is not None, CLIP_FORMS),
    "clip_prior": Param(non_negative_number().test,
                        "a number >= 0 (imagined confident mistakes; 0 = none)"),
    "calibrate": one_of(CALIBRATIONS),
    # Resolved (and an unknown name refused) by ensembles.presets before anything runs.
    "preset": Param(lambda v: isinstance(v, str), "a preset name"),
    # The finetune head's input: cached maps, or images end to end (ensembles.
    # finetune_images: refused on a CPU unless allow_cpu), and that path's augmentation.
    "from": one_of(("maps", "images")),
    "augment": one_of(tuple(AUGMENTATIONS)),
    "allow_cpu": Param(lambda v: isinstance(v, bool), "true or false"),
}
BLEND_RUN_PARAMS: dict[str, Param] = {key: ENSEMBLE_RUN_PARAMS[key]
                                      for key in ("clip", "clip_prior")}


@dataclass(frozen=True)
class RunOptions:
    """What the run stage does around a head or a blend method.

    Attributes:
        clip: "auto" (bounds chosen out of fold), "none", or (low, high).
        clip_prior: Imagined confident mistakes behind "auto" bounds (cv.choose_clip).
        calibrate: A CALIBRATIONS name (blends are never calibrated: "none").
    """

    clip: str | tuple[float, float]
    clip_prior: float
    calibrate: str


def run_options(params: Mapping[str, Any], schema: Mapping[str, Param], *,
                default_clip: str | tuple[float, float], where: str) -> RunOptions:
    """The run options in `params` (keys of `schema`; other keys are the head's or the
    method's), checked against `schema`.

    Raises:
        HarnessError: a bad value, naming `where`, the key and what is accepted.
    """
    check_params(schema, {key: value for key, value in params.items() if key in schema},
                 where=where)
    return RunOptions(clip=clip_setting(params.get("clip", default_clip)),
                      clip_prior=float(params.get("clip_prior", DEFAULT_CLIP_PRIOR)),
                      calibrate=params.get("calibrate", DEFAULT_CALIBRATION))
